"""Save / resume everything a run needs, atomically, with megatron.core.dist_checkpointing.

The folder layout is `checkpointing.layout`'s. A save is written to `iter_N.tmp-<pid>/`, renamed into
place only once fully written, then the `latest` marker is replaced atomically: a kill -9 at any
point leaves the previous checkpoint and the marker intact.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from megatron_redi.checkpointing.layout import (
    ASSETS_DIR,
    HF_CONFIG,
    MARKER,
    META,
    complete_checkpoints,
    copy_assets,
    iter_dir,
    latest_iteration,
    model_checkpoint_dir,
)
from megatron_redi.model.unwrap import unwrap_model
from megatron_redi.platform.distributed import ParallelConfig
from megatron_redi.platform.mcore_optimizer import fix_adam_steps, load_optimizer_state, prime_adam_state
from megatron_redi.training.config import CheckpointArgs, ModelArgs


@dataclass
class TrainState:
    """What the loop counts; saved with every checkpoint."""

    iteration: int = 0
    consumed_samples: int = 0


def _rng_state() -> dict:
    st = {"random": random.getstate(), "np": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state()
        from megatron.core import tensor_parallel

        st["tracker"] = tensor_parallel.get_cuda_rng_tracker().get_states()
    return st


def _rng_sharded(value):
    """This rank's RNG states as one object per (PP, TP, CP, DP) position of the layout."""
    from megatron.core import parallel_state as ps
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    return ShardedObject(
        "rng_state", value,
        (ps.get_pipeline_model_parallel_world_size(), ps.get_tensor_model_parallel_world_size(),
         ps.get_context_parallel_world_size(), ps.get_data_parallel_world_size()),
        (ps.get_pipeline_model_parallel_rank(), ps.get_tensor_model_parallel_rank(),
         ps.get_context_parallel_rank(), ps.get_data_parallel_rank()),
        replica_id=0,
    )


def _set_rng_state(st: dict) -> None:
    random.setstate(st["random"])
    np.random.set_state(st["np"])
    torch.set_rng_state(st["torch"])
    if torch.cuda.is_available() and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"])
        from megatron.core import tensor_parallel

        tensor_parallel.get_cuda_rng_tracker().set_states(st["tracker"])


def _layout(parallel: ParallelConfig) -> dict:
    from megatron.core import parallel_state as ps

    return {"tp": ps.get_tensor_model_parallel_world_size(), "pp": ps.get_pipeline_model_parallel_world_size(),
            "cp": ps.get_context_parallel_world_size(), "dp": ps.get_data_parallel_world_size(),
            "distributed_optimizer": bool(parallel.use_distributed_optimizer)}


def _opt_metadata(parallel: ParallelConfig) -> dict | None:
    # fully_reshardable lets a checkpoint move between DP sizes; see platform.mcore_optimizer for the
    # two megatron-core 0.16 bugs on this path.
    return {"distrib_optim_sharding_type": "fully_reshardable"} if parallel.use_distributed_optimizer else None


def _sharded_state(model, optimizer, parallel: ParallelConfig, is_loading: bool) -> dict:
    model_sd = unwrap_model(model).sharded_state_dict()
    sd = {"model": model_sd}
    if optimizer is not None:
        if is_loading:
            prime_adam_state(optimizer)
        sd["optimizer"] = optimizer.sharded_state_dict(model_sd, is_loading=is_loading,
                                                       metadata=_opt_metadata(parallel))
    return sd


