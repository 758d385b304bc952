"""Score a pair file with a frozen checkpoint once, for DPO (writes ref_chosen_logp / ref_rejected_logp).

    torchrun --nproc-per-node 8 tools/score_reference.py --load /ckpt/sft \
        --model-config DIR --tokenizer-model DIR --data-path pairs.jsonl --output pairs_ref.jsonl \
        --seq-length 19800 --max-prompt-length 800 --micro-batch-size 1 [--bf16 --tensor-model-parallel-size 2 ...]

Takes the trainer's model, data and parallelism flags (`--help` lists them), so pairs are scored with
the tokenisation and truncation training uses.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_redi.training.arguments import build_score_parser  # noqa: E402


def build_parser():
    return build_score_parser()


def main(argv: list[str] | None = None) -> int:
    from megatron_redi.training.arguments import parse_score_args
    from megatron_redi.training.scoring import score_pairs, write_scored

    cfg = parse_score_args(argv)
    scores = score_pairs(cfg)
    if scores is not None:
        n = write_scored(cfg.data.data_path, scores, cfg.output)
        print(f"[score_reference] wrote {n} scored pairs to {cfg.output}")
    return 0


if __name__ == "__main__":
    from megatron_redi.platform.distributed import run_main

    run_main(main)
