"""Core attention on `scaled_dot_product_attention`: causal, packed documents, context parallel.

megatron-core's local `DotProductAttention` materialises s x s scores and refuses CP; TE is absent on
CPU hosts. This module runs everywhere torch runs and is the local spec's core attention.

Packed documents are described by `attention_mask`: a long tensor [b, s_local] of segment ids (one id
per document, padding included); no token attends across segments. `None` means one causal document
per row. Attention runs one SDPA call per document (per query chunk under CP), each causal, so
flash/cuDNN kernels apply and no s x s mask or score matrix is ever built, with or without CP.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.transformer.module import MegatronModule
from torch.nn.attention.bias import causal_lower_right

from megatron_redi.data.batch import segment_runs


def cp_chunk_positions(seq_local: int, cp_rank: int, cp_size: int, device) -> torch.Tensor:
    """Global positions held by `cp_rank` under Megatron's load-balanced split (chunks r, 2cp-1-r)."""
    half = seq_local // 2
    first = torch.arange(cp_rank * half, (cp_rank + 1) * half, device=device)
    second_chunk = 2 * cp_size - 1 - cp_rank
    second = torch.arange(second_chunk * half, (second_chunk + 1) * half, device=device)
    return torch.cat([first, second])


class _AllGatherSeq(torch.autograd.Function):
    """All-gather along dim 0 over a group; backward sums every rank's gradient then slices.

    All-reduce + slice instead of reduce-scatter because gloo has no reduce-scatter.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        world = dist.get_world_size(group)
        ctx.rank = dist.get_rank(group)
        ctx.n = x.shape[0]
        out = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(out, x.contiguous(), group=group)
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n], None


def _gather_cp(x: torch.Tensor, group, cp_size: int, differentiable: bool) -> torch.Tensor:
    """Gather a [s_local, ...] tensor from all CP ranks and put it in natural sequence order."""
    if differentiable:
        full = _AllGatherSeq.apply(x, group)
    else:
        parts = [torch.empty_like(x) for _ in range(cp_size)]
        dist.all_gather(parts, x.contiguous(), group=group)
        full = torch.cat(parts, dim=0)
    half = x.shape[0] // 2
    chunks = full.split(half, dim=0)  # rank r contributed chunks (r, 2cp-1-r)
    ordered = [None] * (2 * cp_size)
    for r in range(cp_size):
        ordered[r] = chunks[2 * r]
        ordered[2 * cp_size - 1 - r] = chunks[2 * r + 1]
    return torch.cat(ordered, dim=0)


class SDPACoreAttention(MegatronModule):
    """Drop-in `core_attention` for megatron's `SelfAttention` (same constructor and call)."""

    def __init__(self, config, layer_number, attn_mask_type, attention_type, attention_dropout=None,
                 softmax_scale=None, cp_comm_type=None, pg_collection=None):
        super().__init__(config=config)
        self.softmax_scale = softmax_scale
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout
        self._runs_cache: tuple[torch.Tensor, list] | None = None

    def _runs(self, segments, b: int, s_full: int, gather=None) -> list[list[tuple[int, int]]]:
        """[start, end) of each document per row, over the whole row (`gather` all-gathers the segment
        ids under CP). Every layer gets the same mask tensor, so this runs once per forward (one host
        sync), not once per layer."""
        if segments is None:
            return [[(0, s_full)]] * b
        if self._runs_cache is None or self._runs_cache[0] is not segments:
            full = segments if gather is None else gather(segments)
            self._runs_cache = (segments, [segment_runs(row) for row in full.cpu().numpy()])
        return self._runs_cache[1]

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        assert attention_bias is None, "attention bias is not supported"
        assert packed_seq_params is None, "pass document boundaries as segment ids in attention_mask"
        sq, b, np_, hn = query.shape
        gqa = key.shape[2] != np_
        dropout = self.dropout_p if self.training else 0.0
        q = query.permute(1, 2, 0, 3)
        cp_size = parallel_state.get_context_parallel_world_size()

        if cp_size == 1 and attention_mask is None:
            out = F.scaled_dot_product_attention(q, key.permute(1, 2, 0, 3), value.permute(1, 2, 0, 3),
                                                 is_causal=True, dropout_p=dropout, scale=self.softmax_scale,
                                                 enable_gqa=gqa)
        else:
            if cp_size > 1:
                group = parallel_state.get_context_parallel_group()
                k = _gather_cp(key, group, cp_size, True).permute(1, 2, 0, 3)
                v = _gather_cp(value, group, cp_size, True).permute(1, 2, 0, 3)
                half = sq // 2
                starts = cp_chunk_positions(sq, parallel_state.get_context_parallel_rank(), cp_size, "cpu")[::half]
                # (local offset, row position, length) of this rank's two query chunks
                chunks = [(0, int(starts[0]), half), (half, int(starts[1]), half)]
                runs = self._runs(attention_mask, b, k.shape[2],
                                  lambda seg: _gather_cp(seg.t(), group, cp_size, False).t())
            else:
                k, v = key.permute(1, 2, 0, 3), value.permute(1, 2, 0, 3)
                chunks = [(0, 0, sq)]
                runs = self._runs(attention_mask, b, sq)
            # One causal (flash-eligible) SDPA call per (query chunk, document) instead of an s x s mask
            rows = []
            for bi in range(b):
                parts = []
                for local0, g0, n in chunks:
                    for ds, de in runs[bi]:
                        qa, qb = max(ds, g0), min(de, g0 + n)
                        if qa >= qb:
                            continue
                        # queries [qa, qb) of a document starting at ds see keys [ds, qb); a chunk that
                        # starts inside the document aligns the causal mask at the bottom right
                        causal = ({"is_causal": True} if qa == ds
                                  else {"attn_mask": causal_lower_right(qb - qa, qb - ds)})
                        parts.append(F.scaled_dot_product_attention(
                            q[bi : bi + 1, :, local0 + qa - g0 : local0 + qb - g0],
                            k[bi : bi + 1, :, ds:qb], v[bi : bi + 1, :, ds:qb], dropout_p=dropout,
                            scale=self.softmax_scale, enable_gqa=gqa, **causal))
                rows.append(torch.cat(parts, dim=2))
            out = torch.cat(rows, dim=0)
        # [b, np, s, hn] -> [s, b, np * hn]
        return out.permute(2, 0, 1, 3).reshape(sq, b, np_ * hn)
