"""Train a Qwen2 model with SFT, REDI, SimPO or DPO on megatron-core.

    torchrun --nproc-per-node N pretrain_redi.py --loss-type redi --model-config DIR \
        --tokenizer-model DIR --data-path pairs.jsonl --global-batch-size 32 ...

Megatron-style: the four functions below are handed to the library's training loop.
"""

from __future__ import annotations

import sys
import traceback
from functools import partial

from megatron_redi.data.dataset import DataConfig, load_examples
from megatron_redi.data.tokenize import TokenizeConfig
from megatron_redi.training.arguments import TrainConfig, model_shape, parse_args

_CFG: TrainConfig | None = None


def model_provider(pre_process: bool = True, post_process: bool = True, vp_stage=None):
    """This rank's pipeline stage of the Qwen2 model described by --model-config."""
    from megatron_redi.model.config import ModelBuildConfig
    from megatron_redi.model.provider import build_model

    cfg = _CFG
    shape = model_shape(cfg)
    build = ModelBuildConfig(
        tensor_model_parallel_size=cfg.tensor_model_parallel_size,
        pipeline_model_parallel_size=cfg.pipeline_model_parallel_size,
        context_parallel_size=cfg.context_parallel_size,
        sequence_parallel=cfg.sequence_parallel,
        bf16=cfg.bf16,
        recompute_granularity=cfg.recompute_granularity,
        recompute_modules=tuple(cfg.recompute_modules) if cfg.recompute_modules else None,
        transformer_impl=cfg.transformer_impl,
        fp8_format=cfg.fp8_format,
        fp8_recipe=cfg.fp8_recipe,
        first_last_layers_bf16=cfg.first_last_layers_bf16,
        logprob_chunk_size=cfg.logprob_chunk_size,
    )
    return build_model(shape, build, seed=cfg.seed, pre_process=pre_process, post_process=post_process,
                       vp_stage=vp_stage)


def loss_func(batch, global_units: float, output_tensor):
    """Objective on per-token log-probs -> (loss to backprop, units, metric sums)."""
    import torch
    from megatron.core import parallel_state as ps

    from megatron_redi.objectives.compute import micro_batch_loss

    cp_group = ps.get_context_parallel_group() if ps.get_context_parallel_world_size() > 1 else None
    loss, metrics = micro_batch_loss(output_tensor, batch, _CFG.objective, global_units, cp_group)
    return loss, torch.tensor(batch.num_units, dtype=torch.int), metrics


def forward_step(data_iterator, model):
    """One micro-batch through this stage; the last stage returns per-token log-probs."""
    from megatron_redi.checkpointing.training import unwrap
    from megatron_redi.model.gpt import micro_batch_for_this_rank
    from megatron_redi.objectives.compute import linear_token_weights

    item = next(data_iterator)
    bare = unwrap(model)
    mb, kwargs = micro_batch_for_this_rank(bare, item.batch)
    if bare.post_process:
        bare.pending_token_weights = linear_token_weights(mb, _CFG.objective, item.global_units)
    output = model(mb.tokens, mb.position_ids, mb.segment_ids, labels=mb.labels, **kwargs)
    return output, partial(loss_func, mb, item.global_units)


def dataset_provider(cfg: TrainConfig, progress: bool = True):
    """Tokenised training examples (SFT documents or pairs) from --data-path."""
    data = DataConfig(
        data_path=cfg.data_path,
        tokenizer_model=cfg.tokenizer_model,
        paired=cfg.objective.paired,
        need_reference=cfg.objective.loss_type == "dpo",
        tokenize=TokenizeConfig(max_prompt_length=cfg.max_prompt_length, seq_length=cfg.seq_length,
                                system_prompt=cfg.system_prompt),
        cache_dir=cfg.data_cache_dir,
        workers=cfg.tokenizer_workers,
    )
    return load_examples(data, progress=progress)


def main(argv: list[str] | None = None) -> dict:
    global _CFG
    from megatron_redi.training.loop import pretrain

    _CFG = parse_args(argv)
    return pretrain(_CFG, model_provider, forward_step, dataset_provider)


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        import os

        rank = os.environ.get("RANK", "0")
        print(f"[rank {rank}] error: {e}", file=sys.stderr)
        if os.environ.get("REDI_TRACEBACK"):
            traceback.print_exc()
        sys.exit(2)
    from megatron_redi.platform.distributed import destroy

    destroy()
