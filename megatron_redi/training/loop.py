"""The training loop on megatron.core: set-up, then step, log, checkpoint until done or told to stop.

`pretrain()` receives Megatron's three callables from `pretrain_redi.py` (model provider, forward
step, dataset provider); everything else it needs is in `cfg`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
from tqdm import tqdm

from megatron_redi.checkpointing.layout import has_checkpoint
from megatron_redi.data.sampler import GlobalBatchSampler
from megatron_redi.objectives.objective import build_objective
from megatron_redi.platform.distributed import device, init_distributed
from megatron_redi.platform.gpu_features import check_fp8_request
from megatron_redi.training import checkpoint as ckpt
from megatron_redi.training.batches import GlobalBatch, GlobalBatches
from megatron_redi.training.config import TrainConfig
from megatron_redi.training.forward_step import StepInput
from megatron_redi.training.metrics import MetricAverager, MetricsLogger, reduce_metrics
from megatron_redi.training.optimizer import build_optimizer
from megatron_redi.training.setup import build_ddp_model, init_world, is_logging_rank
from megatron_redi.training.signals import ExitSignalHandler
from megatron_redi.training.throughput import ThroughputWindow


def total_iterations(cfg: TrainConfig, num_examples: int) -> int:
    """--train-iters, else ceil(--train-epochs x examples / --global-batch-size)."""
    if cfg.training.train_iters is not None:
        return cfg.training.train_iters
    return max(1, math.ceil(cfg.training.train_epochs * num_examples / cfg.data.global_batch_size))


def _start(cfg: TrainConfig, model, optimizer, scheduler) -> ckpt.TrainState:
    """Resume from --load if it holds a checkpoint, else take --pretrained-checkpoint's weights."""
    c = cfg.checkpoint
    if c.save:
        ckpt.write_hf_side_files(c.save, cfg.model)
    if c.load and has_checkpoint(c.load):
        return ckpt.load_training_checkpoint(c.load, model, optimizer, scheduler, cfg.parallel)
    if c.pretrained_checkpoint:
        ckpt.load_pretrained(c.pretrained_checkpoint, model)
        # the copied weights must reach the optimizer's fp32 master copies
        if hasattr(optimizer, "reload_model_params"):
            optimizer.reload_model_params()
    return ckpt.TrainState()


