"""Packing, CP slicing, tokenisation boundary and sampler order."""

from __future__ import annotations

import pytest
import torch

from megatron_redi.data.batch import Example, pack, thd_cp_positions
from megatron_redi.data.dataset import make_micro_batches, pad_multiple
from megatron_redi.data.sampler import GlobalBatchSampler
from megatron_redi.data.tokenize import ChatEncoder, TokenizeConfig, load_tokenizer
from tests.helpers_dist import TINY


def test_pack_layout():
    ex = [Example([1, 2, 3], [[4, 5], [6]]), Example([7], [[8, 9, 10]])]
    mb = pack(ex, pad_to_multiple=8, pad_id=0)
    assert mb.tokens.tolist() == [[1, 2, 3, 4, 5, 1, 2, 3, 6, 7, 8, 9, 10, 0, 0, 0]]
    # label t = token t+1 inside a document; the mask marks labels that are completion tokens
    assert mb.labels[0, :5].tolist() == [2, 3, 4, 5, 0]
    assert mb.loss_mask[0].tolist() == [0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 1, 1, 0, 0, 0, 0]
    assert mb.position_ids[0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2]
    assert mb.segment_ids[0].tolist() == [0] * 5 + [1] * 4 + [2] * 4 + [-1] * 3
    assert mb.doc_pair.tolist() == [0, 0, 1]
    assert mb.doc_is_chosen.tolist() == [True, False, True]
    assert mb.doc_lengths.tolist() == [2, 1, 3]
    # every completion token is counted exactly once
    assert mb.loss_mask.sum().item() == 6
    assert mb.num_real_tokens == 13


def test_pairs_never_split_across_micro_batches():
    exs = [Example([1], [[2, 3], [4]]) for _ in range(5)]
    for mbs in (1, 2, 3):
        for mb in make_micro_batches(exs, mbs, 1):
            assert mb.doc_is_chosen.tolist() == [True, False] * mb.num_units
            assert mb.doc_pair.tolist() == [u for u in range(mb.num_units) for _ in (0, 1)]


def test_cp_slice_is_megatron_load_balanced_order():
    mb = pack([Example(list(range(1, 6)), [list(range(6, 13))])], pad_to_multiple=pad_multiple(1, 2, False))
    s = mb.tokens.shape[1]
    assert s % 4 == 0
    c = s // 4
    full = mb.tokens[0].tolist()
    r0 = mb.slice_for_cp(0, 2).tokens[0].tolist()
    r1 = mb.slice_for_cp(1, 2).tokens[0].tolist()
    assert r0 == full[:c] + full[3 * c :]
    assert r1 == full[c : 2 * c] + full[2 * c : 3 * c]
    assert pad_multiple(2, 2, True) == 4 and pad_multiple(4, 3, True) == 12 and pad_multiple(2, 1, False) == 1


