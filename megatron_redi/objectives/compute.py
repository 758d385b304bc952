"""From per-token log-probs of one (CP-local) micro-batch to the loss that is backpropagated.

Per-document sums are all-reduced over the CP group with an identity backward: every CP rank then
evaluates the objective on the full sums and backpropagates into its own tokens only, so the sum of
the CP ranks' gradients (megatron DDP sums over DP x CP because `calculate_per_token_loss` is set)
is the exact gradient. Dividing by the global batch size here makes the loss and gradient
independent of micro-batch size, DP size and pipeline depth.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from megatron_redi.data.batch import MicroBatch
from megatron_redi.objectives.losses import ObjectiveConfig, pair_losses, pair_metrics


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


def linear_token_weights(mb: MicroBatch, cfg: ObjectiveConfig, global_units: float) -> torch.Tensor | None:
    """d loss / d logp_t per token for objectives linear in the log-probs (sft, redi), else None.

    Lets the log-prob kernel produce its gradients in the forward pass (objectives.logprobs)."""
    if cfg.loss_type == "sft":
        return -mb.loss_mask / global_units
    if cfg.loss_type != "redi":
        return None
    lengths = mb.doc_lengths.clamp(min=1)
    coef = torch.where(mb.doc_is_chosen, -cfg.redi_chosen_weight / lengths, cfg.redi_alpha / lengths) / global_units
    seg = mb.segment_ids
    per_tok = coef[seg.clamp(min=0)]
    return torch.where(seg >= 0, per_tok, torch.zeros_like(per_tok)) * mb.loss_mask


def micro_batch_loss(logp: torch.Tensor, mb: MicroBatch, cfg: ObjectiveConfig, global_units: float,
                     cp_group=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss contribution of this micro-batch (already divided by the global batch size) and metric sums.

    global_units: for sft the number of completion tokens in the global batch; for the
    paired losses the number of pairs in the global batch.
    """
    sums = document_sums(logp, mb, cp_group)
    if not cfg.paired:
        loss = -sums.sum() / global_units
        return loss, {"loss": loss.detach()}
    chosen = mb.doc_is_chosen
    cs, rs = sums[chosen], sums[~chosen]
    cl, rl = mb.doc_lengths[chosen], mb.doc_lengths[~chosen]
    refc = refr = None
    if mb.ref_logps is not None:
        refc, refr = mb.ref_logps[chosen], mb.ref_logps[~chosen]
    per_pair = pair_losses(cfg, cs, cl, rs, rl, refc, refr)
    loss = per_pair.sum() / global_units
    with torch.no_grad():
        m = {k: v / global_units for k, v in pair_metrics(cfg, cs, cl, rs, rl, refc, refr).items()}
    m["loss"] = loss.detach()
    return loss, m
