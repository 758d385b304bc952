"""The fused AdamW switch: torch's fused kernel really runs, and gives torch's default AdamW numbers."""

from __future__ import annotations

import pytest
import torch

from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape
from megatron_redi.platform.distributed import ParallelConfig
from megatron_redi.platform.mcore_optimizer import inner_torch_optimizers
from megatron_redi.training.config import OptimizerArgs
from megatron_redi.training.optimizer import build_optimizer
from megatron_redi.training.setup import build_ddp_model
from tests.helpers_dist import TINY


def _train(fused: bool, bf16: bool, steps: int = 3):
    from megatron_redi.model.provider import build_model

    cfg = OptimizerArgs(lr=1e-2, weight_decay=0.1, clip_grad=1.0)
    shape = Qwen2Shape.from_hf(TINY)
    model = build_ddp_model(lambda pre_process, post_process: build_model(shape, ModelBuildConfig(bf16=bf16)),
                            ParallelConfig())
    opt, sched = build_optimizer(cfg, [model], steps, bf16=bf16, fused_adam=fused)
    g = torch.Generator().manual_seed(7)
    for _ in range(steps):
        for p in model.parameters():
            p.main_grad.copy_(torch.randn(p.shape, generator=g))
        sched.step(1)
        ok, _, _ = opt.step()
        assert ok
    # what AdamW updated: fp32 main params under bf16 (the bf16 copies round them), and its moments
    out = {}
    for i, o in enumerate(inner_torch_optimizers(opt)):
        for j, group in enumerate(o.param_groups):
            for k, p in enumerate(group["params"]):
                out[f"{i}.{j}.{k}"] = p.detach().clone()
                out[f"{i}.{j}.{k}.exp_avg_sq"] = o.state[p]["exp_avg_sq"].clone()
    return opt, out


@pytest.mark.parametrize("bf16", [False, True])
def test_fused_adam_matches_default(megatron_world, monkeypatch, bf16):
    import torch.optim.adam as adam_mod

    calls = []
    real = adam_mod._fused_adam
    monkeypatch.setattr(adam_mod, "_fused_adam", lambda *a, **k: calls.append(1) or real(*a, **k))

    opt, fused = _train(fused=True, bf16=bf16)
    assert calls, "torch's fused AdamW kernel did not run"
    assert all(g["fused"] for o in inner_torch_optimizers(opt) for g in o.param_groups)
    calls.clear()
    _, default = _train(fused=False, bf16=bf16)
    assert not calls
    assert fused.keys() == default.keys()
    moved = 0
    for name in fused:
        torch.testing.assert_close(fused[name], default[name], rtol=1e-5, atol=1e-6, msg=name)
        moved += 1
    assert moved > 20
