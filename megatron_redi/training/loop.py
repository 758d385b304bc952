"""The training loop on megatron.core: set-up, then step, log, checkpoint until done or told to stop.

`pretrain()` receives Megatron's three callables from `pretrain_redi.py` (model provider, forward
step, dataset provider); everything else it needs is in `cfg`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from megatron_redi.checkpointing.layout import has_checkpoint, iter_dir
from megatron_redi.data.sampler import GlobalBatchSampler
from megatron_redi.model.vocab import check_vocab_fits
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


def run_settings(cfg: TrainConfig, data_stats: dict, num_examples: int, total_iters: int) -> dict:
    """What defines a run, recorded in every checkpoint and checked on --load: the data (bytes and
    example count), the tokenizer, the objective, the global batch, the seed, the sequence rules, the
    optimizer and its schedule. Layout, micro-batch size and packing may change (the numbers don't)."""
    d, o = cfg.data, cfg.optimizer
    return {
        "data_sha": data_stats["data_sha"], "num_examples": num_examples,
        "tokenizer_sha": data_stats["tokenizer_sha"],
        **{k: v for k, v in asdict(cfg.objective).items()},
        "global_batch_size": d.global_batch_size, "seed": cfg.training.seed, "seq_length": d.seq_length,
        "max_prompt_length": d.max_prompt_length, "system_prompt": d.system_prompt,
        "truncate_long_examples": d.truncate_long_examples, "min_completion_tokens": d.min_completion_tokens,
        "keep_identical_pairs": d.keep_identical_pairs,
        "train_on_all_assistant_turns": d.train_on_all_assistant_turns,
        "lr": o.lr, "min_lr": o.min_lr, "lr_warmup_fraction": o.lr_warmup_fraction,
        "lr_decay_style": o.lr_decay_style, "weight_decay": o.weight_decay, "total_iters": total_iters,
        "adam_beta1": o.adam_beta1, "adam_beta2": o.adam_beta2, "adam_eps": o.adam_eps, "clip_grad": o.clip_grad,
    }


def _start(cfg: TrainConfig, model, optimizer, scheduler, say: Callable[[str], None],
           settings: dict) -> ckpt.TrainState:
    """Resume from --load if it holds a checkpoint, else take --pretrained-checkpoint's weights, else the
    seeded initialisation; says which in one line."""
    c = cfg.checkpoint
    if c.save:
        ckpt.write_hf_side_files(c.save, cfg.model)
    if c.load and has_checkpoint(c.load):
        state = ckpt.load_training_checkpoint(
            c.load, model, optimizer, scheduler, cfg.parallel, say, run_settings=settings,
            overrides=set(c.override_checkpoint_settings),
            schedule_flag=c.override_opt_param_scheduler or c.use_checkpoint_opt_param_scheduler)
        say(f"[megatron-redi] resumed from {iter_dir(Path(c.load), state.iteration)} at iteration "
            f"{state.iteration} ({state.consumed_samples} samples consumed)")
        return state
    if c.load:
        say(f"[megatron-redi] --load {c.load} holds no checkpoint yet: starting a new run")
    if c.pretrained_checkpoint:
        ckpt.load_pretrained(c.pretrained_checkpoint, model, say)
        # the copied weights must reach the optimizer's fp32 master copies
        if hasattr(optimizer, "reload_model_params"):
            optimizer.reload_model_params()
        say(f"[megatron-redi] weights from {c.pretrained_checkpoint} (fresh optimizer, iteration 0)")
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
    init_distributed(cfg.parallel.distributed_timeout_minutes)
    cfg.validate(dist.get_world_size())
    check_fp8_request(cfg.model.fp8_format, cfg.model.transformer_impl)
    dp = init_world(cfg.parallel, cfg.training.seed)
    shape = cfg.model.shape()
    shape.check_parallel(cfg.parallel.tensor_model_parallel_size, cfg.parallel.pipeline_model_parallel_size)
    check_vocab_fits(cfg.model.tokenizer_model, shape)
    objective = build_objective(cfg.objective)
    save_lock = ckpt.lock_save_folder(cfg.checkpoint.save) if cfg.checkpoint.save else None
    log_rank = is_logging_rank()
    examples, data_stats = dataset_provider(progress=log_rank and not cfg.logging.no_progress)
    if len(examples) < cfg.data.global_batch_size and cfg.training.train_iters is None:
        raise ValueError(f"--data-path holds {len(examples)} examples, fewer than --global-batch-size "
                         f"{cfg.data.global_batch_size}")

    model = build_ddp_model(model_provider, cfg.parallel)
    total_iters = total_iterations(cfg, len(examples))
    optimizer, scheduler = build_optimizer(
        cfg.optimizer, [model], total_iters, bf16=cfg.model.bf16,
        use_distributed_optimizer=cfg.parallel.use_distributed_optimizer,
        override_scheduler=cfg.checkpoint.override_opt_param_scheduler,
        use_checkpoint_scheduler=cfg.checkpoint.use_checkpoint_opt_param_scheduler)
    settings = run_settings(cfg, data_stats, len(examples), total_iters)
    say = tqdm.write if log_rank else lambda _: None
    if cfg.data.seq_length > shape.max_position_embeddings:
        say(f"[megatron-redi] warning: --seq-length {cfg.data.seq_length} exceeds max_position_embeddings "
            f"{shape.max_position_embeddings} of {shape.source}: documents longer than that get positions the "
            f"model was not built for (the paper raises it with --max-position-embeddings 32768)")
    state = _start(cfg, model, optimizer, scheduler, say, settings)
    if state.iteration >= total_iters:
        say(f"[megatron-redi] the checkpoint is at iteration {state.iteration} of {total_iters}: nothing to do "
            f"(raise --train-iters / --train-epochs, with --override-opt_param-scheduler, to train on)")
    if log_rank and state.iteration == 0 and cfg.logging.metrics_file:
        _set_aside_old_metrics(Path(cfg.logging.metrics_file), say)

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

        step_metrics = reduce_metrics(losses, dev)
        _stop_if_not_finite(state.iteration, grad_norm, step_metrics, dev)
        averager.add(step_metrics)
        if state.iteration % cfg.logging.log_interval == 0 or state.iteration == total_iters:
            rec = {"iteration": state.iteration, "consumed_samples": state.consumed_samples,
                   "epoch": round(sampler.epoch_of(state.consumed_samples), 4), "lr": lr_used,
                   "grad_norm": float(grad_norm) if grad_norm is not None else None,
                   "update_successful": bool(ok), **averager.mean(), **window.report(),
                   "micro_batches": len(batch.micro_batches)}
            if not last:  # the data policy's counts once, in the run's first record (docs/DATA.md)
                rec.update({f"data/{k}": v for k, v in data_stats.items() if isinstance(v, int)})
            logger.log(rec, tqdm.write)
            last = rec
        if _checkpoint_and_should_stop(cfg, state, total_iters, signals, model, optimizer, scheduler, log_rank,
                                       settings):
            break
    bar.close()
    logger.close()
    if signals:
        signals.restore()
    if save_lock:
        save_lock.close()
    return last


def _set_aside_old_metrics(path: Path, say) -> None:
    """A new run never appends to another run's metrics: an existing non-empty file is renamed aside
    (a resumed run appends, as its iterations continue)."""
    if path.is_file() and path.stat().st_size > 0:
        old = path.with_name(f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}.old")
        path.rename(old)
        say(f"[megatron-redi] {path} held another run's metrics: kept as {old}")


def _stop_if_not_finite(iteration: int, grad_norm, metrics: dict, dev) -> None:
    """Megatron's --check-for-nan-in-loss-and-grad, always on: a NaN/Inf loss (known on the last
    pipeline stage) or grad norm (known everywhere) stops the run on EVERY rank, before this
    iteration's model can be saved or marked latest. One small all-reduce per iteration."""
    loss = metrics.get("loss")
    bad_grad = grad_norm is not None and not math.isfinite(float(grad_norm))
    bad_loss = loss is not None and not math.isfinite(loss)
    flags = torch.tensor([float(bad_loss), float(bad_grad)], device=dev)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    if flags.any():
        what = [name for name, f in zip(("loss", "grad norm"), flags.tolist()) if f]
        seen = f" (loss {loss}, grad norm {grad_norm})" if loss is not None else f" (grad norm {grad_norm})"
        raise RuntimeError(f"iteration {iteration}: non-finite {' and '.join(what)}{seen}; stopping without "
                           f"saving this model (the last checkpoint stays the latest). Lower --lr, check "
                           f"--clip-grad, or look for a bad batch in the data")


def _checkpoint_and_should_stop(cfg: TrainConfig, state: ckpt.TrainState, total_iters: int, signals,
                                model, optimizer, scheduler, log_rank: bool, settings: dict) -> bool:
    """Save at --save-interval, on a stop request (signal, --exit-interval) and at the end; True to stop."""
    c = cfg.checkpoint
    save_now = c.save and c.save_interval and state.iteration % c.save_interval == 0
    stop = signals is not None and signals.any_rank_received()
    stop = stop or bool(cfg.training.exit_interval and state.iteration % cfg.training.exit_interval == 0)
    if c.save and (save_now or stop or state.iteration == total_iters):
        path = ckpt.save_training_checkpoint(c, model, optimizer, scheduler, state, cfg.parallel,
                                             {"loss_type": cfg.objective.loss_type, "seed": cfg.training.seed,
                                              "run": settings})
        if log_rank:
            tqdm.write(f"[megatron-redi] saved iteration {state.iteration} to {path}")
    if stop and log_rank:
        tqdm.write(f"[megatron-redi] stopping at iteration {state.iteration}{' (checkpoint saved)' if c.save else ''}")
    return stop
