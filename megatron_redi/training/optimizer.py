"""megatron.core optimizer (AdamW, optionally distributed) and the warmup-then-decay LR schedule."""

from __future__ import annotations

import torch

from megatron_redi.platform.mcore_optimizer import inner_torch_optimizers
from megatron_redi.training.config import OptimizerArgs


def use_fused_adam(optimizer) -> None:
    """Switch megatron's torch AdamW fallback (no TE/apex) from foreach to the fused kernel: one pass
    over params, grads and both moments instead of several; the foreach step was a tenth of a step's
    GPU time at 1.5B shape. Same update up to rounding."""
    for opt in inner_torch_optimizers(optimizer):
        if not isinstance(opt, torch.optim.AdamW | torch.optim.Adam):
            continue  # TE/apex FusedAdam already is one kernel
        for group in opt.param_groups:
            group["fused"], group["foreach"] = True, False
        opt.defaults.update(fused=True, foreach=False)


def build_optimizer(cfg: OptimizerArgs, model_chunks: list, total_iters: int, *, bf16: bool = False,
                    use_distributed_optimizer: bool = False, fused_adam: bool | None = None,
                    override_scheduler: bool = False, use_checkpoint_scheduler: bool = False):
    """megatron's optimizer over `model_chunks` and its LR scheduler for a run of `total_iters`.

    fused_adam None: fused on CUDA only. torch's CPU kernel rounds its vectorised body and scalar tail
    differently, so a parameter's update would depend on how TP/DP split it, and the layouts would
    stop matching one process bit for bit (1-ulp drift, seen as 1e-5 in grad norms after a step)."""
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
        bf16=bf16,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        use_distributed_optimizer=use_distributed_optimizer,
    )
    optimizer = get_megatron_optimizer(ocfg, model_chunks)
    if fused_adam or (fused_adam is None and torch.cuda.is_available()):
        use_fused_adam(optimizer)
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
        override_opt_param_scheduler=override_scheduler,
        use_checkpoint_opt_param_scheduler=use_checkpoint_scheduler,
    )
    return optimizer, scheduler
