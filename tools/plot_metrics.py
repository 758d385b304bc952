"""Print a table of training metrics and save a PNG of the curves.

    python tools/plot_metrics.py runs/x/sft.jsonl runs/x/redi.jsonl --output runs/x/curves.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from megatron_redi.training.curves import plot, read_metrics, table


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("metrics", nargs="+", help="metrics JSONL files written by --metrics-file")
    p.add_argument("--output", default=None, help="PNG path (default: next to the first file)")
    a = p.parse_args(argv)
    runs = {}
    for f in a.metrics:
        recs = read_metrics(f)
        runs[Path(f).stem] = recs
        print(f"\n== {f}\n{table(recs)}")
    out = plot(runs, a.output or Path(a.metrics[0]).with_name("curves.png"))
    print(f"\ncurves: {out}")


if __name__ == "__main__":
    main()
