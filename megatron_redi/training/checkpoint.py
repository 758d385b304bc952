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

from megatron_redi.checkpointing.integrity import newest_readable_iteration, newest_readable_model_dir
from megatron_redi.checkpointing.layout import (
    ASSETS_DIR,
    HF_CONFIG,
    MARKER,
    META,
    complete_checkpoints,
    copy_assets,
    iter_dir,
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


LOCK = ".redi_save.lock"


def lock_save_folder(root: str | Path):
    """Hold an exclusive lock on a --save folder for the life of the run, so two runs never prune or
    replace each other's checkpoints. Rank 0 takes it (an OS file lock: released when the process ends,
    however it ends); every rank raises, naming the holder, when another run has it. Returns the handle
    to keep open (close it to release); None off rank 0."""
    import fcntl
    import socket
    import time

    handle, holder = None, None
    if dist.get_rank() == 0:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        handle = open(root / LOCK, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            handle = None
        else:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
            handle.flush()
    names = [holder]
    dist.broadcast_object_list(names, src=0)
    if names[0]:
        raise RuntimeError(f"--save {root} is in use by another run ({names[0]}); give this run its own --save "
                           f"folder, or stop the other one")
    return handle


def _refuse_non_finite_weights(model, iteration: int) -> None:
    """A model with NaN/Inf weights is never saved (nor marked latest); every rank raises together."""
    bare = unwrap_model(model)
    params = list(bare.parameters())
    device = params[0].device if params else torch.device("cpu")
    finite = all(bool(torch.isfinite(p).all()) for p in params)
    flag = torch.tensor([0.0 if finite else 1.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item():
        raise RuntimeError(f"refusing to save iteration {iteration}: the model holds non-finite weights "
                           f"(the last checkpoint stays the latest)")


def save_training_checkpoint(ckpt: CheckpointArgs, model, optimizer, scheduler, state: TrainState,
                             parallel: ParallelConfig, run_info: dict) -> Path:
    """Write `ckpt.save/iter_N` for `state.iteration` (every rank calls this); `run_info` is recorded
    in the metadata (objective, seed). Prunes to `ckpt.keep_last` complete checkpoints."""
    from megatron.core import dist_checkpointing

    _refuse_non_finite_weights(model, state.iteration)
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
    from torch.distributed.checkpoint.api import CheckpointException  # a BaseException

    try:
        dist_checkpointing.save(sd, str(tmp))
    except (Exception, CheckpointException) as e:  # torch DCP re-raises a failed write on every rank
        raise _save_failed(root, tmp, state.iteration, e) from None
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


def _cause(error: BaseException, markers: tuple[str, ...], last: bool = False) -> str:
    """The telling line of a (dist) checkpoint error: of the first failing rank's exception when torch DCP
    wrapped it (CheckpointException.failures: rank -> exception), the first (or `last`) line holding one
    of `markers`, else its first line."""
    failures = list(getattr(error, "failures", {}).values())
    lines = [ln.strip() for ln in str(failures[0] if failures else error).strip().splitlines() if ln.strip()]
    hits = [ln for ln in lines if any(m in ln for m in markers)]
    return (hits[-1] if last else hits[0]) if hits else (lines[0] if lines else type(error).__name__)


def _from_rank0(compute):
    """`compute()` on rank 0, broadcast to every rank (so all ranks act on one decision)."""
    box = [compute() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _save_failed(root: Path, tmp: Path, iteration: int, error: Exception) -> RuntimeError:
    """One message for a failed save (disk full, quota, file-size limit...): the folder, the free space
    and what the previous checkpoint took; the partial folder is removed, the previous one is intact."""
    shutil.rmtree(tmp, ignore_errors=True)
    done = complete_checkpoints(root)
    prev = iter_dir(root, done[-1]) if done else None
    took = sum(f.stat().st_size for f in prev.rglob("*") if f.is_file()) if prev else None
    free = shutil.disk_usage(root).free
    gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
    short = _cause(error, ("No space", "too large", "Errno"))[:300]
    return RuntimeError(
        f"saving iteration {iteration} to {root} failed ({short}); {gib(free)} free there"
        + (f", the previous checkpoint took {gib(took)}" if took is not None else "")
        + (f". {prev} is intact and stays the latest" if prev else "")
        + ". Free space or point --save at a larger disk, then rerun with --load to resume")


def newest_readable_checkpoint(root: str | Path) -> tuple[int | None, list[str]]:
    """(newest complete checkpoint that passes `unreadable_reason`, the reasons of newer ones skipped).
    Decided on rank 0 and broadcast, so every rank loads the same one."""
    return _from_rank0(lambda: newest_readable_iteration(root))


def _load(sharded_state: dict, path: Path, flag: str) -> dict:
    """dist_checkpointing.load, with a checkpoint of another model shape named as such (every rank
    raises the same ValueError; nothing waits)."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.core import CheckpointingException
    from torch.distributed.checkpoint.api import CheckpointException  # a BaseException

    try:
        return dist_checkpointing.load(sharded_state, str(path))
    except (CheckpointingException, CheckpointException) as e:
        first = _cause(e, ("Error", "mismatch", "Mismatch"), last=True)[:400]
        saved = next((str(p) for p in (path / HF_CONFIG, path.parent / HF_CONFIG) if p.is_file()), None)
        raise ValueError(f"{flag} {path} does not fit this model ({first})"
                         + (f"; it was saved for the model in {saved}" if saved else "")
                         + ": check --model-config") from None


SCHEDULE_SETTINGS = ("lr", "min_lr", "lr_warmup_fraction", "lr_decay_style", "weight_decay", "total_iters")


def check_run_settings(path: Path, saved: dict | None, now: dict, overrides: set[str],
                       schedule_flag: bool, say) -> None:
    """A resumed run must be the run that was saved: same data bytes, tokenizer, objective, batch size,
    seed, sequence rules and schedule. ValueError lists every difference unless each is accepted by
    --override-checkpoint-settings NAME (schedule ones also by Megatron's scheduler flags)."""
    if saved is None:
        say(f"[megatron-redi] {path} records no run settings (older format): not checked")
        return
    unknown = sorted(overrides - set(now))
    if unknown:
        raise ValueError(f"--override-checkpoint-settings: unknown setting(s) {' '.join(unknown)}; the names are: "
                         f"{' '.join(sorted(now))}")
    diffs = {k: (saved.get(k), now.get(k)) for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)}
    refused = {k: v for k, v in diffs.items()
               if k not in overrides and not (schedule_flag and k in SCHEDULE_SETTINGS)}
    if refused:
        lines = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in refused.items())
        schedule = [k for k in refused if k in SCHEDULE_SETTINGS]
        raise ValueError(
            f"--load {path} was saved by a run with other settings ({lines}). Resuming would silently change "
            f"the run. If intended, pass --override-checkpoint-settings {' '.join(refused)}"
            + (" (or, for the schedule, --override-opt_param-scheduler / --use-checkpoint-opt_param-scheduler)"
               if schedule else "")
            + "; or start a new run from these weights with --pretrained-checkpoint")
    if diffs:
        say(f"[megatron-redi] resuming with changed settings, as asked: {', '.join(diffs)}")


def load_training_checkpoint(root: str | Path, model, optimizer, scheduler, parallel: ParallelConfig,
                             say=lambda _msg: None, run_settings: dict | None = None,
                             overrides: set[str] = frozenset(), schedule_flag: bool = False) -> TrainState:
    """Resume model, optimizer, scheduler, counters and (same layout only) RNG states from the newest
    readable checkpoint; an unreadable newer one is skipped, naming the file (RuntimeError if none is
    readable). With `run_settings`, the checkpoint's must match (`check_run_settings`)."""

    it, skipped = newest_readable_checkpoint(root)
    for reason in skipped:
        say(f"[megatron-redi] skipping an unreadable checkpoint: {reason}")
    if it is None:
        raise RuntimeError(f"--load {root}: no readable checkpoint; " + "; ".join(skipped))
    path = iter_dir(Path(root), it)
    meta = json.loads((path / META).read_text())
    if run_settings is not None:
        check_run_settings(path, meta.get("run"), run_settings, set(overrides), schedule_flag, say)
        if set(overrides) & set(SCHEDULE_SETTINGS):  # a schedule setting named as intended: the new one wins
            scheduler.override_opt_param_scheduler = True
    same_layout = meta["layout"] == _layout(parallel)
    sd = _sharded_state(model, optimizer, parallel, is_loading=True)
    if same_layout:
        sd["rng_state"] = _rng_sharded(None)
    loaded = _load(sd, path, "--load")
    unwrap_model(model).load_state_dict(loaded["model"])
    load_optimizer_state(optimizer, loaded["optimizer"])
    fix_adam_steps(optimizer, meta["optimizer_steps"])
    scheduler.load_state_dict(meta["scheduler"])
    if same_layout and loaded.get("rng_state") is not None:
        _set_rng_state(loaded["rng_state"])
    return TrainState(iteration=meta["iteration"], consumed_samples=meta["consumed_samples"])


def load_pretrained(path: str | Path, model, say=lambda _msg: None) -> None:
    """Weights only (fresh optimizer and counters) from a converted HF checkpoint or a training one (its
    newest readable iteration; an unreadable newer one is skipped, naming the file)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--pretrained-checkpoint: {p} does not exist")
    found, skipped = _from_rank0(lambda: newest_readable_model_dir(p))
    for reason in skipped:
        say(f"[megatron-redi] skipping an unreadable checkpoint: {reason}")
    if found is None:
        raise FileNotFoundError(f"--pretrained-checkpoint: {p} holds no readable megatron dist checkpoint"
                                + (f" ({'; '.join(skipped)})" if skipped else
                                   " (convert HF weights with tools/convert_checkpoint.py hf-to-mcore)"))
    bare = unwrap_model(model)
    loaded = _load({"model": bare.sharded_state_dict()}, found, "--pretrained-checkpoint")
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
