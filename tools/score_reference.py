"""Score a pair file with a frozen checkpoint once, for DPO (writes ref_chosen_logp / ref_rejected_logp).

    torchrun --nproc-per-node 8 tools/score_reference.py --pretrained-checkpoint /ckpt/sft \
        --model-config DIR --tokenizer-model DIR --data-path pairs.jsonl --output pairs_ref.jsonl \
        --seq-length 19800 --max-prompt-length 800 --micro-batch-size 1 [--bf16 --tensor-model-parallel-size 2 ...]

Takes the trainer's model, data and parallelism flags; --loss-type and the optimisation flags are ignored.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv: list[str] | None = None) -> int:
    import argparse

    import pretrain_redi
    from megatron_redi.training.arguments import parse_args
    from megatron_redi.training.scoring import score_pairs, write_scored

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--output", required=True, help="JSONL to write (pairs with reference log-probs)")
    known, rest = pre.parse_known_args(argv)
    if "--load" in rest:  # accept the trainer's --load as the checkpoint to score with
        rest[rest.index("--load")] = "--pretrained-checkpoint"
    cfg = parse_args([*rest, "--loss-type", "redi", "--train-iters", "1", "--global-batch-size",
                      str(10**6)])
    pretrain_redi._CFG = cfg
    scores = score_pairs(cfg, pretrain_redi.model_provider, pretrain_redi.dataset_provider)
    if scores is not None:
        n = write_scored(cfg.data_path, scores, known.output)
        print(f"[score_reference] wrote {n} scored pairs to {known.output}")
    return 0


if __name__ == "__main__":
    try:
        rc = main()
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"[rank {os.environ.get('RANK', '0')}] error: {e}", file=sys.stderr)
        sys.exit(2)
    from megatron_redi.platform.distributed import destroy

    destroy()
    sys.exit(rc)
