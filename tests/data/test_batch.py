"""Packing, CP slicing, tokenisation boundary and sampler order."""

from __future__ import annotations

import torch

from megatron_redi.data.batch import Example, pack
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


def test_keep_end_truncation_is_counted():
    tok = load_tokenizer(TINY)
    enc = ChatEncoder(tok, TokenizeConfig(seq_length=10, max_prompt_length=4))
    p = enc.encode_prompt([{"role": "user", "content": "What is 123 + 456 and why is it so?"}])
    assert len(p) == 4 and enc.stats.prompts_truncated == 1
    fp, fc = enc.fit(p, list(range(100, 109)))
    assert len(fp) + len(fc) == 10 and fc[-1] == 108  # the end is kept
    assert enc.stats.sequences_truncated == 1


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