def _train_step(cfg: TrainConfig, batch: GlobalBatch, forward_step_func: Callable, model, optimizer, scheduler):
    """Forward and backward over the global batch's micro-batches, then one optimizer step.
    Returns (per-micro-batch metric sums, lr used, grad norm, update successful)."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    mbs = batch.micro_batches
    losses = get_forward_backward_func()(
        forward_step_func=forward_step_func,
        data_iterator=iter([StepInput(mb, batch.global_units) for mb in mbs]),
        model=[model],
        num_microbatches=len(mbs),
        seq_length=max(mb.tokens.shape[1] for mb in mbs) // cfg.parallel.context_parallel_size,
        micro_batch_size=1,
        forward_only=False,
    )
    lr_used = optimizer.param_groups[0]["lr"]
    ok, grad_norm, _ = optimizer.step()
    scheduler.step(increment=1)
    model.zero_grad_buffer()
    optimizer.zero_grad()
    return losses, lr_used, grad_norm, ok


def pretrain(cfg: TrainConfig, model_provider: Callable, forward_step_func: Callable,
             dataset_provider: Callable) -> dict:
    """Run training; returns the last logged record (on the logging rank; {} elsewhere).

    model_provider(pre_process, post_process) -> this rank's model stage;
    dataset_provider(progress) -> (examples, statistics);
    forward_step_func: as `training.forward_step.make_forward_step` makes it."""
    from megatron.core import parallel_state as ps

    # every refusal that needs no data or model comes first, on every rank
    init_distributed()
    cfg.validate(dist.get_world_size())
    check_fp8_request(cfg.model.fp8_format, cfg.model.transformer_impl)
    dp = init_world(cfg.parallel, cfg.training.seed)
    shape = cfg.model.shape()
    shape.check_parallel(cfg.parallel.tensor_model_parallel_size, cfg.parallel.pipeline_model_parallel_size)
    objective = build_objective(cfg.objective)
    log_rank = is_logging_rank()
    examples, data_stats = dataset_provider(progress=log_rank and not cfg.logging.no_progress)
    if len(examples) < cfg.data.global_batch_size and cfg.training.train_iters is None:
        raise ValueError(f"--data-path holds {len(examples)} examples, fewer than --global-batch-size "
                         f"{cfg.data.global_batch_size}")

    model = build_ddp_model(model_provider, cfg.parallel)
    total_iters = total_iterations(cfg, len(examples))
    optimizer, scheduler = build_optimizer(cfg.optimizer, [model], total_iters, bf16=cfg.model.bf16,
                                           use_distributed_optimizer=cfg.parallel.use_distributed_optimizer)
    state = _start(cfg, model, optimizer, scheduler)

    sampler = GlobalBatchSampler(len(examples), cfg.data.global_batch_size, ps.get_data_parallel_rank(), dp,
                                 cfg.training.seed)
    batches = GlobalBatches(examples, sampler, cfg.data, cfg.parallel, objective)
    logger = MetricsLogger(cfg.logging.metrics_file, cfg.logging.tensorboard_dir, enabled=log_rank)
    signals = ExitSignalHandler() if cfg.training.exit_signal_handler else None
    dev = device()
    window = ThroughputWindow(shape, dist.get_world_size(), dev)
    averager = MetricAverager()
    bar = tqdm(total=total_iters, initial=state.iteration, desc=cfg.objective.loss_type,
               disable=not log_rank or cfg.logging.no_progress, dynamic_ncols=True, file=sys.stdout)
    if log_rank:
        p = cfg.parallel
        tqdm.write(f"[megatron-redi] {len(examples)} examples ({data_stats}), {total_iters} iterations, "
                   f"world {dist.get_world_size()} = TP{p.tensor_model_parallel_size} x "
                   f"PP{p.pipeline_model_parallel_size} x CP{p.context_parallel_size} x DP{dp}")
    last: dict = {}
    model.train()
    while state.iteration < total_iters:
        t0 = time.perf_counter()
        batch = batches.at(state.consumed_samples)
        losses, lr_used, grad_norm, ok = _train_step(cfg, batch, forward_step_func, model, optimizer, scheduler)
        state.iteration += 1
        state.consumed_samples += cfg.data.global_batch_size
        if dev.type == "cuda":
            torch.cuda.synchronize()
        window.add(time.perf_counter() - t0, batch.tokens, batch.doc_lengths, batch.packing_efficiency)
        bar.update(1)

        averager.add(reduce_metrics(losses, dev))
        if state.iteration % cfg.logging.log_interval == 0 or state.iteration == total_iters:
            rec = {"iteration": state.iteration, "consumed_samples": state.consumed_samples,
                   "epoch": round(sampler.epoch_of(state.consumed_samples), 4), "lr": lr_used,
                   "grad_norm": float(grad_norm) if grad_norm is not None else None,
                   "update_successful": bool(ok), **averager.mean(), **window.report(),
                   "micro_batches": len(batch.micro_batches)}
            logger.log(rec, tqdm.write)
            last = rec
        if _checkpoint_and_should_stop(cfg, state, total_iters, signals, model, optimizer, scheduler, log_rank):
            break
    bar.close()
    logger.close()
    if signals:
        signals.restore()
    return last


def _checkpoint_and_should_stop(cfg: TrainConfig, state: ckpt.TrainState, total_iters: int, signals,
                                model, optimizer, scheduler, log_rank: bool) -> bool:
    """Save at --save-interval, on a stop request (signal, --exit-interval) and at the end; True to stop."""
    c = cfg.checkpoint
    save_now = c.save and c.save_interval and state.iteration % c.save_interval == 0
    stop = signals is not None and signals.any_rank_received()
    stop = stop or bool(cfg.training.exit_interval and state.iteration % cfg.training.exit_interval == 0)
    if c.save and (save_now or stop or state.iteration == total_iters):
        ckpt.save_training_checkpoint(c, model, optimizer, scheduler, state, cfg.parallel,
                                      {"loss_type": cfg.objective.loss_type, "seed": cfg.training.seed})
    if stop and log_rank:
        tqdm.write(f"[megatron-redi] stopping at iteration {state.iteration}{' (checkpoint saved)' if c.save else ''}")
    return stop
