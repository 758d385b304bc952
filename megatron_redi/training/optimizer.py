"""megatron.core optimizer (AdamW, optionally distributed) and the warmup-then-decay LR schedule."""

from __future__ import annotations

import torch

from megatron_redi.training.arguments import TrainConfig


def build_optimizer(cfg: TrainConfig, model_chunks: list, total_iters: int):
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    ocfg = OptimizerConfig(
        optimizer="adam",  # torch.optim.AdamW (decoupled weight decay) without TE/apex
        lr=cfg.lr,
        min_lr=cfg.min_lr,
        weight_decay=cfg.weight_decay,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        adam_eps=cfg.adam_eps,
        clip_grad=cfg.clip_grad,
        bf16=cfg.bf16,
        params_dtype=torch.bfloat16 if cfg.bf16 else torch.float32,
        use_distributed_optimizer=cfg.use_distributed_optimizer,
    )
    optimizer = get_megatron_optimizer(ocfg, model_chunks)
    warmup = int(round(cfg.lr_warmup_fraction * total_iters))
    scheduler = OptimizerParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=cfg.lr,
        min_lr=cfg.min_lr,
        lr_warmup_steps=warmup,
        lr_decay_steps=max(total_iters, warmup + 1),
        lr_decay_style=cfg.lr_decay_style,
        start_wd=cfg.weight_decay,
        end_wd=cfg.weight_decay,
        wd_incr_steps=max(total_iters, 1),
        wd_incr_style="constant",
    )
    return optimizer, scheduler
