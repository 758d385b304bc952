"""Per-document sums of completion log-probs of one (CP-local) micro-batch, exact under CP.

Per-document sums are all-reduced over the CP group with an identity backward: every CP rank then
evaluates the objective on the full sums and backpropagates into its own tokens only, so the sum of
the CP ranks' gradients (megatron DDP sums over DP x CP because `calculate_per_token_loss` is set)
is the exact gradient.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from megatron_redi.data.batch import MicroBatch


class _AllReduceSumIdentityGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        x = x.clone()
        if group is not None and dist.get_world_size(group) > 1:
            dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def document_sums(logp: torch.Tensor, mb: MicroBatch, cp_group=None) -> torch.Tensor:
    """Sum of completion-token log-probs per document, over the whole (un-split) sequence."""
    num_docs = mb.doc_pair.numel()
    seg = mb.segment_ids.reshape(-1)
    tok = (logp.float() * mb.loss_mask).reshape(-1)
    keep = seg >= 0
    sums = torch.zeros(num_docs, dtype=torch.float32, device=logp.device)
    sums = sums.index_add(0, seg[keep], tok[keep])
    return _AllReduceSumIdentityGrad.apply(sums, cp_group)
