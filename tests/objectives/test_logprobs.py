"""Chunked vocab-parallel log-probs and the full objective vs plain PyTorch on full logits."""

from __future__ import annotations

import pytest
import torch

from megatron_redi.data.batch import Example, pack
from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape
from megatron_redi.objectives.logprobs import BACKWARD_PATHS, vocab_parallel_logprobs
from megatron_redi.objectives.losses import ObjectiveConfig
from megatron_redi.objectives.objective import build_objective
from tests.helpers_dist import TINY


@pytest.mark.parametrize("chunk", [0, 1, 7, 64])  # 0: automatic (here one chunk: the budget holds it all)
@pytest.mark.parametrize("mode", ["recompute", "fused", "fused_mismatch"])
def test_chunked_logprobs_values_and_grads(megatron_world, chunk, mode):
    """recompute: plain backward. fused: gradients made in the forward from the announced per-token
    weights (the incoming gradient is 3x those weights). fused_mismatch: the announced weights are
    wrong, so the kernel must refuse (never return wrong gradients, never fall back silently)."""
    torch.manual_seed(0)
    s, b, h, v, true_v = 13, 2, 8, 40, 33  # last 7 vocab rows are padding
    hid = torch.randn(s, b, h, dtype=torch.float64, requires_grad=True)
    w = torch.randn(v, h, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, true_v, (s, b))
    g = torch.randn(s, b, dtype=torch.float64)
    g[:4] = 0.0  # a prompt-like stretch with no gradient
    announced = {"recompute": None, "fused": g / 3, "fused_mismatch": torch.randn(s, b, dtype=torch.float64)}[mode]

    got = vocab_parallel_logprobs(hid, w, labels, true_vocab_size=true_v, chunk_size=chunk,
                                  token_weights=announced)
    if mode == "fused_mismatch":
        with pytest.raises(RuntimeError, match="not a multiple of the token_weights"):
            (got * g).sum().backward()
        return
    (got * g).sum().backward()
    gh, gw = hid.grad.clone(), w.grad.clone()
    hid.grad = w.grad = None

    logits = (hid @ w.t())[..., :true_v]  # padded rows are not part of the vocabulary
    want = torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1)
    (want * g).sum().backward()
    assert torch.allclose(got.double(), want, atol=1e-5)
    assert torch.allclose(gh, hid.grad, atol=1e-5)
    assert torch.allclose(gw, w.grad, atol=1e-5)


def _model():
    from megatron_redi.model.provider import build_model

    shape = Qwen2Shape.from_hf(TINY)
    return build_model(shape, ModelBuildConfig(logprob_chunk_size=5), seed=3), shape


def _examples():
    g = torch.Generator().manual_seed(1)
    rnd = lambda n: torch.randint(3, 300, (n,), generator=g).tolist()
    return [Example(rnd(5), [rnd(7), rnd(4)], (-40.0, -35.0)), Example(rnd(3), [rnd(6), rnd(9)], (-50.0, -52.0))]


