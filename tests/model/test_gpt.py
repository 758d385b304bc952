"""Document boundaries handed to Transformer Engine's THD attention (the GPU path, built on CPU here)."""

from __future__ import annotations

import torch

from megatron_redi.data.batch import Example, pack


def test_thd_params_from_segments_and_from_a_per_document_split(megatron_world):
    from megatron_redi.model.gpt import cu_seqlens_from_segments, thd_kwargs, thd_params

    mb = pack([Example([1, 2, 3], [[4, 5], [6]]), Example([7], [[8, 9, 10, 11, 12]])], pad_to_multiple=8)
    # unsplit row: documents 5, 4, 6 tokens, then 1 pad
    cu = cu_seqlens_from_segments(mb.segment_ids)
    assert cu.tolist() == [0, 5, 9, 15, 16] and cu.dtype == torch.int32
    p = thd_params(cu)
    assert p.qkv_format == "thd" and p.max_seqlen_q == 6 and torch.equal(p.cu_seqlens_q_padded, cu)
    assert thd_kwargs(mb) == {}  # not split per document: the model derives the boundaries itself

    part = mb.slice_for_cp(1, 2, per_document=True)
    p = thd_kwargs(part)["packed_seq_params"]
    assert p.cu_seqlens_q.tolist() == [0, 5, 9, 15, 16]
    assert p.cu_seqlens_q_padded.tolist() == [0, 8, 12, 20, 24]  # each padded to a multiple of 2 x CP
    assert p.max_seqlen_q == p.max_seqlen_kv == 8 and part.tokens.shape[1] == 12
