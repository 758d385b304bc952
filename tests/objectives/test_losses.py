"""Objectives against direct evaluations of REDI.md's formulas."""

from __future__ import annotations

import math

import pytest
import torch

from megatron_redi.objectives.losses import ObjectiveConfig, dpo_loss, pair_losses, redi_loss, simpo_loss


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_redi_formula_per_pair():
    cs, cl, rs, rl = torch.tensor([-30.0, -8.0]), torch.tensor([10.0, 4.0]), torch.tensor([-50.0, -3.0]), \
        torch.tensor([20.0, 0.0])
    got = redi_loss(cs, cl, rs, rl, alpha=0.8)
    # |y| is clamped to >= 1: the second rejected trace has length 0 -> divide by 1
    want = [30 / 10 + 0.8 * (-50 / 20), 8 / 4 + 0.8 * (-3 / 1)]
    assert torch.allclose(got, torch.tensor(want))


def test_simpo_and_dpo_formulas():
    cs, cl, rs, rl = torch.tensor([-12.0]), torch.tensor([6.0]), torch.tensor([-20.0]), torch.tensor([5.0])
    got = simpo_loss(cs, cl, rs, rl, beta=2.0, gamma=1.0)
    assert math.isclose(got.item(), -math.log(_sig(2.0 * (-2.0 - (-4.0)) - 1.0)), rel_tol=1e-6)
    got = dpo_loss(torch.tensor([-100.0]), torch.tensor([-130.0]), torch.tensor([-110.0]),
                   torch.tensor([-120.0]), beta=0.1)
    assert math.isclose(got.item(), -math.log(_sig(0.1 * ((-100 + 110) - (-130 + 120)))), rel_tol=1e-6)


def test_symmetric_redi_is_simpo_small_beta_limit():
    """alpha = 1 REDI is the beta -> 0 limit of SimPO (gradient direction, gamma = 0)."""
    cs = torch.tensor([-12.0], requires_grad=True)
    rs = torch.tensor([-20.0], requires_grad=True)
    cl, rl = torch.tensor([6.0]), torch.tensor([5.0])
    redi_loss(cs, cl, rs, rl, alpha=1.0).sum().backward()
    g_redi = torch.stack([cs.grad.clone(), rs.grad.clone()])
    cs.grad = rs.grad = None
    beta = 1e-4
    (simpo_loss(cs, cl, rs, rl, beta=beta, gamma=0.0) / (beta * 0.5)).sum().backward()
    g_simpo = torch.stack([cs.grad, rs.grad])
    assert torch.allclose(g_redi, g_simpo, rtol=1e-3)


def test_config_validation_names_flags():
    with pytest.raises(ValueError, match="--redi-alpha"):
        ObjectiveConfig(redi_alpha=1.5).validate()
    with pytest.raises(ValueError, match="--loss-type"):
        ObjectiveConfig(loss_type="ppo").validate()
    with pytest.raises(ValueError, match="ref_chosen_logp"):
        pair_losses(ObjectiveConfig(loss_type="dpo"), *[torch.zeros(1)] * 4)
