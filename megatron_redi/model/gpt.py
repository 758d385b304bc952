"""GPTModel whose last stage returns per-token log-probs instead of [s, b, vocab] logits."""

from __future__ import annotations

import torch
from megatron.core.models.gpt import GPTModel

from megatron_redi.objectives.logprobs import vocab_parallel_logprobs


def cu_seqlens_from_segments(segment_ids: torch.Tensor) -> torch.Tensor:
    """Cumulative document boundaries (int32) of one packed row of segment ids [1, s]; padding
    counts as one more document."""
    assert segment_ids.shape[0] == 1, "THD packing needs one packed row per micro-batch"
    seg = segment_ids[0]
    change = torch.nonzero(seg[1:] != seg[:-1]).flatten() + 1
    ends = torch.cat([change, torch.tensor([seg.numel()], device=seg.device)])
    return torch.cat([torch.zeros(1, dtype=torch.int32, device=seg.device), ends.to(torch.int32)])


def thd_params(cu_seqlens: torch.Tensor, cu_seqlens_padded: torch.Tensor | None = None):
    """Document boundaries as Transformer Engine's attention takes them (THD `PackedSeqParams`); our
    SDPA attention takes segment ids in `attention_mask` instead. Under CP, TE needs the whole row's
    boundaries with every document padded to a multiple of 2 x CP (`MicroBatch.slice_for_cp(...,
    per_document=True)` makes both)."""
    from megatron.core import parallel_state
    from megatron.core.packed_seq_params import PackedSeqParams

    if cu_seqlens_padded is None:
        if parallel_state.get_context_parallel_world_size() > 1:
            raise RuntimeError("Transformer Engine attention under context parallelism needs each document "
                               "padded to a multiple of 2 x CP: split micro-batches with "
                               "MicroBatch.slice_for_cp(rank, cp, per_document=True)")
        cu_seqlens_padded = cu_seqlens
    mx = int((cu_seqlens_padded[1:] - cu_seqlens_padded[:-1]).max())
    return PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu_seqlens, cu_seqlens_kv=cu_seqlens,
                           cu_seqlens_q_padded=cu_seqlens_padded, cu_seqlens_kv_padded=cu_seqlens_padded,
                           max_seqlen_q=mx, max_seqlen_kv=mx)


def thd_kwargs(mb) -> dict:
    """Model kwargs for a micro-batch split per document for CP (empty otherwise)."""
    if mb.cu_seqlens is None:
        return {}
    return {"packed_seq_params": thd_params(mb.cu_seqlens.to(mb.tokens.device),
                                            mb.cu_seqlens_padded.to(mb.tokens.device))}


def micro_batch_for_this_rank(model, mb):
    """This rank's share of a micro-batch, on the device, and the extra kwargs the model needs for it.
    Our SDPA attention takes the row split; TE's THD attention the per-document one, with each rank's
    share a multiple of TP under sequence parallelism."""
    from megatron.core import parallel_state as ps

    from megatron_redi.platform.distributed import device

    cfg = model.config
    local = mb.slice_for_cp(ps.get_context_parallel_rank(), ps.get_context_parallel_world_size(),
                            per_document=model.transformer_impl == "transformer_engine",
                            local_multiple=cfg.tensor_model_parallel_size if cfg.sequence_parallel else 1)
    local = local.to(device())
    return local, thd_kwargs(local)


def check_thd_split_against_te(cu_seqlens_padded: torch.Tensor) -> None:
    """Our per-document CP split must be the one TE's THD attention expects; compare with TE's own
    index function once per process (it exists only with TE, on GPUs)."""
    import transformer_engine_torch as tex
    from megatron.core import parallel_state as ps

    from megatron_redi.data.batch import thd_cp_positions

    cp, rank = ps.get_context_parallel_world_size(), ps.get_context_parallel_rank()
    total = int(cu_seqlens_padded[-1])
    want = tex.thd_get_partitioned_indices(cu_seqlens_padded, total, cp, rank).cpu()
    lengths = (cu_seqlens_padded[1:] - cu_seqlens_padded[:-1]).tolist()
    got = torch.from_numpy(thd_cp_positions(lengths, cp, rank))
    if not torch.equal(want.long(), got.long()):
        raise RuntimeError(f"per-document CP split differs from Transformer Engine's on CP rank {rank}: "
                           f"ours {got[:8].tolist()}..., TE {want[:8].tolist()}...")


class RediGPTModel(GPTModel):
    """With `labels` given, the last stage returns log p(labels) [b, s] in fp32, computed chunk by
    chunk from the final hidden states (objectives.logprobs); logits never exist in full."""

    def __init__(self, *args, true_vocab_size: int, logprob_chunk_size: int = 0,
                 transformer_impl: str = "local", **kwargs):
        super().__init__(*args, **kwargs)
        self.true_vocab_size = true_vocab_size
        self.logprob_chunk_size = logprob_chunk_size
        # the current forward call's `token_weights` on its way to _postprocess (None between calls)
        self._token_weights: torch.Tensor | None = None
        self.transformer_impl = transformer_impl
        self._thd_split_checked = False

    def forward(self, input_ids, position_ids, attention_mask, *args, packed_seq_params=None,
                token_weights: torch.Tensor | None = None, **kwargs):
        """`attention_mask` carries segment ids [b, s]. Our SDPA attention reads them directly; for
        Transformer Engine's attention they become THD `PackedSeqParams` here, so every caller
        (trainer, scorer, benchmarks) passes documents the same way.

        `token_weights` [b, s]: d loss / d logp per token when the objective knows it before the
        forward (`Objective.token_weights`, linear objectives); the last stage then produces the LM
        head's gradients in the same pass. Ignored by stages without the head."""
        if self.transformer_impl == "transformer_engine" and attention_mask is not None:
            if packed_seq_params is None:
                packed_seq_params = thd_params(cu_seqlens_from_segments(attention_mask))
            elif not self._thd_split_checked and packed_seq_params.cu_seqlens_q_padded is not None:
                from megatron.core import parallel_state as ps

                if ps.get_context_parallel_world_size() > 1:
                    check_thd_split_against_te(packed_seq_params.cu_seqlens_q_padded)
                self._thd_split_checked = True
            attention_mask = None
        self._token_weights = token_weights
        try:
            return super().forward(input_ids, position_ids, attention_mask, *args,
                                   packed_seq_params=packed_seq_params, **kwargs)
        finally:
            self._token_weights = None

    def output_weight(self) -> torch.Tensor:
        if self.share_embeddings_and_output_weights:
            return self.shared_embedding_or_output_weight()
        return self.output_layer.weight

    def _postprocess(self, hidden_states, input_ids, position_ids, labels, *args, **kwargs):
        if labels is None or not self.post_process:
            return super()._postprocess(hidden_states, input_ids, position_ids, labels, *args, **kwargs)
        tw = self._token_weights
        logp = vocab_parallel_logprobs(
            hidden_states, self.output_weight(), labels.transpose(0, 1).contiguous(),
            true_vocab_size=self.true_vocab_size, chunk_size=self.logprob_chunk_size,
            sequence_parallel=self.config.sequence_parallel,
            token_weights=tw.transpose(0, 1).contiguous() if tw is not None else None,
        )
        return logp.transpose(0, 1).contiguous()
