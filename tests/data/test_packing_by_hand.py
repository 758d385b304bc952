"""Packing, micro-batching, bin packing and CP splits against layouts worked out by hand.

Written against the survivors of mutation testing (docs/MUTATION.md): defaults, exact micro-batch
contents (not only their structure), DPO reference log-probs, the THD split's extra padding of the last
document, and the int32 boundaries Transformer Engine reads.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from megatron_redi.data.batch import Example, MicroBatch, pack, thd_cp_positions
from megatron_redi.data.dataset import first_fit_decreasing, make_micro_batches, make_packed_micro_batches, pad_multiple

THD_MESSAGE = "the per-document (THD) CP split needs one packed row per micro-batch"


# ---- pack --------------------------------------------------------------------------------------

def test_pack_defaults_add_no_padding_and_end_documents_with_label_zero():
    mb = pack([Example([1, 2], [[3]]), Example([4], [[5, 6, 7]])])  # 7 tokens: no padding at all
    assert mb.tokens.tolist() == [[1, 2, 3, 4, 5, 6, 7]]
    assert mb.labels.tolist() == [[2, 3, 0, 5, 6, 7, 0]]  # the last label of a document is pad id 0
    assert mb.segment_ids.tolist() == [[0, 0, 0, 1, 1, 1, 1]]


def test_pack_carries_the_reference_logprobs_per_document():
    mb = pack([Example([1], [[2], [3]], (-1.5, -2.5)), Example([4], [[5], [6]], (-3.5, -4.5))])
    assert mb.ref_logps.tolist() == [-1.5, -2.5, -3.5, -4.5]  # c0, r0, c1, r1: row order
    assert mb.ref_logps.dtype == torch.float32
    assert pack([Example([1], [[2], [3]])]).ref_logps is None  # no references: None, not empty


def test_pack_dtypes_are_fixed_whatever_the_default_dtype():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        mb = pack([Example([1], [[2], [3]], (-1.0, -2.0))], pad_to_multiple=8)
    finally:
        torch.set_default_dtype(old)
    assert mb.doc_lengths.dtype == torch.float32 and mb.ref_logps.dtype == torch.float32
    assert mb.loss_mask.dtype == torch.float32
    assert mb.tokens.dtype == mb.labels.dtype == mb.position_ids.dtype == mb.segment_ids.dtype == torch.long
    assert mb.doc_pair.dtype == torch.long and mb.doc_is_chosen.dtype == torch.bool


def test_micro_batch_to_moves_every_tensor_and_keeps_the_rest():
    mb = pack([Example([1], [[2], [3]], (-1.0, -2.0))], pad_to_multiple=8)
    moved = mb.to("meta")  # a device that is not the CPU, available everywhere
    assert isinstance(moved, MicroBatch)
    for name in ("tokens", "labels", "loss_mask", "position_ids", "segment_ids", "doc_pair", "doc_is_chosen",
                 "doc_lengths", "ref_logps"):
        t = getattr(moved, name)
        assert t.device.type == "meta" and t.shape == getattr(mb, name).shape and t.dtype == getattr(mb, name).dtype
    assert (moved.num_units, moved.num_real_tokens, moved.cu_seqlens) == (1, 4, None)
    back = pack([Example([1], [[2], [3]])]).to("cpu")
    assert back.tokens.tolist() == [[1, 2, 1, 3]] and back.ref_logps is None


# ---- micro-batches and bins ---------------------------------------------------------------------------

def _units(mbs):
    """The first completion token of each unit, per micro-batch (each unit's tokens are unique)."""
    return [[int(mb.tokens[0, i]) for i in range(mb.tokens.shape[1])
             if mb.doc_is_chosen[int(mb.segment_ids[0, i])] and mb.position_ids[0, i] == 1
             and mb.segment_ids[0, i] >= 0] for mb in mbs]


def test_make_micro_batches_takes_consecutive_groups_in_order():
    exs = [Example([0], [[10 + u], [20 + u]]) for u in range(5)]
    mbs = make_micro_batches(exs, 2, 1)
    assert [mb.num_units for mb in mbs] == [2, 2, 1]
    assert _units(mbs) == [[10, 11], [12, 13], [14]]
    assert mbs[0].tokens.tolist() == [[0, 10, 0, 20, 0, 11, 0, 21]]


def test_micro_batches_pad_with_the_given_pad_id():
    exs = [Example([1], [[2, 3]]), Example([4], [[5]])]
    mbs = make_micro_batches(exs, 2, 8, pad_id=7)
    assert mbs[0].tokens.tolist() == [[1, 2, 3, 4, 5, 7, 7, 7]]
    assert mbs[0].labels.tolist() == [[2, 3, 7, 5, 7, 7, 7, 7]]
    assert make_micro_batches(exs, 2, 8)[0].tokens.tolist() == [[1, 2, 3, 4, 5, 0, 0, 0]]  # default pad 0
    packed, _ = make_packed_micro_batches(exs, 8, 8, pad_id=7)
    assert packed[0].tokens.tolist() == [[1, 2, 3, 4, 5, 7, 7, 7]]
    packed, _ = make_packed_micro_batches(exs, 8, 8)
    assert packed[0].tokens.tolist() == [[1, 2, 3, 4, 5, 0, 0, 0]]


def test_first_fit_decreasing_places_the_large_units_first():
    # input-order first fit needs 3 bins ([4, 4], [6], [6]); decreasing order fits 2: [6, 4], [6, 4]
    assert first_fit_decreasing([4, 4, 6, 6], 10) == [[0, 2], [1, 3]]
    assert first_fit_decreasing([], 10) == []


def test_packed_micro_batches_efficiency_by_hand():
    exs = [Example([1], [[2, 3, 4]]), Example([5], [[6]]), Example([7], [[8, 9]])]  # 4, 2 and 3 tokens
    mbs, eff = make_packed_micro_batches(exs, 6, 1)
    # bins: [4, 2] and [3] -> 9 real tokens in 2 bins of 6
    assert [mb.num_real_tokens for mb in mbs] == [6, 3]
    assert eff == pytest.approx(9 / 12)
    assert make_packed_micro_batches([], 6, 1) == ([], 1.0)


def test_pad_multiple_is_an_int_that_pack_can_use():
    for tp, cp, sp, want in [(4, 3, True, 12), (2, 2, True, 4), (3, 2, True, 12), (4, 1, True, 4), (4, 2, False, 4)]:
        got = pad_multiple(tp, cp, sp)
        assert got == want and isinstance(got, int)
    mb = pack([Example([1], [[2]])], pad_to_multiple=pad_multiple(4, 3, True))
    assert mb.tokens.shape == (1, 12)


# ---- CP splits ------------------------------------------------------------------------------------------

def test_row_split_is_the_default_and_needs_a_multiple_of_two_cp():
    mb = pack([Example([1, 2], [[3]]), Example([4], [[5, 6, 7]])], pad_to_multiple=8)  # 8 tokens, 2 documents
    # cp 2: chunks of 2; rank 0 keeps chunks 0 and 3, rank 1 chunks 1 and 2 (Megatron's load balancing)
    r0, r1 = mb.slice_for_cp(0, 2), mb.slice_for_cp(1, 2)
    assert mb.tokens.tolist() == [[1, 2, 3, 4, 5, 6, 7, 0]]
    assert r0.tokens.tolist() == [[1, 2, 7, 0]]
    assert r1.tokens.tolist() == [[3, 4, 5, 6]]
    assert r0.cu_seqlens is None and r1.cu_seqlens is None  # the row split sets no THD boundaries
    with pytest.raises(AssertionError, match="not padded to a multiple of 2 x CP"):
        pack([Example([1, 2], [[3, 4, 5, 6]])]).slice_for_cp(0, 2)  # 6 tokens, cp 2 needs a multiple of 4


def _thd_reference(docs: list[list[int]], padded: list[int], cp: int, r: int) -> list[int | None]:
    """Each document padded (None) to its padded length, cut in 2*cp chunks; rank r keeps r, 2cp-1-r."""
    out = []
    for toks, n in zip(docs, padded, strict=True):
        full = toks + [None] * (n - len(toks))
        c = n // (2 * cp)
        out += full[r * c:(r + 1) * c] + full[(2 * cp - 1 - r) * c:(2 * cp - r) * c]
    return out


def test_per_document_split_pads_the_last_document_for_the_local_multiple():
    # three documents of 5, 3 and 6 tokens. cp 2: padded to multiples of 4 -> 8, 4, 8 = 20, a share of 10;
    # local_multiple 4 pads the last document by 2*cp until the share is a multiple of 4: 8, 4, 12 -> 12
    docs = [[11, 12, 13, 14, 15], [21, 22, 23], [31, 32, 33, 34, 35, 36]]
    mb = pack([Example(d[:1], [d[1:]]) for d in docs])
    assert mb.tokens.shape == (1, 14)
    for r in (0, 1):
        part = mb.slice_for_cp(r, 2, per_document=True, local_multiple=4)
        assert part.cu_seqlens.tolist() == [0, 5, 8, 14]
        assert part.cu_seqlens_padded.tolist() == [0, 8, 12, 24]
        assert part.cu_seqlens.dtype == part.cu_seqlens_padded.dtype == torch.int32  # TE's THD format
        want = _thd_reference(docs, [8, 4, 12], 2, r)
        assert part.tokens[0].tolist() == [0 if t is None else t for t in want]
        pad = torch.tensor([t is None for t in want])
        assert (part.loss_mask[0][pad] == 0).all() and (part.labels[0][pad] == 0).all()
        # pads belong to their document and continue its positions
        doc_of = [d for d, n in enumerate([8, 4, 12]) for _ in range(n)]
        keep = thd_cp_positions([8, 4, 12], 2, r)
        assert part.segment_ids[0].tolist() == [doc_of[p] for p in keep]
        offset = [p - [0, 8, 12][doc_of[p]] for p in keep]
        assert part.position_ids[0].tolist() == offset


def test_per_document_split_extra_padding_is_whole_multiples_of_two_cp():
    # cp 3: documents of 5, 3 and 6 tokens padded to 6, 6, 6 = 18, a share of 6; local_multiple 4 adds
    # 2*cp = 6 to the last document: 6, 6, 12 = 24, a share of 8
    docs = [[11, 12, 13, 14, 15], [21, 22, 23], [31, 32, 33, 34, 35, 36]]
    mb = pack([Example(d[:1], [d[1:]]) for d in docs])
    for r in range(3):
        part = mb.slice_for_cp(r, 3, per_document=True, local_multiple=4)
        assert part.cu_seqlens_padded.tolist() == [0, 6, 12, 24]
        assert part.tokens[0].tolist() == [0 if t is None else t for t in _thd_reference(docs, [6, 6, 12], 3, r)]


def test_per_document_split_without_a_local_multiple_pads_only_to_two_cp():
    docs = [[11, 12, 13, 14, 15], [21, 22, 23], [31, 32, 33, 34, 35, 36]]
    mb = pack([Example(d[:1], [d[1:]]) for d in docs])
    part = mb.slice_for_cp(0, 2, per_document=True)
    assert part.cu_seqlens_padded.tolist() == [0, 8, 12, 20]
    assert part.tokens[0].tolist() == [0 if t is None else t for t in _thd_reference(docs, [8, 4, 8], 2, 0)]


def test_per_document_split_refuses_several_rows():
    mb = pack([Example([1], [[2, 3, 4]])])
    two_rows = MicroBatch(**{**mb.__dict__, **{k: getattr(mb, k).repeat(2, 1) for k in
                                               ("tokens", "labels", "loss_mask", "position_ids", "segment_ids")}})
    with pytest.raises(ValueError) as err:
        two_rows.slice_for_cp(0, 2, per_document=True)
    assert str(err.value) == THD_MESSAGE


def test_thd_positions_of_no_documents_is_an_empty_index():
    got = thd_cp_positions([], 2, 0)
    assert got.shape == (0,) and got.dtype == np.int64
    # one document of 8 for cp 2: chunks of 2, rank 1 keeps chunks 1 and 2
    assert thd_cp_positions([8], 2, 1).tolist() == [2, 3, 4, 5]
