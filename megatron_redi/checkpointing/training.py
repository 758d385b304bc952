"""Save / resume everything a run needs, atomically, with megatron.core.dist_checkpointing.

Layout of `--save DIR`:
  DIR/iter_0000010/            one complete checkpoint (renamed into place only once fully written)
  DIR/iter_0000020.tmp-*/      an interrupted save: ignored, cleaned up by the next save
  DIR/latest_checkpointed_iteration.txt   updated last, via an atomic rename
A kill -9 at any point leaves the previous checkpoint and the marker intact.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from megatron_redi.training.optimizer import chained_optimizers, inner_torch_optimizers, step_tensor

MARKER = "latest_checkpointed_iteration.txt"
META = "redi_meta.json"


def _iter_dir(root: Path, it: int) -> Path:
    return root / f"iter_{it:07d}"


def complete_checkpoints(root: str | Path) -> list[int]:
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith("iter_") and "." not in p.name and (p / META).is_file():
            out.append(int(p.name[5:]))
    return sorted(out)


def latest_iteration(root: str | Path) -> int | None:
    """The marker's iteration if that checkpoint is complete, else the newest complete one."""
    root = Path(root)
    done = complete_checkpoints(root)
    marker = root / MARKER
    if marker.is_file():
        try:
            it = int(marker.read_text().strip())
            if it in done:
                return it
        except ValueError:
            pass
    return done[-1] if done else None


def has_checkpoint(root: str | Path) -> bool:
    return latest_iteration(root) is not None


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


def _layout(cfg) -> dict:
    from megatron.core import parallel_state as ps

    return {"tp": ps.get_tensor_model_parallel_world_size(), "pp": ps.get_pipeline_model_parallel_world_size(),
            "cp": ps.get_context_parallel_world_size(), "dp": ps.get_data_parallel_world_size(),
            "distributed_optimizer": bool(cfg.use_distributed_optimizer)}


def _opt_metadata(cfg) -> dict | None:
    # fully_reshardable lets a checkpoint move between DP sizes; see _fix_adam_steps for the two
    # megatron-core 0.16 bugs on this path.
    return {"distrib_optim_sharding_type": "fully_reshardable"} if cfg.use_distributed_optimizer else None


def _prime_adam_state(optimizer) -> None:
    """Give a fresh (never stepped) torch AdamW a full state: the distributed optimizer's
    `state_dict()` reads every parameter's 'step', and megatron's init_state_fn creates none."""
    for opt in inner_torch_optimizers(optimizer):
        for group in opt.param_groups:
            for p in group["params"]:
                st = opt.state[p]
                if "exp_avg" not in st:
                    st["exp_avg"] = torch.zeros_like(p.data)
                    st["exp_avg_sq"] = torch.zeros_like(p.data)
                st.setdefault("step", step_tensor(group, p, 0))


def _load_optimizer_state(optimizer, state) -> None:
    """megatron 0.16 bug 1: with torch AdamW, the distributed optimizer's fully_reshardable load
    copies every key of the live per-parameter state from the checkpoint, but the checkpoint carries
    no per-parameter 'step' (KeyError 'step'). Hide 'step' during the copy; _fix_adam_steps restores
    it. Scoped to this call, on this optimizer instance only."""
    undo = []
    for o in chained_optimizers(optimizer):
        orig = getattr(o, "_set_main_param_and_optimizer_states", None)
        if orig is None or not hasattr(o, "model_param_group_index_map"):
            continue

        def without_step(model_param, tensors, _orig=orig, _o=o):
            gi, go = _o.model_param_group_index_map[model_param]
            st = _o.optimizer.state[_o.optimizer.param_groups[gi]["params"][go]]
            step = st.pop("step", None)
            try:
                _orig(model_param, tensors)
            finally:
                if step is not None:
                    st["step"] = step

        o._set_main_param_and_optimizer_states = without_step
        undo.append(o)
    try:
        optimizer.load_state_dict(state)
    finally:
        for o in undo:
            del o._set_main_param_and_optimizer_states


def _fix_adam_steps(optimizer, steps: int) -> None:
    """megatron 0.16 bug 2: load_state_dict gives every parameter ONE shared `step` tensor, which
    torch AdamW then increments once per parameter, silently corrupting bias correction. Give each
    parameter its own step tensor holding the true number of optimizer steps taken."""
    for opt in inner_torch_optimizers(optimizer):
        for group in opt.param_groups:
            for p in group["params"]:
                st = opt.state.get(p)
                if st is not None and "step" in st:
                    st["step"] = step_tensor(group, p, steps)


def unwrap(model):
    """The bare GPTModel under megatron DDP: checkpoint keys never carry a `module.` prefix, so
    training checkpoints and converted HF checkpoints share one key space."""
    while hasattr(model, "module"):
        model = model.module
    return model


