"""The training loop on megatron.core: schedules, DDP, optimizer, scheduler, metrics, checkpoints.

`pretrain()` receives the four Megatron-style callables from `pretrain_redi.py` (model provider,
forward step, dataset provider, and the loss function inside the forward step).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from tqdm import tqdm

from megatron_redi.data.batch import MicroBatch
from megatron_redi.data.dataset import make_micro_batches, make_packed_micro_batches, pad_multiple
from megatron_redi.data.sampler import GlobalBatchSampler
from megatron_redi.platform.distributed import (
    ParallelConfig,
    device,
    init_distributed,
    init_model_parallel,
    set_seed,
)
from megatron_redi.training.arguments import TrainConfig, model_shape, validate
from megatron_redi.training.metrics import MetricsLogger, model_flops, peak_tflops
from megatron_redi.training.optimizer import build_optimizer
from megatron_redi.training.signals import ExitSignalHandler


@dataclass
class StepInput:
    """What the forward step draws from the data iterator: a micro-batch and the global normaliser."""

    batch: MicroBatch
    global_units: float


@dataclass
class TrainState:
    iteration: int = 0
    consumed_samples: int = 0


def build_ddp_model(cfg: TrainConfig, model_provider: Callable):
    """Build this rank's pipeline stage, wrap it in megatron DDP and give megatron's schedules the
    hooks they take from the model config (no-sync, gradient finalisation, variable lengths)."""
    from megatron.core import parallel_state
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig

    pre = parallel_state.is_pipeline_first_stage()
    post = parallel_state.is_pipeline_last_stage()
    model = model_provider(pre_process=pre, post_process=post)
    ddp_cfg = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=False,
        use_distributed_optimizer=cfg.use_distributed_optimizer,
        average_in_collective=False,
    )
    ddp = DistributedDataParallel(config=model.config, ddp_config=ddp_cfg, module=model)
    model.config.no_sync_func = ddp.no_sync
    model.config.finalize_model_grads_func = _finalize_grads
    # packed micro-batches differ in length, so pipeline stages exchange shapes first
    model.config.variable_seq_lengths = cfg.pipeline_model_parallel_size > 1
    return ddp


def _finalize_grads(model_chunks, num_tokens=None, **kwargs):
    # Losses are already normalised by the global batch size: DP/CP reduction must be a plain sum.
    from megatron.core.distributed import finalize_model_grads

    return finalize_model_grads(model_chunks, num_tokens=None)


def total_iterations(cfg: TrainConfig, num_examples: int) -> int:
    if cfg.train_iters is not None:
        return cfg.train_iters
    return max(1, math.ceil(cfg.train_epochs * num_examples / cfg.global_batch_size))


def is_logging_rank() -> bool:
    from megatron.core import parallel_state as ps

    return (ps.is_pipeline_last_stage() and ps.get_tensor_model_parallel_rank() == 0
            and ps.get_data_parallel_rank() == 0 and ps.get_context_parallel_rank() == 0)


def pretrain(cfg: TrainConfig, model_provider: Callable, forward_step_func: Callable,
             dataset_provider: Callable) -> dict:
    """Run training; returns the last logged record (on the logging rank; {} elsewhere)."""
    from megatron.core import parallel_state as ps
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_redi.checkpointing import training as ckpt
    from megatron_redi.platform.gpu_features import check_fp8_request

    init_distributed()
    validate(cfg, dist.get_world_size())
    check_fp8_request(cfg.fp8_format, cfg.transformer_impl)
    dp = init_model_parallel(ParallelConfig(cfg.tensor_model_parallel_size, cfg.pipeline_model_parallel_size,
                                            cfg.context_parallel_size, cfg.sequence_parallel))
    set_seed(cfg.seed)
    shape = model_shape(cfg)
    shape.check_parallel(cfg.tensor_model_parallel_size, cfg.pipeline_model_parallel_size)
    log_rank = is_logging_rank()
    examples, data_stats = dataset_provider(cfg, progress=log_rank and not cfg.no_progress)
    if len(examples) < cfg.global_batch_size and cfg.train_iters is None:
        raise ValueError(f"--data-path holds {len(examples)} examples, fewer than --global-batch-size "
                         f"{cfg.global_batch_size}")

    model = build_ddp_model(cfg, model_provider)
    total_iters = total_iterations(cfg, len(examples))
    optimizer, scheduler = build_optimizer(cfg, [model], total_iters)

    state = TrainState()
    if cfg.save:
        ckpt.write_hf_side_files(cfg.save, cfg)
    if cfg.load and ckpt.has_checkpoint(cfg.load):
        state = ckpt.load_training_checkpoint(cfg.load, model, optimizer, scheduler, cfg)
    elif cfg.pretrained_checkpoint:
        ckpt.load_pretrained(cfg.pretrained_checkpoint, model, shape, cfg)
        # the copied weights must reach the optimizer's fp32 master copies
        if hasattr(optimizer, "reload_model_params"):
            optimizer.reload_model_params()

    sampler = GlobalBatchSampler(len(examples), cfg.global_batch_size, ps.get_data_parallel_rank(), dp, cfg.seed)
    multiple = pad_multiple(cfg.tensor_model_parallel_size, cfg.context_parallel_size, cfg.sequence_parallel)
    fwd_bwd = get_forward_backward_func()
    logger = MetricsLogger(cfg.metrics_file, cfg.tensorboard_dir, enabled=log_rank)
    signals = ExitSignalHandler() if cfg.exit_signal_handler else None
    peak = peak_tflops()
    world = dist.get_world_size()
    dev = device()
    bar = tqdm(total=total_iters, initial=state.iteration, desc=f"{cfg.objective.loss_type}",
               disable=not log_rank or cfg.no_progress, dynamic_ncols=True, file=sys.stdout)
    if log_rank:
        tqdm.write(f"[megatron-redi] {len(examples)} examples ({data_stats}), {total_iters} iterations, "
                   f"world {world} = TP{cfg.tensor_model_parallel_size} x PP{cfg.pipeline_model_parallel_size}"
                   f" x CP{cfg.context_parallel_size} x DP{dp}")
    last: dict = {}
    window = _empty_window()
    capacity = cfg.micro_batch_tokens or cfg.seq_length * (2 if cfg.objective.paired else 1)
    model.train()
    while state.iteration < total_iters:
        t0 = time.perf_counter()
        gidx = sampler.global_indices(state.consumed_samples)
        local = [examples[i] for i in sampler.local_indices(state.consumed_samples)]
        if cfg.objective.paired:
            global_units = float(cfg.global_batch_size)
        else:
            global_units = float(sum(examples.completion_tokens(i) for i in gidx))
        if cfg.packing == "ffd":
            mbs, eff = make_packed_micro_batches(local, capacity, multiple)
        else:
            mbs = make_micro_batches(local, cfg.micro_batch_size, multiple)
            eff = sum(mb.num_real_tokens for mb in mbs) / sum(mb.tokens.numel() for mb in mbs)
        data_iter = iter([StepInput(mb, global_units) for mb in mbs])
        losses = fwd_bwd(
            forward_step_func=forward_step_func,
            data_iterator=data_iter,
            model=[model],
            num_microbatches=len(mbs),
            seq_length=max(mb.tokens.shape[1] for mb in mbs) // cfg.context_parallel_size,
            micro_batch_size=1,
            forward_only=False,
        )
        lr_used = optimizer.param_groups[0]["lr"]
        ok, grad_norm, _ = optimizer.step()
        scheduler.step(increment=1)
        model.zero_grad_buffer()
        optimizer.zero_grad()
        state.iteration += 1
        state.consumed_samples += cfg.global_batch_size
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        window["t"] += dt
        window["tokens"] += sum(examples.num_tokens(i) for i in gidx)
        window["flops"] += model_flops(shape, [n for i in gidx for n in examples.doc_lengths(i)])
        window["n"] += 1
        window["eff"] += eff
        bar.update(1)

        reduced = _reduce_metrics(losses, dev)
        if state.iteration % cfg.log_interval == 0 or state.iteration == total_iters:
            rec = {"iteration": state.iteration, "consumed_samples": state.consumed_samples,
                   "epoch": round(sampler.epoch_of(state.consumed_samples), 4),
                   "lr": lr_used,
                   "grad_norm": float(grad_norm) if grad_norm is not None else None,
                   "update_successful": bool(ok)}
            rec.update(reduced)
            rec["tokens_per_sec"] = window["tokens"] / window["t"]
            rec["iteration_time"] = window["t"] / window["n"]
            rec["packing_efficiency"] = window["eff"] / window["n"]
            rec["micro_batches"] = len(mbs)
            if dev.type == "cuda":
                tflops = window["flops"] / window["t"] / world / 1e12
                rec["tflops_per_gpu"] = tflops
                rec["mfu"] = tflops / peak if peak else None
                rec["max_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
            window = _empty_window()
            logger.log(rec, tqdm.write)
            last = rec
        save_now = cfg.save and cfg.save_interval and state.iteration % cfg.save_interval == 0
        stop = signals is not None and signals.any_rank_received()
        stop = stop or bool(cfg.exit_interval and state.iteration % cfg.exit_interval == 0)
        if cfg.save and (save_now or stop or state.iteration == total_iters):
            ckpt.save_training_checkpoint(cfg.save, model, optimizer, scheduler, state, cfg)
        if stop:
            if log_rank:
                tqdm.write(f"[megatron-redi] stopping at iteration {state.iteration}"
                           f"{' (checkpoint saved)' if cfg.save else ''}")
            break
    bar.close()
    logger.close()
    if signals:
        signals.restore()
    return last


def _empty_window() -> dict:
    """Sums over the iterations since the last log line: time, tokens, FLOPs, count, packing."""
    return {"t": 0.0, "tokens": 0, "flops": 0.0, "n": 0, "eff": 0.0}


def _reduce_metrics(losses: list[dict], dev) -> dict:
    """Sum the per-micro-batch metric sums and all-reduce over DP (values are already /global)."""
    from megatron.core import parallel_state as ps

    if not ps.is_pipeline_last_stage() or not losses:
        return {}
    keys = sorted(losses[0])
    vec = torch.stack([sum(d[k].float() for d in losses) for k in keys]).to(dev)
    dist.all_reduce(vec, group=ps.get_data_parallel_group())
    return {k: float(v) for k, v in zip(keys, vec.tolist())}
