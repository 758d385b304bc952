"""Train a Qwen2 model with SFT, REDI, SimPO or DPO on megatron-core.

    torchrun --nproc-per-node N pretrain_redi.py --loss-type redi --model-config DIR \
        --tokenizer-model DIR --data-path pairs.jsonl --global-batch-size 32 ...

Megatron-style: a model provider, a forward step and a dataset provider, bound to the parsed
config, are handed to the library's training loop. No state lives in this module.
"""

from __future__ import annotations

from functools import partial


def main(argv: list[str] | None = None) -> dict:
    from megatron_redi.objectives.objective import build_objective
    from megatron_redi.training.arguments import parse_args
    from megatron_redi.training.forward_step import make_forward_step
    from megatron_redi.training.loop import pretrain
    from megatron_redi.training.setup import dataset_provider, model_provider

    cfg = parse_args(argv)
    return pretrain(
        cfg,
        model_provider=partial(model_provider, cfg.model, cfg.parallel, cfg.training.seed),
        forward_step_func=make_forward_step(build_objective(cfg.objective)),
        dataset_provider=partial(dataset_provider, cfg.data, cfg.model.tokenizer_model, cfg.objective),
    )


if __name__ == "__main__":
    from megatron_redi.platform.distributed import run_main

    run_main(main)
