#!/usr/bin/env python
"""Measure the dataset builder's throughput and peak memory on synthetic raw files of several sizes.

    python tools/benchmark_builder.py --rows 10000 50000 [--format jsonl] [--gen-chars 8000] \\
        [--workdir /tmp/redi_bench] [-- extra builder flags, e.g. --decontaminate]

For each size a raw file in the OpenR1-Math-Raw schema is generated (not timed), then
`tools/build_redi_data.py` runs in a child process. Peak memory is the child's own `ru_maxrss` (from
`os.wait4`, so earlier runs do not leak into it) and, with psutil, the peak summed RSS of the child and
its worker processes sampled every 50 ms. A bounded-memory builder shows the same peak at every size.
CPU seconds (user + sys of the child and its workers) are reported next to wall time because on a shared
machine wall time mostly measures the other jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _sample_tree_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    try:
        import psutil
    except ImportError:
        return
    try:
        proc = psutil.Process(pid)
    except psutil.Error:
        return
    while not stop.is_set():
        total = 0
        try:
            for p in [proc, *proc.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            break
        peak[0] = max(peak[0], total)
        stop.wait(0.05)


def run_builder(raw: Path, out: Path, extra: list[str]) -> dict:
    """Run the CLI in a child process; wall time, the child's max RSS and the sampled process-tree peak."""
    cmd = [
        sys.executable,
        str(ROOT / "tools" / "build_redi_data.py"),
        "--input",
        str(raw),
        "--output-dir",
        str(out),
        "--no-progress",
        *extra,
    ]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=env)
    stop, peak = threading.Event(), [0]
    sampler = threading.Thread(target=_sample_tree_rss, args=(proc.pid, stop, peak), daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"builder failed with exit code {proc.returncode}: {' '.join(cmd)}")
    report = json.loads((out / "report.json").read_text())
    return {
        "wall_s": round(wall, 2),
        "build_s": report["timing"]["seconds"],
        "rows_read": report["counts"][0]["remaining"],
        "sft_rows": report["sft_rows"],
        "pair_rows": report["pair_rows"],
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),  # stable where other jobs share the cores
        "load_avg_1m": round(os.getloadavg()[0], 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "peak_tree_rss_mb": round(peak[0] / 2**20, 1) if peak[0] else None,
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[10000, 50000])
    p.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
    p.add_argument("--gen-chars", type=int, default=8000, help="mean characters per generation")
    p.add_argument("--max-generations", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="/tmp/redi_builder_bench")
    p.add_argument("--keep", action="store_true", help="keep (and reuse) the generated raw files")
    p.add_argument("--output", default=None, help="JSON file for the results (default: WORKDIR/results.json)")
    args = p.parse_args(argv)

    from megatron_redi.prep.raw_synthetic import RawSyntheticConfig, write_raw

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.rows:
        raw = work / f"raw_{n}_c{args.gen_chars}_g{args.max_generations}_s{args.seed}.{args.format}"
        t0 = time.perf_counter()
        cfg = RawSyntheticConfig(
            n=n, seed=args.seed, gen_chars=args.gen_chars, max_generations=args.max_generations
        )
        if not (args.keep and raw.exists()):  # with --keep, a file from an earlier run is reused
            write_raw(raw, cfg)
        gen_s = time.perf_counter() - t0
        res = {
            "rows": n,
            "format": args.format,
            "input_mb": round(raw.stat().st_size / 2**20, 1),
            "generate_s": round(gen_s, 1),
            "builder_flags": extra,
        }
        res.update(run_builder(raw, work / f"out_{n}", extra))
        res["rows_per_s"] = round(res["rows_read"] / res["build_s"], 1)
        res["rows_per_cpu_s"] = round(res["rows_read"] / res["cpu_s"], 1)
        res["input_mb_per_s"] = round(res["input_mb"] / res["build_s"], 1)
        results.append(res)
        print(json.dumps(res), flush=True)
        if not args.keep:
            raw.unlink()
    out = Path(args.output) if args.output else work / "results.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    cols = [
        "rows",
        "input_mb",
        "build_s",
        "rows_per_s",
        "input_mb_per_s",
        "wall_s",
        "cpu_s",
        "rows_per_cpu_s",
        "load_avg_1m",
        "peak_rss_mb",
        "peak_tree_rss_mb",
        "sft_rows",
        "pair_rows",
    ]
    print()
    print("| " + " | ".join(cols) + " |")
    print("|" + "---:|" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
