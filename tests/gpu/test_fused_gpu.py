"""GPU-only kernels against their plain-PyTorch references, values and gradients (run by
scripts/device_bench.sh on a lent GPU; skipped elsewhere, with the reason): Liger's RMSNorm and
SwiGLU as `--liger-kernels` wires them, our torch.compile'd RMSNorm, the chunked log-prob kernel in
bf16 with the automatic chunk size, and the whole model with every fusion against the unfused one."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (GPU-only kernels)")


def _need_liger():
    from megatron_redi.model.liger import liger_unavailable_reason

    reason = liger_unavailable_reason()
    if reason:
        pytest.skip(reason)


def _close(a, b, name, rel=2**-7):
    """bf16 tolerance: a few roundings of 2^-8, relative to the largest reference value."""
    torch.testing.assert_close(a.double(), b.double(), rtol=rel, atol=rel * float(b.abs().max()), msg=name)


def _reference_rms_norm(x, w, eps):
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(x.dtype)


class _Cfg:
    normalization, sequence_parallel, layernorm_zero_centered_gamma = "RMSNorm", False, False
    params_dtype = torch.bfloat16


@pytest.mark.parametrize("kernel", ["liger", "compiled"])
def test_rms_norm_matches_reference(kernel):
    torch.manual_seed(0)
    x = (3 * torch.randn(512, 2, 1536, device="cuda")).bfloat16().requires_grad_()
    g = torch.randn_like(x)
    if kernel == "liger":
        _need_liger()
        from megatron_redi.model.liger import liger_rms_norm_class

        norm = liger_rms_norm_class()(_Cfg(), 1536, eps=1e-6).cuda()
        assert norm.weight.dtype == torch.bfloat16
        with torch.no_grad():
            norm.weight.copy_(1 + 0.3 * torch.randn(1536))
        w = norm.weight
        fn = norm
    else:
        from megatron_redi.model.fused import fused_rms_norm

        w = (1 + 0.3 * torch.randn(1536, device="cuda")).bfloat16().requires_grad_()
        fn = lambda t: fused_rms_norm(t, w, 1e-6)  # noqa: E731
    out = fn(x)
    (out.float() * g.float()).sum().backward()
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    want = _reference_rms_norm(x64, w64, 1e-6)
    (want * g.double()).sum().backward()
    _close(out, want, "out")
    _close(x.grad, x64.grad, "grad x")
    _close(w.grad, w64.grad, "grad w", rel=2**-6)  # a sum over 1024 rows


def test_liger_swiglu_matches_megatron(megatron_world):
    _need_liger()
    from megatron.core.fusions.fused_bias_swiglu import bias_swiglu_impl
    from megatron.core.transformer import mlp as mlp_module

    from megatron_redi.model.liger import liger_swiglu_mlp_class

    cls = liger_swiglu_mlp_class()
    assert mlp_module.bias_swiglu_impl is bias_swiglu_impl
    torch.manual_seed(0)
    y = torch.randn(256, 2, 2 * 1024, device="cuda").bfloat16().requires_grad_()
    g = torch.randn(256, 2, 1024, device="cuda").bfloat16()
    from liger_kernel.megatron import LigerMegatronSwiGLU

    out = LigerMegatronSwiGLU(fallback_impl=bias_swiglu_impl)(y)
    (out * g).float().sum().backward()
    y64 = y.detach().double().requires_grad_()
    a, b = y64.chunk(2, -1)
    want = torch.nn.functional.silu(a) * b
    (want * g.double()).sum().backward()
    _close(out, want, "out")
    _close(y.grad, y64.grad, "grad")
    assert cls.__name__ == "LigerSwiGLUMLP"


def test_logprob_kernel_bf16_auto_chunk(megatron_world):
    from megatron_redi.objectives.logprobs import auto_chunk_size, vocab_parallel_logprobs

    torch.manual_seed(0)
    s, h, v = 3000, 256, 151936
    hid = (torch.randn(s, 1, h, device="cuda") / 4).bfloat16().requires_grad_()
    w = (torch.randn(v, h, device="cuda") / 16).bfloat16().requires_grad_()
    labels = torch.randint(0, v, (s, 1), device="cuda")
    g = torch.randn(s, 1, device="cuda")
    assert auto_chunk_size(s, v, torch.bfloat16) == 2560  # two chunks here
    for tw in (None, g):
        hid.grad = w.grad = None
        got = vocab_parallel_logprobs(hid, w, labels, true_vocab_size=v, chunk_size=0, token_weights=tw)
        (got * g).sum().backward()
        logits = hid.detach().float() @ w.detach().float().t()
        hf, wf = hid.detach().float().requires_grad_(), w.detach().float().requires_grad_()
        want = torch.log_softmax(hf @ wf.t(), -1).gather(-1, labels[..., None]).squeeze(-1)
        (want * g).sum().backward()
        torch.testing.assert_close(got, want.detach(), rtol=0, atol=2 * 2**-8 * float(logits.abs().max()))
        _close(hid.grad, hf.grad, "grad hidden", rel=2**-6)
        _close(w.grad, wf.grad, "grad weight", rel=2**-6)


def test_fused_model_equals_unfused(megatron_world):
    """1.5B-wide layers (2 of them), bf16, same weights, two packed documents: the model with Liger's
    RMSNorm and SwiGLU equals the one with our RMSNorm and megatron's SwiGLU, in per-token log-probs and
    every parameter gradient, to bf16 tolerance."""
    _need_liger()
    from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape
    from megatron_redi.model.provider import build_model

    shape = Qwen2Shape.from_hf(dict(vocab_size=4096, hidden_size=1536, intermediate_size=8960,
                                    num_hidden_layers=2, num_attention_heads=12, num_key_value_heads=2,
                                    model_type="qwen2", tie_word_embeddings=True, rope_theta=300000.0))
    plain = build_model(shape, ModelBuildConfig(bf16=True), seed=7)
    fused = build_model(shape, ModelBuildConfig(bf16=True, liger_kernels=("rms_norm", "swiglu")), seed=7)
    assert type(fused.decoder.final_layernorm).__name__ == "LigerRMSNorm"
    fused.load_state_dict(plain.state_dict())
    torch.manual_seed(0)
    s = 1024
    tokens = torch.randint(0, shape.vocab_size, (1, s), device="cuda")
    labels = torch.roll(tokens, -1, 1)
    pos = torch.cat([torch.arange(600), torch.arange(s - 600)]).cuda()[None]
    seg = torch.cat([torch.zeros(600), torch.ones(s - 600)]).long().cuda()[None]  # two documents
    weights = torch.randn(1, s, device="cuda")
    outs = []
    for m in (plain, fused):
        logp = m(tokens, pos, seg, labels=labels)
        (logp * weights).sum().backward()
        outs.append((logp.detach(), {n: p.grad.detach().clone() for n, p in m.named_parameters()}))
    (a, ga), (b, gb) = outs
    torch.testing.assert_close(b, a, rtol=0, atol=0.05)
    assert ga.keys() == gb.keys()
    for n in ga:
        _close(gb[n], ga[n], n, rel=2**-5)
