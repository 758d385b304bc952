"""Print a table of training metrics and save a PNG of the curves.

    python tools/plot_metrics.py runs/x/sft.jsonl runs/x/redi.jsonl --stages --output runs/x/curves.png
    python tools/plot_metrics.py runs/redi.jsonl runs/redi_sym.jsonl     # compare runs on one axis

--stages: the files are consecutive stages of one model (SFT, then REDI) on one time axis, each
loss on its own scale. Without it, the runs are overlaid for comparison.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_redi.training.curves import plot, read_metrics, table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("metrics", nargs="+", help="metrics JSONL files written by --metrics-file")
    p.add_argument("--output", default=None, help="PNG path (default: curves.png next to the first file)")
    p.add_argument("--stages", action="store_true", help="the files are consecutive stages: one time axis")
    a = p.parse_args(argv)
    try:
        runs = {Path(f).stem: read_metrics(f) for f in a.metrics}
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for f, recs in zip(a.metrics, runs.values()):
        print(f"\n== {f}\n{table(recs)}")
    out = Path(a.output or Path(a.metrics[0]).with_name("curves.png"))
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        print(f"error: --output {out}: give a .png, .pdf or .svg path", file=sys.stderr)
        return 2
    existed = out.exists()
    plot(runs, out, stages=a.stages)
    print(f"\ncurves: {out}" + (" (replaced the previous plot)" if existed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
