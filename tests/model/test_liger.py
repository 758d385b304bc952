"""`--liger-kernels`: refused with its reason where it cannot run (CPU, TE, unknown names), and when it
can, the local spec's norms and MLP are Liger's. liger-kernel is never installed on CPU: the wiring is
checked here against stand-in classes; tests/gpu compares the real kernels with the plain math."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from megatron_redi.model import liger, specs


def test_refused_without_cuda_naming_the_reason():
    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    assert "CUDA" in liger.liger_unavailable_reason()
    with pytest.raises(RuntimeError, match="--liger-kernels rms_norm: Liger-Kernel's Triton kernels need CUDA"):
        liger.check_liger_request(("rms_norm",), "local")
    liger.check_liger_request((), "local")  # nothing asked, nothing checked


def test_refused_with_te_and_unknown_names():
    with pytest.raises(RuntimeError, match="local spec only"):
        liger.check_liger_request(("swiglu",), "transformer_engine")
    with pytest.raises(ValueError, match=r"unknown kernel\(s\) \['rope'\]"):
        liger.check_liger_request(("rope",), "local")


def test_build_model_refuses_on_cpu(megatron_world):
    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape
    from megatron_redi.model.provider import build_model
    from tests.helpers_dist import TINY

    with pytest.raises(RuntimeError, match="need CUDA"):
        build_model(Qwen2Shape.from_hf(TINY), ModelBuildConfig(liger_kernels=("swiglu",)))


@pytest.fixture
def fake_liger(monkeypatch):
    """A stand-in `liger_kernel.megatron` (the real one needs CUDA): records what the spec builds."""
    calls = []

    class LigerMegatronRMSNorm(torch.nn.Module):
        def __init__(self, config, hidden_size, eps=1e-5, **kw):
            super().__init__()
            self.eps = eps
            self.weight = torch.nn.Parameter(torch.ones(hidden_size))
            self.weight.sequence_parallel = bool(config.sequence_parallel)

    class LigerMegatronSwiGLU(torch.nn.Module):
        def __init__(self, fallback_impl=None, in_place=False):
            super().__init__()
            self.fallback = fallback_impl

        def forward(self, x, bias=None, fp8_input_store=False, cpu_offload_input=False):
            calls.append(tuple(x.shape))
            return self.fallback(x, bias, fp8_input_store, cpu_offload_input)

    pkg = types.ModuleType("liger_kernel")
    mod = types.ModuleType("liger_kernel.megatron")
    mod.LigerMegatronRMSNorm, mod.LigerMegatronSwiGLU = LigerMegatronRMSNorm, LigerMegatronSwiGLU
    monkeypatch.setitem(sys.modules, "liger_kernel", pkg)
    monkeypatch.setitem(sys.modules, "liger_kernel.megatron", mod)
    return calls


def test_spec_uses_liger_modules_and_swaps_swiglu_only_inside_its_mlp(megatron_world, fake_liger):
    """rms_norm: every norm (both per layer and the final one) is Liger's, weight in the model's dtype.
    swiglu: the MLP calls Liger's SwiGLU during its own forward; megatron's module global is restored
    afterwards (another model in the process keeps megatron's). Outputs equal the plain spec's here
    because the stand-in falls back to megatron's kernel."""
    from megatron.core.transformer import mlp as mlp_module

    from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape
    from megatron_redi.model.provider import build_model
    from tests.helpers_dist import TINY

    native = mlp_module.bias_swiglu_impl
    shape = Qwen2Shape.from_hf(TINY)
    spec = specs.layer_spec("local", ("rms_norm", "swiglu"))
    assert spec.submodules.input_layernorm.__name__ == "LigerRMSNorm"
    assert spec.submodules.mlp.module.__name__ == "LigerSwiGLUMLP"
    assert specs.layer_spec("local").submodules.mlp.module is mlp_module.MLP

    import megatron_redi.model.liger as lg

    real_check = lg.check_liger_request
    import megatron_redi.model.provider as provider

    provider.check_liger_request = lambda kernels, impl: None  # the stand-in "is" available
    try:
        fused = build_model(shape, ModelBuildConfig(bf16=True, liger_kernels=("rms_norm", "swiglu")), seed=1)
        plain = build_model(shape, ModelBuildConfig(bf16=True), seed=1)
    finally:
        provider.check_liger_request = real_check
    layer = fused.decoder.layers[0]
    assert type(layer.input_layernorm).__name__ == "LigerRMSNorm"
    assert type(fused.decoder.final_layernorm).__name__ == "LigerRMSNorm"
    assert layer.input_layernorm.weight.dtype == torch.bfloat16
    assert type(plain.decoder.final_layernorm).__name__ == "RMSNorm"
    x = torch.randn(8, 1, shape.hidden_size, dtype=torch.bfloat16)
    out = layer.mlp(x)[0]
    assert fake_liger == [(8, 1, 2 * shape.intermediate_size)]
    assert mlp_module.bias_swiglu_impl is native
    torch.testing.assert_close(out, plain.decoder.layers[0].mlp(x)[0])
    assert len(fake_liger) == 1  # the plain model's MLP did not go through Liger