def _reference_sums(model, shape, exs):
    """Each trace alone through the model, full logits, plain log_softmax; no packing involved."""
    sums, lens = [], []
    for ex in exs:
        for comp in ex.completions:
            ids = torch.tensor([ex.prompt + comp])
            pos = torch.arange(ids.shape[1])[None]
            logits = model(ids, pos, None)[..., : shape.vocab_size].float()
            lp = torch.log_softmax(logits[0, :-1], -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
            sums.append(lp[len(ex.prompt) - 1 :].sum())
            lens.append(len(comp))
    return torch.stack(sums), torch.tensor(lens, dtype=torch.float32)


@pytest.mark.parametrize("loss_type", ["redi", "simpo", "dpo", "sft"])
def test_objective_matches_full_logits_reference(megatron_world, loss_type):
    model, shape = _model()
    exs = _examples()
    if loss_type == "sft":
        exs = [Example(e.prompt, [c]) for e in exs for c in e.completions]
    obj = build_objective(ObjectiveConfig(loss_type=loss_type, dpo_beta=0.1))
    mb = pack(exs)
    units = float(sum(len(c) for e in exs for c in e.completions)) if loss_type == "sft" else float(len(exs))
    # as the forward step does: linear objectives announce their per-token gradient
    before = dict(BACKWARD_PATHS)
    logp = model(mb.tokens, mb.position_ids, mb.segment_ids, labels=mb.labels,
                 token_weights=obj.token_weights(mb, units))
    loss, _ = obj.loss(logp, mb, units)
    loss.backward()
    path = "fused" if loss_type in ("sft", "redi") else "recompute"
    assert BACKWARD_PATHS[path] == before[path] + 1
    got_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    sums, lens = _reference_sums(model, shape, exs)
    if loss_type == "sft":
        want = -sums.sum() / units
    else:
        c, r = sums[0::2], sums[1::2]
        cl, rl = lens[0::2], lens[1::2]
        if loss_type == "redi":
            per = -c / cl + 0.8 * r / rl
        elif loss_type == "simpo":
            per = -torch.nn.functional.logsigmoid(2.0 * (c / cl - r / rl) - 1.0)
        else:
            refs = torch.tensor([x for e in exs for x in e.ref_logps])
            per = -torch.nn.functional.logsigmoid(0.1 * ((c - refs[0::2]) - (r - refs[1::2])))
        want = per.sum() / units
    want.backward()
    assert torch.allclose(loss, want, rtol=1e-5, atol=1e-6)
    for n, p in model.named_parameters():
        assert torch.allclose(got_grads[n], p.grad, rtol=1e-4, atol=1e-6), n
    model.zero_grad()


def test_redi_alpha_zero_is_sft_on_chosen(megatron_world):
    """alpha = 0: per-pair length-normalised NLL of the chosen trace only."""
    model, _ = _model()
    exs = _examples()
    mb = pack(exs)
    logp = model(mb.tokens, mb.position_ids, mb.segment_ids, labels=mb.labels)
    redi, _ = build_objective(ObjectiveConfig(loss_type="redi", redi_alpha=0.0)).loss(logp, mb, 2.0)
    redi.backward()
    g1 = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    total = 0.0
    for ex in exs:  # SFT on each chosen trace alone, per-sequence mean NLL, averaged over pairs
        one = pack([Example(ex.prompt, [ex.completions[0]])])
        lp = model(one.tokens, one.position_ids, one.segment_ids, labels=one.labels)
        sft, _ = build_objective(ObjectiveConfig(loss_type="sft")).loss(lp, one, float(len(ex.completions[0])))
        total = total + sft / 2
    total.backward()
    assert torch.allclose(redi, total, rtol=1e-6)
    for a, p in zip(g1, model.parameters()):
        assert torch.allclose(a, p.grad, rtol=1e-4, atol=1e-7)
    model.zero_grad()


def test_fused_gradients_survive_a_second_backward(megatron_world):
    """The fused path scales its stored gradients in place; a retained graph's second backward must
    recompute instead of reusing them."""
    torch.manual_seed(1)
    hid = torch.randn(9, 1, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(20, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 20, (9, 1))
    g = torch.randn(9, 1, dtype=torch.float64)
    out = vocab_parallel_logprobs(hid, w, labels, true_vocab_size=20, chunk_size=4, token_weights=g)
    (out * g * 2).sum().backward(retain_graph=True)
    first = w.grad.clone()
    (out * g * 2).sum().backward()
    assert torch.allclose(w.grad, 2 * first, atol=1e-10)


def test_auto_chunk_size_from_the_byte_budget():
    """Per logit: fp32 logits + the GEMM output and the gradient logits in the weight dtype. Qwen's
    151,936-row vocabulary in a 3 GiB budget: 2560 tokens in bf16 (8 B per logit), 1536 in fp32
    (12 B); rounded down to a multiple of 256, at least 256, never more than the tokens there are."""
    from megatron_redi.objectives.logprobs import LOGPROB_CHUNK_BUDGET_BYTES, auto_chunk_size

    assert LOGPROB_CHUNK_BUDGET_BYTES == 3 << 30
    assert auto_chunk_size(40000, 151936, torch.bfloat16) == 2560
    assert auto_chunk_size(40000, 151936, torch.float32) == 1536
    assert auto_chunk_size(40000, 151936 // 2, torch.bfloat16) == 5120  # TP2: half the vocab per rank
    assert auto_chunk_size(1000, 151936, torch.bfloat16) == 1000  # all of it in one chunk
    assert auto_chunk_size(40000, 151936, torch.bfloat16, budget_bytes=1) == 256
    assert auto_chunk_size(40000, 1000, torch.bfloat16, budget_bytes=8000 * 700) == 512


@pytest.mark.parametrize("mode", ["recompute", "fused"])
def test_auto_chunk_splits_when_the_budget_is_small(megatron_world, monkeypatch, mode):
    """chunk_size 0 with a budget of 300 rows' logits: 256-token chunks over 600 tokens (3 chunks,
    the last one short), bf16 weights with the fp32 weight-gradient accumulator (the in-place
    type-promoting add): values and gradients equal the full-logits reference in float64, to bf16's
    rounding."""
    from megatron_redi.objectives import logprobs

    torch.manual_seed(0)
    s, b, h, v = 300, 2, 16, 24
    monkeypatch.setattr(logprobs, "LOGPROB_CHUNK_BUDGET_BYTES", v * 8 * 300)
    assert logprobs.auto_chunk_size(s * b, v, torch.bfloat16) == 256
    hid = torch.randn(s, b, h).bfloat16().requires_grad_()
    w = (0.5 * torch.randn(v, h)).bfloat16().requires_grad_()
    labels = torch.randint(0, v, (s, b))
    g = torch.randn(s, b)
    calls = []
    real = logprobs._chunk_stats
    monkeypatch.setattr(logprobs, "_chunk_stats", lambda hh, *a: calls.append(hh.shape[0]) or real(hh, *a))
    got = vocab_parallel_logprobs(hid, w, labels, true_vocab_size=v, chunk_size=0,
                                  token_weights=g if mode == "fused" else None)
    (got * g).sum().backward()
    assert calls == [256, 256, 88]
    hid64 = hid.detach().double().requires_grad_()
    w64 = w.detach().double().requires_grad_()
    logits = hid64 @ w64.t()
    want = torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1)
    (want * g.double()).sum().backward()
    # the logits GEMM returns bf16 (one rounding, 2^-8 relative), the log-sum-exp and target logit each see it
    torch.testing.assert_close(got.double(), want.detach(), rtol=0, atol=2 * 2**-8 * float(logits.abs().max()))
    for name, a, ref in (("grad hidden", hid.grad, hid64.grad), ("grad weight", w.grad, w64.grad)):
        torch.testing.assert_close(a.double(), ref, rtol=2**-7, atol=2**-7 * float(ref.abs().max()), msg=name)


def test_negative_chunk_size_refused(megatron_world):
    with pytest.raises(ValueError, match="chunk_size must be >= 0"):
        vocab_parallel_logprobs(torch.randn(4, 1, 8), torch.randn(10, 8), torch.zeros(4, 1, dtype=torch.long),
                                true_vocab_size=10, chunk_size=-1)
