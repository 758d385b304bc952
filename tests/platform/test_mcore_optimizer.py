"""megatron-core 0.16 optimizer repairs (platform/mcore_optimizer.py): each bug is shown still present
without its repair, and a save -> load -> step round trip with the repairs equals never stopping."""

from __future__ import annotations

import pytest
import torch

from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape
from megatron_redi.platform.distributed import ParallelConfig
from megatron_redi.platform.mcore_optimizer import inner_torch_optimizers
from megatron_redi.training import checkpoint as ck
from megatron_redi.training.config import CheckpointArgs, OptimizerArgs
from megatron_redi.training.optimizer import build_optimizer
from megatron_redi.training.setup import build_ddp_model
from tests.helpers_dist import TINY

PARALLEL = ParallelConfig(use_distributed_optimizer=True)


def _build():
    from megatron_redi.model.provider import build_model

    shape = Qwen2Shape.from_hf(TINY)
    model = build_ddp_model(lambda pre_process, post_process: build_model(shape, ModelBuildConfig(), seed=1),
                            PARALLEL)
    opt, sched = build_optimizer(OptimizerArgs(lr=1e-2), [model], 10, use_distributed_optimizer=True)
    return model, opt, sched


def _step(model, opt, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.main_grad.copy_(torch.randn(p.shape, generator=g))
    ok, _, _ = opt.step()
    assert ok


def _saved(tmp_path):
    model, opt, sched = _build()
    for i in range(2):
        _step(model, opt, i)
    ck.save_training_checkpoint(CheckpointArgs(save=str(tmp_path)), model, opt, sched, ck.TrainState(2, 2),
                                PARALLEL, {})
    return model, opt


def test_resume_with_repairs_equals_never_stopping(megatron_world, tmp_path):
    model, opt = _saved(tmp_path)
    model2, opt2, sched2 = _build()
    ck.load_training_checkpoint(tmp_path, model2, opt2, sched2, PARALLEL)
    steps = [st["step"] for o in inner_torch_optimizers(opt2) for st in o.state.values()]
    assert steps and all(float(s) == 2.0 for s in steps)
    assert len({id(s) for s in steps}) == len(steps)  # one step tensor per parameter
    _step(model, opt, 7)
    _step(model2, opt2, 7)
    for (n, a), b in zip(model.named_parameters(), model2.parameters()):
        assert torch.equal(a, b), n


def test_bug1_load_without_repair_fails(megatron_world, tmp_path, monkeypatch):
    """megatron-core 0.16: the fully_reshardable load copies a 'step' the checkpoint lacks."""
    _saved(tmp_path)
    monkeypatch.setattr(ck, "load_optimizer_state", lambda optimizer, state: optimizer.load_state_dict(state))
    model2, opt2, sched2 = _build()
    with pytest.raises(KeyError, match="step"):
        ck.load_training_checkpoint(tmp_path, model2, opt2, sched2, PARALLEL)


def test_bug2_shared_step_without_repair(megatron_world, tmp_path, monkeypatch):
    """megatron-core 0.16: after load every parameter shares ONE step tensor, so AdamW's bias
    correction counts one step per parameter."""
    _saved(tmp_path)
    monkeypatch.setattr(ck, "fix_adam_steps", lambda optimizer, steps: None)
    model2, opt2, sched2 = _build()
    ck.load_training_checkpoint(tmp_path, model2, opt2, sched2, PARALLEL)
    steps = [st["step"] for o in inner_torch_optimizers(opt2) for st in o.state.values()]
    assert len({id(s) for s in steps}) < len(steps) or any(float(s) != 2.0 for s in steps)
