"""Memory-lean RMSNorm and SwiGLU: same numbers as the plain math and as `transformers`, less saved."""

from __future__ import annotations

import pytest
import torch

from megatron_redi.model.fused import fused_rms_norm


def _reference_rms_norm(x, w, eps):
    """Qwen2's RMSNorm exactly as `transformers` writes it."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(x.dtype)


def _saved_bytes(fn, params=()) -> tuple[int, list, torch.Tensor]:
    """Bytes autograd keeps for backward (each storage once, `params` not counted), the saved tensors'
    (shape, dtype), and fn's output."""
    storages, seen = {}, []
    skip = {p.untyped_storage().data_ptr() for p in params}

    def pack(t):
        if t.untyped_storage().data_ptr() in skip:
            return t
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        seen.append((tuple(t.shape), t.dtype))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(storages.values()), seen, out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_matches_plain_math(dtype):
    """Values and gradients against Qwen2's formula evaluated in float64 on the same inputs. fp32: 1e-5.
    bf16: the fused kernel computes in fp32 and rounds its results to bf16, at most two bf16 roundings
    (2^-7 relative) of each value, measured against the largest value of the tensor."""
    torch.manual_seed(0)
    x = (3 * torch.randn(5, 2, 48)).to(dtype).requires_grad_()
    w = (1 + 0.3 * torch.randn(48)).to(dtype).requires_grad_()
    g = torch.randn(5, 2, 48).to(dtype)
    got = fused_rms_norm(x, w, 1e-6)
    (got * g).sum().backward()
    x64 = x.detach().double().requires_grad_()
    w64 = w.detach().double().requires_grad_()
    want = _reference_rms_norm(x64, w64, 1e-6)
    (want * g.double()).sum().backward()
    assert got.dtype == dtype
    for name, a, b in (("out", got, want), ("grad x", x.grad, x64.grad), ("grad w", w.grad, w64.grad)):
        if dtype == torch.float32:
            torch.testing.assert_close(a.double(), b.detach(), rtol=1e-5, atol=1e-5, msg=name)
        else:
            torch.testing.assert_close(a.double(), b.detach(), rtol=2**-7, atol=2**-7 * float(b.abs().max()), msg=name)


def test_rms_norm_keeps_only_input_and_row_scale():
    """bf16 input of 64x256: the fused norm keeps the input (2 bytes per element) and one fp32 scale per
    row; the plain math keeps an fp32 copy and the normalised output instead (6 bytes per element)."""
    x = torch.randn(64, 256, dtype=torch.bfloat16, requires_grad=True)
    w = torch.nn.Parameter(torch.ones(256, dtype=torch.bfloat16))
    fused, seen, _ = _saved_bytes(lambda: fused_rms_norm(x, w, 1e-6))
    plain, _, _ = _saved_bytes(lambda: _reference_rms_norm(x, w, 1e-6))
    assert (tuple(x.shape), torch.bfloat16) in seen and ((64, 1), torch.float32) in seen
    assert fused == 64 * 256 * 2 + 64 * 4 + 256 * 2  # input, row scale, weight
    assert plain >= 64 * 256 * (4 + 2)
    assert fused < plain / 2.5


def test_swiglu_saves_only_its_input(megatron_world):
    """The MLP as our config builds it keeps fc1's output for SwiGLU and SwiGLU's output for fc2, nothing
    else of ffn size (the plain chain also keeps silu's input and output separately)."""
    from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape
    from megatron_redi.model.provider import build_model
    from tests.helpers_dist import TINY

    shape = Qwen2Shape.from_hf(TINY)
    mlp = build_model(shape, ModelBuildConfig(), seed=1).decoder.layers[0].mlp
    s, b, ffn = 16, 1, shape.intermediate_size
    x = torch.randn(s, b, shape.hidden_size, requires_grad=True)
    _, seen, _ = _saved_bytes(lambda: mlp(x)[0], list(mlp.parameters()))
    big = [sh for sh, _ in seen if sh[-1] in (ffn, 2 * ffn)]
    assert sorted(big) == sorted([(s * b, 2 * ffn), (s, b, ffn)]), seen


def test_model_gradients_match_transformers(megatron_world):
    """Whole model, same weights: per-token log-probs and every parameter gradient of a weighted
    log-likelihood equal those of `transformers` Qwen2ForCausalLM (fp32)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from megatron_redi.conversion.convert import copy_hf_weights
    from megatron_redi.conversion.hf_mapping import Dims, hf_from_megatron
    from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape
    from megatron_redi.model.provider import build_model

    torch.manual_seed(0)
    conf = Qwen2Config(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                       rope_theta=10000.0, tie_word_embeddings=True, rms_norm_eps=1e-6)
    hf = Qwen2ForCausalLM(conf).float()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if "norm" in name else 0.15 * torch.randn_like(p))
    shape = Qwen2Shape.from_hf(conf.to_dict())
    ours = build_model(shape, ModelBuildConfig(logprob_chunk_size=7), seed=5)
    copy_hf_weights(ours, hf.state_dict(), shape)

    tokens = torch.randint(0, 300, (2, 24))
    labels = torch.roll(tokens, -1, 1)
    weights = torch.randn(2, 24)
    pos = torch.arange(24).expand(2, 24)
    logp = ours(tokens, pos, None, labels=labels)  # [b, s] per-token log-probs
    (logp * weights).sum().backward()

    ref = torch.log_softmax(hf(tokens).logits.float(), -1).gather(-1, labels[..., None]).squeeze(-1)
    (ref * weights).sum().backward()
    torch.testing.assert_close(logp, ref, rtol=1e-5, atol=1e-5)

    want = {n: p.grad for n, p in hf.named_parameters()}
    d = Dims.from_shape(shape)
    checked = set()
    for name, p in ours.named_parameters():
        for hf_name, g in hf_from_megatron(name, p.grad, d):
            torch.testing.assert_close(g, want[hf_name], rtol=1e-4, atol=1e-5, msg=hf_name)
            checked.add(hf_name)
    assert checked == set(want)


def test_gpu_kernels_compiled_unless_triton_missing(monkeypatch):
    """On CUDA the norm's math goes through torch.compile; without triton it falls back, with a warning,
    to the same eager math CPU uses. (Only the selection is checked here: nothing is compiled.)"""
    import importlib.util

    from megatron_redi.model import fused

    real_find = importlib.util.find_spec
    for has_triton in (True, False):
        fused._kernels.cache_clear()
        def find_spec(name, *a, _has=has_triton):
            return (object() if _has else None) if name == "triton" else real_find(name, *a)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)
        if has_triton:
            fwd, bwd = fused._kernels("cuda")
            assert fwd is not fused._rms_forward and bwd is not fused._rms_backward
        else:
            with pytest.warns(UserWarning, match="triton"):
                assert fused._kernels("cuda") == (fused._rms_forward, fused._rms_backward)
    fused._kernels.cache_clear()
    assert fused._kernels("cpu") == (fused._rms_forward, fused._rms_backward)