def save_training_checkpoint(ckpt: CheckpointArgs, model, optimizer, scheduler, state: TrainState,
                             parallel: ParallelConfig, run_info: dict) -> Path:
    """Write `ckpt.save/iter_N` for `state.iteration` (every rank calls this); `run_info` is recorded
    in the metadata (objective, seed). Prunes to `ckpt.keep_last` complete checkpoints."""
    from megatron.core import dist_checkpointing

    root = Path(ckpt.save)
    final = iter_dir(root, state.iteration)
    rank = dist.get_rank()
    tmp_name = None
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for p in root.glob("iter_*.tmp-*"):
            shutil.rmtree(p, ignore_errors=True)  # leftovers of interrupted saves
        tmp_name = f"{final.name}.tmp-{os.getpid()}"
        (root / tmp_name).mkdir()
    names = [tmp_name]
    dist.broadcast_object_list(names, src=0)
    tmp = root / names[0]

    sd = _sharded_state(model, optimizer, parallel, is_loading=False)
    # per-rank RNG states, restored only when the layout is unchanged
    sd["rng_state"] = _rng_sharded(_rng_state())
    dist_checkpointing.save(sd, str(tmp))
    dist.barrier()
    if rank == 0:
        meta = {"iteration": state.iteration, "consumed_samples": state.consumed_samples,
                "optimizer_steps": getattr(state, "optimizer_steps", state.iteration),
                "scheduler": scheduler.state_dict(), "layout": _layout(parallel), **run_info}
        (tmp / META).write_text(json.dumps(meta, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        marker_tmp = root / (MARKER + ".tmp")
        marker_tmp.write_text(str(state.iteration))
        os.replace(marker_tmp, root / MARKER)
        if ckpt.keep_last:
            for it in complete_checkpoints(root)[: -ckpt.keep_last]:
                shutil.rmtree(iter_dir(root, it), ignore_errors=True)
    dist.barrier()
    return final


def load_training_checkpoint(root: str | Path, model, optimizer, scheduler, parallel: ParallelConfig) -> TrainState:
    """Resume model, optimizer, scheduler, counters and (same layout only) RNG states."""
    from megatron.core import dist_checkpointing

    it = latest_iteration(root)
    path = iter_dir(Path(root), it)
    meta = json.loads((path / META).read_text())
    same_layout = meta["layout"] == _layout(parallel)
    sd = _sharded_state(model, optimizer, parallel, is_loading=True)
    if same_layout:
        sd["rng_state"] = _rng_sharded(None)
    loaded = dist_checkpointing.load(sd, str(path))
    unwrap_model(model).load_state_dict(loaded["model"])
    load_optimizer_state(optimizer, loaded["optimizer"])
    fix_adam_steps(optimizer, meta["optimizer_steps"])
    scheduler.load_state_dict(meta["scheduler"])
    if same_layout and loaded.get("rng_state") is not None:
        _set_rng_state(loaded["rng_state"])
    return TrainState(iteration=meta["iteration"], consumed_samples=meta["consumed_samples"])


def load_pretrained(path: str | Path, model) -> None:
    """Weights only (fresh optimizer and counters) from a converted HF checkpoint or a training one."""
    from megatron.core import dist_checkpointing

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--pretrained-checkpoint: {p} does not exist")
    ckpt_dir = model_checkpoint_dir(p)
    if ckpt_dir is None:
        raise FileNotFoundError(f"--pretrained-checkpoint: {p} is not a megatron dist checkpoint "
                                f"(convert HF weights with tools/convert_checkpoint.py hf-to-mcore)")
    bare = unwrap_model(model)
    loaded = dist_checkpointing.load({"model": bare.sharded_state_dict()}, str(ckpt_dir))
    bare.load_state_dict(loaded["model"])


def write_hf_side_files(root: str | Path, model: ModelArgs) -> None:
    """Keep the HF config (with --rope-theta / --max-position-embeddings applied) and the tokenizer
    files beside the training checkpoints, so `convert_checkpoint.py mcore-to-hf --load DIR` needs
    nothing else. Rank 0 only; written once."""
    root = Path(root)
    if dist.is_initialized() and dist.get_rank() != 0:
        return
    root.mkdir(parents=True, exist_ok=True)
    src = Path(model.model_config)
    src_json = src / "config.json" if src.is_dir() else src
    conf = json.loads(src_json.read_text())
    if model.rope_theta is not None:
        conf["rope_theta"] = model.rope_theta
    if model.max_position_embeddings is not None:
        conf["max_position_embeddings"] = model.max_position_embeddings
    tmp = root / (HF_CONFIG + ".tmp")
    tmp.write_text(json.dumps(conf, indent=2) + "\n")
    os.replace(tmp, root / HF_CONFIG)
    if not (root / ASSETS_DIR).is_dir():
        copy_assets([Path(model.tokenizer_model), src_json.parent], root / ASSETS_DIR)
