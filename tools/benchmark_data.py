"""Tokenise + pack throughput and peak memory of the training data path. Not a test.

    python tools/benchmark_data.py --traces 20000 --steps 140 --workers 2 [--tokenizer qwen25|tiny]

Writes synthetic SFT traces (about 4k tokens each with the bundled tiny tokenizer at --steps 140), then
in a fresh process: tokenise into the on-disk cache with worker processes, open the memory-mapped
dataset and pack every unit into first-fit-decreasing micro-batches. Reports tokens/s for each phase
and the peak RSS of the main process and of the largest worker. `--tokenizer qwen25` (the default) builds the
real Qwen2.5 tokenizer from dashscope's published BPE ranks (`megatron_redi.data.qwen_tokenizer`;
`pip install --no-deps dashscope`); `tiny` uses the bundled 384-token test tokenizer.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _write_traces(path: Path, n: int, steps: int) -> None:
    from megatron_redi.data.synthetic import iter_synthetic_problems

    with open(path, "w") as f:
        for p in iter_synthetic_problems(n, seed=7, max_steps=steps):
            f.write(json.dumps({"messages": [{"role": "user", "content": p["problem"]},
                                             {"role": "assistant", "content": p["correct"]}]}) + "\n")


def _child(data: str, cache: str, workers: int, seq: int, tokenizer: str) -> dict:
    from megatron_redi.data.dataset import DataConfig, build_dataset, make_packed_micro_batches
    from megatron_redi.data.tokenize import TokenizeConfig

    cfg = DataConfig([data], tokenizer, paired=False,
                     tokenize=TokenizeConfig(seq_length=seq), cache_dir=cache, workers=workers, chunk_rows=64)
    t0 = time.perf_counter()
    ds = build_dataset(cfg, progress=False)
    t_tok = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_mb, real = 0, 0
    for s in range(0, len(ds), 256):  # pack in global-batch-sized groups, as training does
        exs = [ds[i] for i in range(s, min(s + 256, len(ds)))]
        mbs, _ = make_packed_micro_batches(exs, seq, 1)
        n_mb += len(mbs)
        real += sum(mb.num_real_tokens for mb in mbs)
    t_pack = time.perf_counter() - t0
    tokens = ds.stats["tokens"]
    return {"traces": len(ds), "tokens": tokens, "mean_tokens_per_trace": tokens / len(ds),
            "tokenize_s": t_tok, "tokenize_tokens_per_s": tokens / t_tok, "pack_s": t_pack,
            "pack_tokens_per_s": real / t_pack, "end_to_end_tokens_per_s": tokens / (t_tok + t_pack),
            "packing_efficiency": real / (n_mb * seq), "micro_batches": n_mb,
            "peak_rss_main_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "peak_rss_worker_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", type=int, default=20000)
    ap.add_argument("--steps", type=int, default=140, help="reasoning steps per synthetic trace (length)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seq-length", type=int, default=16384)
    ap.add_argument("--tokenizer", choices=["qwen25", "tiny"], default="qwen25")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(_child(a.child[0], a.child[1], a.workers, a.seq_length, a.child[2])))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = str(ROOT / "megatron_redi/assets/tiny_qwen2")
        if a.tokenizer == "qwen25":
            from megatron_redi.data.qwen_tokenizer import build_qwen25_tokenizer

            tok_dir = str(build_qwen25_tokenizer(Path(tmp) / "qwen25"))
        data = Path(tmp) / "traces.jsonl"
        _write_traces(data, a.traces, a.steps)
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
        out = subprocess.run([sys.executable, __file__, "--child", str(data), str(Path(tmp) / "cache"), tok_dir,
                              "--workers", str(a.workers), "--seq-length", str(a.seq_length)],
                             capture_output=True, text=True, env=env)
        if out.returncode:
            sys.exit(out.stderr)
        r = json.loads(out.stdout.strip().splitlines()[-1])
    r["input_mb"] = None
    print(json.dumps(r, indent=1))
    print(f"\n{r['traces']} traces, {r['tokens'] / 1e6:.1f}M tokens ({r['mean_tokens_per_trace']:.0f}/trace), "
          f"{a.workers} workers, {a.tokenizer} tokenizer")
    print(f"tokenize {r['tokenize_tokens_per_s'] / 1e6:.2f}M tok/s | pack {r['pack_tokens_per_s'] / 1e6:.2f}M tok/s"
          f" | end-to-end {r['end_to_end_tokens_per_s'] / 1e6:.2f}M tok/s | packing efficiency "
          f"{r['packing_efficiency']:.1%} | peak RSS main {r['peak_rss_main_gb']:.2f} GB, "
          f"worker {r['peak_rss_worker_gb']:.2f} GB")


if __name__ == "__main__":
    main()
