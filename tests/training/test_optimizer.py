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


def _built(argv_extra: list[str]):
    """The optimizer the trainer builds from its own command line."""
    from megatron_redi.model.provider import build_model
    from megatron_redi.training.arguments import parse_args

    cfg = parse_args(["--model-config", str(TINY), "--tokenizer-model", str(TINY), "--data-path", "x.jsonl",
                      "--train-iters", "10", *argv_extra])
    shape = Qwen2Shape.from_hf(TINY)
    model = build_ddp_model(lambda pre_process, post_process: build_model(shape, ModelBuildConfig()),
                            cfg.parallel)
    opt, _ = build_optimizer(cfg.optimizer, [model], 10, bf16=cfg.model.bf16,
                             use_distributed_optimizer=cfg.parallel.use_distributed_optimizer)
    return model, opt


@pytest.mark.parametrize("extra,want", [
    ([], dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4, clip=1.0)),  # the paper's AdamW (REDI.md)
    (["--adam-beta1", "0.8", "--adam-beta2", "0.95", "--adam-eps", "1e-6", "--weight-decay", "0.01",
      "--clip-grad", "0.5"], dict(betas=(0.8, 0.95), eps=1e-6, weight_decay=0.01, clip=0.5)),
])
def test_optimizer_settings_reach_adamw(megatron_world, extra, want):
    model, opt = _built(extra)
    assert opt.config.clip_grad == want["clip"]
    seen = {"matrix": 0, "vector": 0}
    for o in inner_torch_optimizers(opt):
        assert isinstance(o, torch.optim.AdamW) and o.defaults["decoupled_weight_decay"]
        for g in o.param_groups:
            assert (g["betas"], g["eps"]) == (want["betas"], want["eps"])
            for p in g["params"]:
                # biases and norm weights are not decayed (Megatron's and HF Trainer's convention)
                kind = "matrix" if p.ndim > 1 else "vector"
                assert g["weight_decay"] == (want["weight_decay"] if kind == "matrix" else 0.0), p.shape
                seen[kind] += 1
    assert seen["matrix"] > 5 and seen["vector"] > 5


@pytest.mark.parametrize("clip", ["1.0", "0"])
def test_gradients_are_clipped_to_clip_grad(megatron_world, clip):
    model, opt = _built(["--clip-grad", clip])
    g = torch.Generator().manual_seed(3)
    grads = {}
    for n, p in model.named_parameters():
        grads[n] = torch.randn(p.shape, generator=g) * 10
        p.main_grad.copy_(grads[n])
    want_norm = torch.sqrt(sum((x.double() ** 2).sum() for x in grads.values())).item()
    ok, grad_norm, _ = opt.step()
    assert ok and abs(grad_norm - want_norm) < 1e-6 * want_norm  # reported before clipping
    after = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters())).item()
    expect = float(clip) if float(clip) > 0 else want_norm  # --clip-grad 0 turns clipping off
    assert abs(after - expect) < 1e-5 * expect, (after, expect)
