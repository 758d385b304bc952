"""Process-group set-up shared by the trainer, tools and tests (NCCL on GPU, gloo on CPU)."""

from __future__ import annotations

import os
import random
import socket
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from megatron_redi.platform.cpu_patches import apply_cpu_patches
from megatron_redi.platform.process import children_die_with_parent


@dataclass
class ParallelConfig:
    """The layout (Megatron's flags); `validate` is the one place its rules are checked."""

    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    context_parallel_size: int = 1
    sequence_parallel: bool = False
    use_distributed_optimizer: bool = False
    distributed_timeout_minutes: float = 10.0  # every collective; a frozen or lost peer ends the run

    def validate(self, world_size: int) -> int:
        """Return the data-parallel size or raise naming the offending flag."""
        for flag, v in (
            ("--tensor-model-parallel-size", self.tensor_model_parallel_size),
            ("--pipeline-model-parallel-size", self.pipeline_model_parallel_size),
            ("--context-parallel-size", self.context_parallel_size),
        ):
            if v < 1:
                raise ValueError(f"{flag} must be >= 1, got {v}")
        mp = self.tensor_model_parallel_size * self.pipeline_model_parallel_size * self.context_parallel_size
        if world_size % mp:
            raise ValueError(
                f"world size {world_size} is not divisible by --tensor-model-parallel-size "
                f"({self.tensor_model_parallel_size}) x --pipeline-model-parallel-size "
                f"({self.pipeline_model_parallel_size}) x --context-parallel-size "
                f"({self.context_parallel_size}) = {mp}"
            )
        if self.sequence_parallel and self.tensor_model_parallel_size == 1:
            raise ValueError("--sequence-parallel needs --tensor-model-parallel-size > 1")
        if self.distributed_timeout_minutes <= 0:
            raise ValueError(f"--distributed-timeout-minutes must be > 0, got {self.distributed_timeout_minutes}")
        return world_size // mp


def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_distributed(timeout_minutes: float = 10.0) -> None:
    """Initialise torch.distributed from torchrun's environment (or as a single process)."""
    apply_cpu_patches()
    if dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ and "WORLD_SIZE" not in os.environ:
        # a plain single-process run (no torchrun): any free port, so two such runs never collide
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    os.environ.setdefault("MASTER_PORT", "29500")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    try:
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=timeout_minutes))
    except RuntimeError as e:
        if "EADDRINUSE" in str(e) or "address already in use" in str(e).lower():
            raise RuntimeError(f"port {os.environ['MASTER_PORT']} on {os.environ['MASTER_ADDR']} is taken (another "
                               f"run?): set MASTER_PORT to a free port (torchrun: --master-port)") from None
        raise


def init_model_parallel(cfg: ParallelConfig) -> int:
    """Create megatron's TP/PP/CP/DP groups; returns the data-parallel size."""
    from megatron.core import parallel_state

    dp = cfg.validate(dist.get_world_size())
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=cfg.tensor_model_parallel_size,
            pipeline_model_parallel_size=cfg.pipeline_model_parallel_size,
            context_parallel_size=cfg.context_parallel_size,
            distributed_timeout_minutes=cfg.distributed_timeout_minutes,
        )
    return dp


def set_seed(seed: int) -> None:
    """Seed every generator; megatron's tracker gets the same seed so TP ranks agree on init."""
    from megatron.core import tensor_parallel

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)


def destroy() -> None:
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


# megatron-core 0.16 notices that say nothing actionable on a supported set-up, printed by every rank
# at import (7 per rank without TE/apex): the local spec and torch's optimizers ARE our CPU/GPU path.
KNOWN_NOISE = (
    r"(Transformer Engine and )?Apex (is|are) not installed",  # backends.py, optimizer/*, fsdp/*
    r"Transformer Engine and Apex are not installed",
    r"full scope is deprecated",  # transformer_config.py: a default megatron sets for itself
)


def quiet_known_warnings() -> None:
    """Hide exactly the notices in KNOWN_NOISE; every other warning still shows."""
    import warnings

    for pattern in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=pattern)


def run_main(main: Callable[[], object]) -> None:
    """Run an entry point (`pretrain_redi.py`, `tools/score_reference.py`, `tools/convert_checkpoint.py`).
    A user error (ValueError, FileNotFoundError, RuntimeError) prints `error: ...` (`[rank R] error: ...`
    under torchrun) on every rank and exits 2, so no rank waits in a collective for one that failed
    (REDI_TRACEBACK=1 adds the traceback). Otherwise the process groups are torn down and an int
    result becomes the exit code."""
    quiet_known_warnings()
    children_die_with_parent()
    try:
        result = main()
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        rank = f"[rank {os.environ['RANK']}] " if "RANK" in os.environ else ""
        print(f"{rank}error: {e}", file=sys.stderr)
        if os.environ.get("REDI_TRACEBACK"):
            traceback.print_exc()
        sys.exit(2)
    destroy()
    sys.exit(result if isinstance(result, int) else 0)
