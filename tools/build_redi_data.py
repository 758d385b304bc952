#!/usr/bin/env python
"""Build the REDI training sets from raw teacher generations (OpenR1-Math-Raw schema).

    python tools/build_redi_data.py --input RAW --output-dir OUT [--tokenizer-model DIR]

Writes OUT/sft.jsonl (first correct generation per problem), OUT/pairs.jsonl (first correct vs first
incorrect), OUT/report.json and OUT/report.md (rows left after every rule, next to the paper's 77,629 and
53,175). The defaults are the paper's rules; every rule has a flag. The logic lives in
`megatron_redi.prep` (orchestration in `megatron_redi.prep.builder`); this file only parses arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _optional_int(text: str) -> int | None:
    value = int(text)
    return value if value > 0 else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("input and output")
    io.add_argument(
        "--input",
        nargs="+",
        required=True,
        help="raw files (.jsonl, .parquet), folders of them, or a datasets save_to_disk folder",
    )
    io.add_argument("--output-dir", required=True)
    io.add_argument("--split", default="train", help="split of a save_to_disk DatasetDict (default: train)")
    rules = p.add_argument_group("rules (defaults: the paper's)")
    rules.add_argument(
        "--valid-values",
        nargs="*",
        default=["yes"],
        help="accepted problem_is_valid values; none given = keep all (default: yes)",
    )
    rules.add_argument(
        "--exclude-sources",
        nargs="*",
        default=["cn_k12"],
        help="sources to drop; none given = keep all (default: cn_k12)",
    )
    rules.add_argument(
        "--no-require-label-lengths",
        action="store_true",
        help="keep rows whose label lists do not match the generations (missing labels = false)",
    )
    rules.add_argument(
        "--allow-empty-generations",
        action="store_true",
        help="keep rows with an empty generation instead of skipping them as malformed",
    )
    rules.add_argument(
        "--correct-rule",
        choices=["both", "llama", "math_verify", "either"],
        default="both",
        help="which stored labels make a generation correct (default: both)",
    )
    length = p.add_argument_group("length filter (active with --tokenizer-model)")
    length.add_argument("--tokenizer-model", default=None, help="folder with a tokenizer (and chat template)")
    length.add_argument(
        "--max-prompt-tokens", type=_optional_int, default=800, help="0 = no bound (default: 800)"
    )
    length.add_argument(
        "--max-response-tokens", type=_optional_int, default=19000, help="0 = no bound (default: 19000)"
    )
    length.add_argument(
        "--length-filter-sft",
        action="store_true",
        help="apply the length filter to the SFT set too (the paper filters pairs only)",
    )
    rv = p.add_argument_group("regrading with math-verify")
    rv.add_argument("--reverify", action="store_true", help="regrade every generation against `answer`")
    rv.add_argument(
        "--reverify-combine",
        choices=["replace", "and", "or"],
        default="replace",
        help="use the regrades instead of the stored labels, or AND/OR them (default: replace)",
    )
    rv.add_argument("--reverify-workers", type=int, default=0, help="worker processes (default: one per CPU)")
    rv.add_argument(
        "--reverify-timeout", type=float, default=10.0, help="seconds per generation (default: 10)"
    )
    dc = p.add_argument_group("decontamination")
    dc.add_argument(
        "--decontaminate",
        action="store_true",
        help="drop problems sharing an n-gram with MATH-500, AIME24, AMC, Minerva, OlympiadBench",
    )
    dc.add_argument(
        "--benchmarks", nargs="+", default=None, help="JSONL files with `problem` (default: bundled)"
    )
    dc.add_argument("--ngram-size", type=int, default=8)
    run = p.add_argument_group("run")
    run.add_argument("--seed", type=int, default=42, help="seed of the output order (default: 42)")
    run.add_argument("--no-shuffle", action="store_true", help="keep the input order")
    run.add_argument("--strict", action="store_true", help="stop at the first malformed row")
    run.add_argument("--batch-size", type=int, default=256)
    run.add_argument("--limit", type=int, default=None, help="read at most this many rows")
    run.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace):
    from megatron_redi.prep.config import BuilderConfig

    return BuilderConfig(
        input=args.input,
        output_dir=args.output_dir,
        split=args.split,
        valid_values=tuple(args.valid_values),
        exclude_sources=tuple(args.exclude_sources),
        require_label_lengths=not args.no_require_label_lengths,
        allow_empty_generations=args.allow_empty_generations,
        correct_rule=args.correct_rule,
        tokenizer_model=args.tokenizer_model,
        max_prompt_tokens=args.max_prompt_tokens,
        max_response_tokens=args.max_response_tokens,
        length_filter_sft=args.length_filter_sft,
        reverify=args.reverify,
        reverify_combine=args.reverify_combine,
        reverify_workers=args.reverify_workers,
        reverify_timeout=args.reverify_timeout,
        decontaminate=args.decontaminate,
        benchmarks=args.benchmarks,
        ngram_size=args.ngram_size,
        seed=args.seed,
        shuffle=not args.no_shuffle,
        strict=args.strict,
        batch_size=args.batch_size,
        limit=args.limit,
        progress=not args.no_progress,
    )


def main(argv: list[str] | None = None) -> int:
    """0: rows written; 2: --strict stopped at a malformed row; 3: nothing written (the reasons on stderr)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from megatron_redi.data.errors import DataError
    from megatron_redi.prep.builder import build
    from megatron_redi.prep.report import nothing_written, summary_lines

    args = parse_args(argv)
    try:
        report = build(config_from_args(args))
    except DataError as e:  # --strict: the first malformed row, named by file and row
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(report)))
    print(f"wrote {Path(args.output_dir) / 'sft.jsonl'}, pairs.jsonl, report.json, report.md")
    empty = nothing_written(report)
    if empty:
        print(f"error: {empty}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
