"""The four objectives as pure functions of per-document log-prob sums and lengths (docs/REDI.md).

They never see tokens. Sums are log pi(y|x) summed over completion tokens; lengths are completion
token counts (clamped to >= 1). Each returns the per-pair (or per-document) loss; the caller weights
by 1 / global batch size so that the value and gradient do not depend on micro-batch, DP or PP size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sft", "redi", "simpo", "dpo")
PAIRED = ("redi", "simpo", "dpo")


@dataclass
class ObjectiveConfig:
    loss_type: str = "redi"
    redi_alpha: float = 0.8
    redi_chosen_weight: float = 1.0
    simpo_beta: float = 2.0
    simpo_gamma: float = 1.0
    dpo_beta: float = 0.001

    def validate(self) -> None:
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"--loss-type must be one of {', '.join(LOSS_TYPES)}; got {self.loss_type!r}")
        if not 0.0 <= self.redi_alpha <= 1.0:
            raise ValueError(f"--redi-alpha must be in [0, 1]; got {self.redi_alpha}")
        if self.redi_chosen_weight < 0:
            raise ValueError(f"--redi-chosen-weight must be >= 0; got {self.redi_chosen_weight}")
        if self.simpo_beta <= 0:
            raise ValueError(f"--simpo-beta must be > 0; got {self.simpo_beta}")
        if self.dpo_beta <= 0:
            raise ValueError(f"--dpo-beta must be > 0; got {self.dpo_beta}")

    @property
    def paired(self) -> bool:
        return self.loss_type in PAIRED


def redi_loss(chosen_sum, chosen_len, rejected_sum, rejected_len, alpha: float = 0.8,
              chosen_weight: float = 1.0) -> torch.Tensor:
    """-w * logp(y_w)/|y_w| + alpha * logp(y_l)/|y_l| per pair (reference-free)."""
    return (-chosen_weight * chosen_sum / chosen_len.clamp(min=1)
            + alpha * rejected_sum / rejected_len.clamp(min=1))


def simpo_loss(chosen_sum, chosen_len, rejected_sum, rejected_len, beta: float = 2.0,
               gamma: float = 1.0) -> torch.Tensor:
    """-log sigmoid(beta * (avg logp_w - avg logp_l) - gamma) per pair."""
    margin = chosen_sum / chosen_len.clamp(min=1) - rejected_sum / rejected_len.clamp(min=1)
    return -F.logsigmoid(beta * margin - gamma)


def dpo_loss(chosen_sum, rejected_sum, ref_chosen, ref_rejected, beta: float = 0.001) -> torch.Tensor:
    """-log sigmoid(beta * ((logp_w - ref_w) - (logp_l - ref_l))) with summed log-probs."""
    return -F.logsigmoid(beta * ((chosen_sum - ref_chosen) - (rejected_sum - ref_rejected)))


def pair_metrics(cfg: ObjectiveConfig, chosen_sum, chosen_len, rejected_sum, rejected_len,
                 ref_chosen=None, ref_rejected=None) -> dict[str, torch.Tensor]:
    """Per-pair statistics summed over pairs (the caller divides by the global pair count).

    Every objective: `chosen_logp` / `rejected_logp`, the per-token mean log-prob of each side. DPO
    (with reference log-probs): TRL's implicit-reward metrics `rewards/chosen`, `rewards/rejected`
    (beta * (logp - ref_logp), summed log-probs), `rewards/margins` and `rewards/accuracies`. The
    reference-free objectives: `margin`, the gap of per-token mean log-probs, and `pair_accuracy`, the
    share of pairs where it is > 0. Different quantities, different names (docs/REDI.md)."""
    cavg = chosen_sum / chosen_len.clamp(min=1)
    ravg = rejected_sum / rejected_len.clamp(min=1)
    out = {"chosen_logp": cavg.sum(), "rejected_logp": ravg.sum()}
    if cfg.loss_type == "dpo" and ref_chosen is not None:
        rc = cfg.dpo_beta * (chosen_sum - ref_chosen)
        rr = cfg.dpo_beta * (rejected_sum - ref_rejected)
        out.update({"rewards/chosen": rc.sum(), "rewards/rejected": rr.sum(), "rewards/margins": (rc - rr).sum(),
                    "rewards/accuracies": (rc - rr > 0).float().sum()})
        return out
    margin = cavg - ravg
    out.update({"margin": margin.sum(), "pair_accuracy": (margin > 0).float().sum()})
    return out