def _brute_thd_positions(padded, cp, r):
    """Transformer Engine's THD split spelled out: each document cut into 2*cp equal chunks."""
    out, start = [], 0
    for n in padded:
        chunks = [list(range(start + i * n // (2 * cp), start + (i + 1) * n // (2 * cp))) for i in range(2 * cp)]
        out += chunks[r] + chunks[2 * cp - 1 - r]
        start += n
    return out


@pytest.mark.parametrize("cp,local_multiple", [(2, 1), (3, 1), (2, 4)])
def test_per_document_cp_split(cp, local_multiple):
    """Every real token lands on exactly one rank, once; pads are masked tokens of their own document;
    shares are equal (and a multiple of local_multiple); per-document masked sums over ranks equal the
    unsplit ones; the boundaries are the documents' own, padded to multiples of 2*cp."""
    g = torch.Generator().manual_seed(cp)
    rnd = lambda n: torch.randint(3, 300, (n,), generator=g).tolist()
    mb = pack([Example(rnd(5), [rnd(7), rnd(4)]), Example(rnd(3), [rnd(9), rnd(2)])], pad_to_multiple=4)
    n = mb.tokens.shape[1]
    mb.position_ids = torch.arange(n)[None] + 1000  # tags where each token came from; pads get offsets < 1000
    value = torch.randn(n, generator=g, dtype=torch.float64)
    want = torch.zeros(5, dtype=torch.float64).index_add_(0, mb.segment_ids[0] + 1, value * mb.loss_mask[0])
    seen, got, shares = [], torch.zeros(5, dtype=torch.float64), set()
    for r in range(cp):
        part = mb.slice_for_cp(r, cp, per_document=True, local_multiple=local_multiple)
        real = part.position_ids[0] >= 1000  # pads carry their offset inside the document instead
        src = part.position_ids[0][real] - 1000
        seen += src.tolist()
        assert torch.equal(part.tokens[0][real], mb.tokens[0, src])
        assert torch.equal(part.segment_ids[0][real], mb.segment_ids[0, src])
        assert (part.loss_mask[0][~real] == 0).all() and (part.tokens[0][~real] == 0).all()
        local_value = torch.zeros(part.tokens.shape[1], dtype=torch.float64)
        local_value[real] = value[src]
        got.index_add_(0, part.segment_ids[0] + 1, local_value * part.loss_mask[0])
        shares.add(part.tokens.shape[1])
        assert part.tokens.shape[1] % local_multiple == 0
        lengths = (part.cu_seqlens_padded[1:] - part.cu_seqlens_padded[:-1]).tolist()
        assert all(x % (2 * cp) == 0 for x in lengths)
        # this rank's positions in the padded row are TE's chunks r and 2cp-1-r of every document
        assert thd_cp_positions(lengths, cp, r).tolist() == _brute_thd_positions(lengths, cp, r)
    assert sorted(seen) == list(range(n)) and len(shares) == 1
    torch.testing.assert_close(got, want)
    runs = [0] + [i for i in range(1, n) if mb.segment_ids[0, i] != mb.segment_ids[0, i - 1]] + [n]
    assert part.cu_seqlens.tolist() == runs


def test_completion_is_assistant_turn_plus_eos():
    tok = load_tokenizer(TINY)
    enc = ChatEncoder(tok, TokenizeConfig(seq_length=4096))
    prompt = [{"role": "user", "content": "What is 2+2?"}]
    comp = [{"role": "assistant", "content": "It is \\boxed{4}."}]
    p_ids = enc.encode_prompt(prompt)
    c_ids = enc.encode_completion(prompt, comp)
    assert tok.decode(p_ids).endswith("<|im_start|>assistant\n")
    assert "Please reason step by step" in tok.decode(p_ids)  # Qwen2.5-Math default system prompt
    assert tok.decode(c_ids) == "It is \\boxed{4}.<|im_end|>\n" + tok.eos_token
    enc2 = ChatEncoder(tok, TokenizeConfig(seq_length=4096, system_prompt="Be brief."))
    assert "Be brief." in tok.decode(enc2.encode_prompt(prompt))


def test_length_policy_skips_by_default_and_truncation_keeps_prompt_and_completion_start():
    tok = load_tokenizer(TINY)
    enc = ChatEncoder(tok, TokenizeConfig(seq_length=10, max_prompt_length=4))
    p = enc.encode_prompt([{"role": "user", "content": "What is 123 + 456 and why is it so?"}])
    assert len(p) == 4 and enc.stats.prompts_truncated == 1
    c = list(range(100, 109))
    assert enc.fit(p, c) is None and enc.fit(p, c[:6]) == c[:6]  # 4 + 9 > 10: skipped; 4 + 6 fits
    assert enc.stats.sequences_truncated == 0
    enc = ChatEncoder(tok, TokenizeConfig(seq_length=10, truncate_long_examples=True, min_completion_tokens=3))
    assert enc.fit(p, c) == c[:6]  # the prompt stays whole, the completion keeps its first tokens
    assert enc.stats.sequences_truncated == 1
    assert enc.fit(list(range(8)), c) is None  # 2 tokens of room < --min-completion-tokens 3


def test_sampler_resume_and_dp_sharding():
    a = GlobalBatchSampler(10, 4, 0, 2, seed=3)
    b = GlobalBatchSampler(10, 4, 1, 2, seed=3)
    whole = GlobalBatchSampler(10, 4, 0, 1, seed=3)
    seen = []
    for consumed in range(0, 20, 4):
        g = whole.global_indices(consumed)
        assert a.local_indices(consumed) + b.local_indices(consumed) == g
        seen += g
    # two epochs, each a permutation of the data, different orders
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert seen[:10] != seen[10:20]
    # a fresh sampler resumed at consumed=8 yields what the uninterrupted one did
    assert GlobalBatchSampler(10, 4, 0, 1, seed=3).global_indices(8) == seen[8:12]
    torch.manual_seed(0)

