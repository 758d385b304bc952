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


def thd_params(cu_seqlens: torch.Tensor):
    """Document boundaries as Transformer Engine's attention takes them (THD `PackedSeqParams`); our
    SDPA attention takes segment ids in `attention_mask` instead."""
    from megatron.core import parallel_state
    from megatron.core.packed_seq_params import PackedSeqParams

    if parallel_state.get_context_parallel_world_size() > 1:
        raise RuntimeError("packed documents with Transformer Engine and context parallelism need per-document "
                           "CP partitioning, which is not implemented: use --transformer-impl local with CP")
    mx = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
    return PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu_seqlens, cu_seqlens_kv=cu_seqlens,
                           cu_seqlens_q_padded=cu_seqlens, cu_seqlens_kv_padded=cu_seqlens,
                           max_seqlen_q=mx, max_seqlen_kv=mx)


class RediGPTModel(GPTModel):
    """With `labels` given, the last stage returns log p(labels) [b, s] in fp32, computed chunk by
    chunk from the final hidden states (objectives.logprobs); logits never exist in full."""

    def __init__(self, *args, true_vocab_size: int, logprob_chunk_size: int = 1024,
                 transformer_impl: str = "local", **kwargs):
        super().__init__(*args, **kwargs)
        self.true_vocab_size = true_vocab_size
        self.logprob_chunk_size = logprob_chunk_size
        # [b, s] expected d loss / d logp, set by the forward step for linear objectives (one use)
        self.pending_token_weights: torch.Tensor | None = None
        self.transformer_impl = transformer_impl

    def forward(self, input_ids, position_ids, attention_mask, *args, packed_seq_params=None, **kwargs):
        """`attention_mask` carries segment ids [b, s]. Our SDPA attention reads them directly; for
        Transformer Engine's attention they become THD `PackedSeqParams` here, so every caller
        (trainer, scorer, benchmarks) passes documents the same way."""
        if self.transformer_impl == "transformer_engine" and attention_mask is not None and packed_seq_params is None:
            packed_seq_params = thd_params(cu_seqlens_from_segments(attention_mask))
            attention_mask = None
        return super().forward(input_ids, position_ids, attention_mask, *args, packed_seq_params=packed_seq_params,
                               **kwargs)

    def output_weight(self) -> torch.Tensor:
        if self.share_embeddings_and_output_weights:
            return self.shared_embedding_or_output_weight()
        return self.output_layer.weight

    def _postprocess(self, hidden_states, input_ids, position_ids, labels, *args, **kwargs):
        if labels is None or not self.post_process:
            return super()._postprocess(hidden_states, input_ids, position_ids, labels, *args, **kwargs)
        tw, self.pending_token_weights = self.pending_token_weights, None
        logp = vocab_parallel_logprobs(
            hidden_states, self.output_weight(), labels.transpose(0, 1).contiguous(),
            true_vocab_size=self.true_vocab_size, chunk_size=self.logprob_chunk_size,
            sequence_parallel=self.config.sequence_parallel,
            token_weights=tw.transpose(0, 1).contiguous() if tw is not None else None,
        )
        return logp.transpose(0, 1).contiguous()
