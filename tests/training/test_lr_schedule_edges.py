"""LR-schedule and optimizer-construction edges (found by mutation testing, docs/MUTATION.md): a run that
is all warmup, the precision and distributed-optimizer choices reaching megatron, and the fused AdamW
switch (on only where asked, or on CUDA by default)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape
from megatron_redi.platform.distributed import ParallelConfig
from megatron_redi.platform.mcore_optimizer import chained_optimizers, inner_torch_optimizers
from megatron_redi.training.config import OptimizerArgs
from megatron_redi.training.optimizer import build_optimizer, use_fused_adam
from megatron_redi.training.setup import build_ddp_model
from tests.helpers_dist import TINY


def _model(parallel: ParallelConfig | None = None):
    from megatron_redi.model.provider import build_model

    shape = Qwen2Shape.from_hf(TINY)
    return build_ddp_model(lambda pre_process, post_process: build_model(shape, ModelBuildConfig()),
                           parallel or ParallelConfig())


def test_a_run_that_is_all_warmup_ramps_linearly_to_the_peak(megatron_world):
    cfg = OptimizerArgs(lr=1e-3, min_lr=1e-4, lr_warmup_fraction=1.0, lr_decay_style="linear")
    opt, sched = build_optimizer(cfg, [_model()], 4)
    got = []
    for _ in range(5):
        got.append(opt.param_groups[0]["lr"])
        sched.step(1)
    # warmup 4 steps of a 4-step run: 0, 1/4, 2/4, 3/4 of the peak; the peak itself right after the run
    assert got == pytest.approx([0.0, 2.5e-4, 5e-4, 7.5e-4, 1e-3], rel=1e-6, abs=1e-12)


def test_precision_reaches_megatron(megatron_world):
    opt, _ = build_optimizer(OptimizerArgs(), [_model()], 10)
    assert opt.config.bf16 is False and opt.config.params_dtype == torch.float32
    assert opt.config.use_distributed_optimizer is False
    opt, _ = build_optimizer(OptimizerArgs(), [_model()], 10, bf16=True)
    assert opt.config.bf16 is True and opt.config.params_dtype == torch.bfloat16


def test_distributed_optimizer_choice_reaches_megatron(megatron_world):
    parallel = ParallelConfig(use_distributed_optimizer=True)
    opt, _ = build_optimizer(OptimizerArgs(), [_model(parallel)], 10, use_distributed_optimizer=True)
    assert opt.config.use_distributed_optimizer is True
    assert {type(o).__name__ for o in chained_optimizers(opt)} == {"DistributedOptimizer"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU default")
def test_fused_adam_is_off_by_default_on_cpu(megatron_world):
    opt, _ = build_optimizer(OptimizerArgs(), [_model()], 10)
    for o in inner_torch_optimizers(opt):
        assert not o.defaults.get("fused")
        assert not any(g.get("fused") for g in o.param_groups)


def test_use_fused_adam_switches_every_adam_from_foreach_to_fused():
    p, q, r = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    sgd = torch.optim.SGD([p], lr=0.1)
    adam_w = torch.optim.AdamW([q], lr=0.1, foreach=True)
    adam = torch.optim.Adam([r], lr=0.1, foreach=True)
    chained = SimpleNamespace(chained_optimizers=[SimpleNamespace(optimizer=sgd), SimpleNamespace(optimizer=adam_w),
                                                  SimpleNamespace(optimizer=adam)])
    use_fused_adam(chained)
    for o in (adam_w, adam):  # an optimizer after a non-Adam one is switched too
        assert o.defaults["fused"] is True and o.defaults["foreach"] is False
        assert all(g["fused"] is True and g["foreach"] is False for g in o.param_groups)
    assert not sgd.param_groups[0].get("fused") and not sgd.defaults.get("fused")


class _TorchOnCuda:
    """torch as megatron_redi.training.optimizer sees it, on a machine that reports CUDA."""

    cuda = SimpleNamespace(is_available=lambda: True)

    def __getattr__(self, name):
        return getattr(torch, name)


@pytest.mark.parametrize("fused_adam,want", [(None, True), (False, False), (True, True)])
def test_fused_adam_default_is_on_where_cuda_is(megatron_world, monkeypatch, fused_adam, want):
    from megatron_redi.training import optimizer as optimizer_module

    model = _model()  # built before torch is swapped: only the fused-AdamW decision sees CUDA
    calls = []
    monkeypatch.setattr(optimizer_module, "torch", _TorchOnCuda())
    monkeypatch.setattr(optimizer_module, "use_fused_adam", calls.append)
    build_optimizer(OptimizerArgs(), [model], 10, fused_adam=fused_adam)
    assert bool(calls) is want
