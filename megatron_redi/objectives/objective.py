"""One object per objective: how a global batch is counted, its loss on a micro-batch, and, for
objectives linear in the log-probs, the per-token gradient known before the forward pass.

    obj = build_objective(ObjectiveConfig(loss_type="redi"))
    units = obj.units(examples, global_indices)           # the global normaliser (pairs or tokens)
    tw = obj.token_weights(mb, units)                      # [b, s] d loss / d logp_t, or None
    logp = model(..., labels=mb.labels, token_weights=tw)  # the LM head may fuse its backward
    loss, metrics = obj.loss(logp, mb, units, cp_group)

Every formula is written once, in `objectives.losses`; `token_weights` differentiates the same
loss with autograd (it is linear, so its gradient does not depend on the log-probs), so the fused
LM-head gradient and the real backward can never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from megatron_redi.data.batch import MicroBatch
from megatron_redi.objectives.losses import ObjectiveConfig, dpo_loss, pair_metrics, redi_loss, simpo_loss
from megatron_redi.objectives.sums import document_sums


class Objective:
    """Base: a loss of per-document completion log-prob sums, divided by a global unit count so the
    value and gradient do not depend on micro-batch size, DP size or pipeline depth."""

    paired = False
    linear = False  # loss linear in the log-probs: token_weights() is exact

    def __init__(self, cfg: ObjectiveConfig):
        self.cfg = cfg

    def units(self, examples, indices: Sequence[int]) -> float:
        """The global normaliser of a global batch: its number of pairs, or for SFT its number of
        completion tokens (token-level mean NLL). `examples` has `completion_tokens(i)`."""
        if self.paired:
            return float(len(indices))
        return float(sum(examples.completion_tokens(i) for i in indices))

    def loss_from_sums(self, sums: torch.Tensor, mb: MicroBatch, global_units: float
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss (already / global_units) and metric sums from per-document sums [num_docs] fp32."""
        raise NotImplementedError

    def loss(self, logp: torch.Tensor, mb: MicroBatch, global_units: float, cp_group=None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """From per-token log-probs [b, s] (CP-local) of one micro-batch to the loss to backprop."""
        return self.loss_from_sums(document_sums(logp, mb, cp_group), mb, global_units)

    def token_weights(self, mb: MicroBatch, global_units: float) -> torch.Tensor | None:
        """d loss / d logp_t per token [b, s] for linear objectives (None otherwise): lets the
        log-prob kernel produce its gradients in the forward pass (objectives.logprobs)."""
        if not self.linear:
            return None
        with torch.enable_grad():
            sums = torch.zeros(mb.doc_pair.numel(), dtype=torch.float32, device=mb.doc_lengths.device,
                               requires_grad=True)
            (coef,) = torch.autograd.grad(self.loss_from_sums(sums, mb, global_units)[0], sums)
        seg = mb.segment_ids
        per_tok = coef[seg.clamp(min=0)]
        return torch.where(seg >= 0, per_tok, torch.zeros_like(per_tok)) * mb.loss_mask


class SFT(Objective):
    """Token-level mean negative log-likelihood of the completions."""

    linear = True

    def loss_from_sums(self, sums, mb, global_units):
        loss = -sums.sum() / global_units
        return loss, {"loss": loss.detach()}


class _Paired(Objective):
    """Objectives on (chosen, rejected) pairs: documents alternate chosen / rejected per pair."""

    paired = True

    def per_pair(self, cs, cl, rs, rl, refc, refr) -> torch.Tensor:
        raise NotImplementedError

    def loss_from_sums(self, sums, mb, global_units):
        chosen = mb.doc_is_chosen
        cs, rs = sums[chosen], sums[~chosen]
        cl, rl = mb.doc_lengths[chosen], mb.doc_lengths[~chosen]
        refc = refr = None
        if mb.ref_logps is not None:
            refc, refr = mb.ref_logps[chosen], mb.ref_logps[~chosen]
        loss = self.per_pair(cs, cl, rs, rl, refc, refr).sum() / global_units
        with torch.no_grad():
            m = {k: v / global_units for k, v in pair_metrics(self.cfg, cs, cl, rs, rl, refc, refr).items()}
        m["loss"] = loss.detach()
        return loss, m


class REDI(_Paired):
    """-w logp(y_w)/|y_w| + alpha logp(y_l)/|y_l| (docs/REDI.md, reference-free, linear in log-probs)."""

    linear = True

    def per_pair(self, cs, cl, rs, rl, refc, refr):
        return redi_loss(cs, cl, rs, rl, self.cfg.redi_alpha, self.cfg.redi_chosen_weight)


class SimPO(_Paired):
    def per_pair(self, cs, cl, rs, rl, refc, refr):
        return simpo_loss(cs, cl, rs, rl, self.cfg.simpo_beta, self.cfg.simpo_gamma)


class DPO(_Paired):
    def per_pair(self, cs, cl, rs, rl, refc, refr):
        if refc is None or refr is None:
            raise ValueError("dpo needs ref_chosen_logp / ref_rejected_logp in the data "
                             "(score the pair file with tools/score_reference.py)")
        return dpo_loss(cs, rs, refc, refr, self.cfg.dpo_beta)


OBJECTIVES: dict[str, type[Objective]] = {"sft": SFT, "redi": REDI, "simpo": SimPO, "dpo": DPO}


def build_objective(cfg: ObjectiveConfig) -> Objective:
    """The objective object for --loss-type (ValueError naming the flag otherwise)."""
    cfg.validate()
    return OBJECTIVES[cfg.loss_type](cfg)