def _sharded_state(model, optimizer, cfg, is_loading: bool) -> dict:
    model_sd = unwrap(model).sharded_state_dict()
    sd = {"model": model_sd}
    if optimizer is not None:
        if is_loading:
            _prime_adam_state(optimizer)
        sd["optimizer"] = optimizer.sharded_state_dict(model_sd, is_loading=is_loading,
                                                       metadata=_opt_metadata(cfg))
    return sd


def save_training_checkpoint(root: str | Path, model, optimizer, scheduler, state, cfg) -> Path:
    from megatron.core import dist_checkpointing

    root = Path(root)
    final = _iter_dir(root, state.iteration)
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

    sd = _sharded_state(model, optimizer, cfg, is_loading=False)
    # per-rank RNG states, restored only when the layout is unchanged
    sd["rng_state"] = _rng_sharded(_rng_state())
    dist_checkpointing.save(sd, str(tmp))
    dist.barrier()
    if rank == 0:
        meta = {"iteration": state.iteration, "consumed_samples": state.consumed_samples,
                "optimizer_steps": getattr(state, "optimizer_steps", state.iteration),
                "scheduler": scheduler.state_dict(), "layout": _layout(cfg),
                "loss_type": cfg.objective.loss_type, "seed": cfg.seed}
        (tmp / META).write_text(json.dumps(meta, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        marker_tmp = root / (MARKER + ".tmp")
        marker_tmp.write_text(str(state.iteration))
        os.replace(marker_tmp, root / MARKER)
        if cfg.keep_last:
            for it in complete_checkpoints(root)[: -cfg.keep_last]:
                shutil.rmtree(_iter_dir(root, it), ignore_errors=True)
    dist.barrier()
    return final


def load_training_checkpoint(root: str | Path, model, optimizer, scheduler, cfg):
    """Resume model, optimizer, scheduler, counters and (same layout only) RNG states."""
    from megatron.core import dist_checkpointing

    from megatron_redi.training.loop import TrainState

    it = latest_iteration(root)
    path = _iter_dir(Path(root), it)
    meta = json.loads((path / META).read_text())
    same_layout = meta["layout"] == _layout(cfg)
    sd = _sharded_state(model, optimizer, cfg, is_loading=True)
    if same_layout:
        sd["rng_state"] = _rng_sharded(None)
    loaded = dist_checkpointing.load(sd, str(path))
    unwrap(model).load_state_dict(loaded["model"])
    _load_optimizer_state(optimizer, loaded["optimizer"])
    _fix_adam_steps(optimizer, meta["optimizer_steps"])
    scheduler.load_state_dict(meta["scheduler"])
    if same_layout and loaded.get("rng_state") is not None:
        _set_rng_state(loaded["rng_state"])
    return TrainState(iteration=meta["iteration"], consumed_samples=meta["consumed_samples"])


def model_checkpoint_dir(root: str | Path) -> Path | None:
    """The folder holding a dist checkpoint: `root` itself (a converted HF model) or the newest complete
    iteration of a training --save folder; None if there is neither."""
    root = Path(root)
    it = latest_iteration(root)
    ckpt = _iter_dir(root, it) if it is not None else root
    return ckpt if (ckpt / "metadata.json").is_file() else None


def load_pretrained(path: str | Path, model, shape, cfg) -> None:
    """Weights only (fresh optimizer and counters) from a converted HF checkpoint or a training one."""
    from megatron.core import dist_checkpointing

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--pretrained-checkpoint: {p} does not exist")
    ckpt_dir = model_checkpoint_dir(p)
    if ckpt_dir is None:
        raise FileNotFoundError(f"--pretrained-checkpoint: {p} is not a megatron dist checkpoint "
                                f"(convert HF weights with tools/convert_checkpoint.py hf-to-mcore)")
    bare = unwrap(model)
    loaded = dist_checkpointing.load({"model": bare.sharded_state_dict()}, str(ckpt_dir))
    bare.load_state_dict(loaded["model"])


def write_hf_side_files(root: str | Path, cfg) -> None:
    """Keep the HF config (with --rope-theta / --max-position-embeddings applied) and the tokenizer
    files beside the training checkpoints, so `convert_checkpoint.py mcore-to-hf --load DIR` needs
    nothing else. Rank 0 only; written once."""
    from megatron_redi.checkpointing.convert import ASSETS_DIR, HF_CONFIG, _copy_assets

    root = Path(root)
    if dist.is_initialized() and dist.get_rank() != 0:
        return
    root.mkdir(parents=True, exist_ok=True)
    src = Path(cfg.model_config)
    src_json = src / "config.json" if src.is_dir() else src
    conf = json.loads(src_json.read_text())
    if cfg.rope_theta is not None:
        conf["rope_theta"] = cfg.rope_theta
    if cfg.max_position_embeddings is not None:
        conf["max_position_embeddings"] = cfg.max_position_embeddings
    tmp = root / (HF_CONFIG + ".tmp")
    tmp.write_text(json.dumps(conf, indent=2) + "\n")
    os.replace(tmp, root / HF_CONFIG)
    if not (root / ASSETS_DIR).is_dir():
        _copy_assets([Path(cfg.tokenizer_model), src_json.parent], root / ASSETS_DIR)
