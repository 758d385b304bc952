"""Everything before the first step, shared by the trainer, the reference scorer and the benchmarks:
the process groups, this rank's model wrapped in megatron DDP, and the Megatron-style providers
(`model_provider`, `dataset_provider`) that `pretrain_redi.py` hands to the loop.
"""

from __future__ import annotations

from collections.abc import Callable

from megatron_redi.data.dataset import load_examples
from megatron_redi.objectives.losses import ObjectiveConfig
from megatron_redi.platform.distributed import ParallelConfig, init_distributed, init_model_parallel, set_seed
from megatron_redi.training.config import DataArgs, ModelArgs


def init_world(parallel: ParallelConfig, seed: int) -> int:
    """torch.distributed (NCCL or gloo), megatron's TP/PP/CP/DP groups and every RNG; returns DP size.
    Raises ValueError naming the flag, on every rank, when the layout does not fit the world."""
    init_distributed(parallel.distributed_timeout_minutes)
    dp = init_model_parallel(parallel)
    set_seed(seed)
    return dp


def is_logging_rank() -> bool:
    """The one rank that prints, logs metrics and writes results: last PP stage, first of TP/DP/CP."""
    from megatron.core import parallel_state as ps

    return (ps.is_pipeline_last_stage() and ps.get_tensor_model_parallel_rank() == 0
            and ps.get_data_parallel_rank() == 0 and ps.get_context_parallel_rank() == 0)


def model_provider(model: ModelArgs, parallel: ParallelConfig, seed: int, pre_process: bool = True,
                   post_process: bool = True, vp_stage=None):
    """This rank's pipeline stage of the Qwen2 model described by --model-config (Megatron's
    `model_provider`; bind the configs with functools.partial)."""
    from megatron_redi.model.provider import build_model

    return build_model(model.shape(), model.build_config(parallel), seed=seed, pre_process=pre_process,
                       post_process=post_process, vp_stage=vp_stage)


def dataset_provider(data: DataArgs, tokenizer_model: str, objective: ObjectiveConfig, progress: bool = True):
    """Tokenised training examples (SFT documents or pairs) from --data-path, and their statistics."""
    return load_examples(data.loader_config(tokenizer_model, objective), progress=progress)


def build_ddp_model(model_provider: Callable, parallel: ParallelConfig):
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
        use_distributed_optimizer=parallel.use_distributed_optimizer,
        average_in_collective=False,
    )
    ddp = DistributedDataParallel(config=model.config, ddp_config=ddp_cfg, module=model)
    model.config.no_sync_func = ddp.no_sync
    model.config.finalize_model_grads_func = _finalize_grads
    # packed micro-batches differ in length, so pipeline stages exchange shapes first
    model.config.variable_seq_lengths = parallel.pipeline_model_parallel_size > 1
    return ddp


def _finalize_grads(model_chunks, num_tokens=None, **kwargs):
    # Losses are already normalised by the global batch size: DP/CP reduction must be a plain sum.
    from megatron.core.distributed import finalize_model_grads

    return finalize_model_grads(model_chunks, num_tokens=None)
