#!/usr/bin/env python
"""Throughput numbers for the evaluation tool.

1. Grading: samples/s of the process pool on MATH-500 x 16 synthetic responses (8,000 by default),
   for the math-verify grader, the rllm-style grader and both together (``--grader-audit``).
   Responses are ~4k characters of reasoning-like text with an intermediate box, then one of: the
   gold answer boxed, an equivalent rewrite, another problem's answer, no box (truncated).
2. Generation: tokens/s of the transformers backend on CPU for the tiny random Qwen2 model
   (``megatron_redi/assets/tiny_qwen2``), on real MATH-500 prompts.

    python tools/benchmark_grading.py --cores 2 --workers 2

``--cores`` pins this process (and the grading workers it starts) to the first N CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_redi.evaluation import benchmarks  # noqa: E402
from megatron_redi.grading.graders import GradeRequest  # noqa: E402
from megatron_redi.grading.pool import GradingPool  # noqa: E402

TINY = Path(__file__).resolve().parents[1] / "megatron_redi" / "assets" / "tiny_qwen2"
FILLER = (
    "We first rewrite the condition as $x^2 - 5x + 6 = 0$, so $(x-2)(x-3) = 0$. "
    "Checking each case, the constraint $\\frac{a}{b} + \\sqrt{c} \\le 10$ still holds, and "
    "summing over all $k$ from $1$ to $n$ gives $\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}$. "
)


def synthetic_responses(problems, samples: int) -> list[GradeRequest]:
    reqs = []
    body = FILLER * 16  # ~4k characters
    for i, p in enumerate(problems):
        gold = p.answers[0]
        other = problems[(i + 1) % len(problems)].answers[0]
        for j in range(samples):
            kind = j % 4
            head = f"<think>\n{body}An intermediate value is $\\boxed{{17}}$.\n</think>\n"
            if kind == 0:
                text = head + f"The final answer is $\\boxed{{{gold}}}$."
            elif kind == 1:
                rewrite = gold.replace("\\frac", "\\dfrac").replace(" ", "")
                text = head + f"So we get \\boxed{{{rewrite}}}."
            elif kind == 2:
                text = head + f"Therefore the answer is \\boxed{{{other}}}."
            else:
                text = head[: len(head) // 2]  # cut off mid-thought: no final box
            reqs.append(GradeRequest(text, p.answers, p.list_mode))
    return reqs


def _cpu_seconds(pids: list[int]) -> float:
    """utime + stime of live processes (the grading workers), from /proc."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def bench_grading(workers: int, problems: int, samples: int, timeout_s: float) -> dict:
    bench = benchmarks.load(benchmarks.resolve("math500"))
    base = synthetic_responses(bench.problems[:problems], samples)
    out = {"samples": len(base), "workers": workers, "timeout_s": timeout_s}
    t = time.perf_counter()
    pool = GradingPool(workers)
    pool.grade(base[:workers or 1], timeout_s)  # start (and warm) the workers
    out["pool_start_s"] = round(time.perf_counter() - t, 3)
    try:
        for name, graders in (("math_verify", ("math_verify",)), ("rllm", ("rllm",)),
                              ("audit_both", ("math_verify", "rllm"))):
            reqs = [GradeRequest(r.response, r.answers, r.list_mode, graders) for r in base]
            pids = [w.proc.pid for w in pool._procs]
            cpu0 = _cpu_seconds(pids)
            t = time.perf_counter()
            res = pool.grade(reqs, timeout_s)
            dt = time.perf_counter() - t
            cpu = _cpu_seconds(pids) - cpu0
            out[name] = {
                "seconds": round(dt, 3),
                "samples_per_s": round(len(reqs) / dt, 1),
                "worker_cpu_seconds": round(cpu, 2),
                "samples_per_cpu_second": round(len(reqs) / cpu, 1) if cpu else None,
                "accuracy": round(sum(r.verdicts[graders[0]].correct for r in res) / len(res), 4),
                "timeouts": sum(r.timed_out for r in res),
            }
    finally:
        pool.close()
    return out


def bench_hf(prompts: int, n: int, max_tokens: int, batch_size: int, threads: int | None = None) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from megatron_redi.evaluation.backends import GenRequest, HFBackend, load_tokenizer, stop_token_ids
    from megatron_redi.evaluation.config import BackendConfig, SamplingConfig
    from megatron_redi.evaluation.prompts import PromptConfig, render

    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(Qwen2Config.from_pretrained(TINY))
        model.save_pretrained(tmp)
        tok = load_tokenizer(str(TINY))
        tok.save_pretrained(tmp)
        tok = load_tokenizer(tmp)
        backend = HFBackend(tmp, tok, stop_token_ids(tok, tmp), BackendConfig(batch_size=batch_size,
                                                                             device="cpu"))
        problems = benchmarks.load(benchmarks.resolve("math500")).problems[:prompts]
        reqs = [GenRequest(tuple(tok(render(tok, p.problem, PromptConfig()), add_special_tokens=False)
                                 ["input_ids"]), seed=i) for i, p in enumerate(problems)]
        sampling = SamplingConfig(n=n, max_tokens=max_tokens)
        backend.generate(reqs[:1], SamplingConfig(n=1, max_tokens=4))  # warm-up
        t = time.perf_counter()
        gens = backend.generate(reqs, sampling)
        dt = time.perf_counter() - t
    tokens = sum(g.num_tokens for per in gens for g in per)
    return {"prompts": prompts, "n": n, "max_tokens": max_tokens, "batch_size": batch_size,
            "mean_prompt_tokens": round(sum(len(r.prompt_ids) for r in reqs) / len(reqs), 1),
            "generated_tokens": tokens, "seconds": round(dt, 3), "tokens_per_s": round(tokens / dt, 1),
            "torch_threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cores", type=int, help="pin to the first N CPUs")
    ap.add_argument("--workers", type=int, default=2, help="grading processes")
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--hf-prompts", type=int, default=8)
    ap.add_argument("--hf-n", type=int, default=4)
    ap.add_argument("--hf-max-tokens", type=int, default=128)
    ap.add_argument("--hf-batch-size", type=int, default=16)
    ap.add_argument("--hf-threads", default="0,1", help="torch threads per HF run (0: torch's default)")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--output", help="also write the results as JSON here")
    a = ap.parse_args(argv)
    if a.cores:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: a.cores]))
    results = {"cpus": sorted(os.sched_getaffinity(0)), "loadavg_before": os.getloadavg(),
               "grading": bench_grading(a.workers, a.problems, a.samples, a.timeout)}
    if not a.skip_hf:
        results["hf_generation_cpu"] = [
            bench_hf(a.hf_prompts, a.hf_n, a.hf_max_tokens, a.hf_batch_size, int(t) or None)
            for t in a.hf_threads.split(",")]
    results["loadavg_after"] = os.getloadavg()
    text = json.dumps(results, indent=2)
    print(text)
    if a.output:
        Path(a.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
