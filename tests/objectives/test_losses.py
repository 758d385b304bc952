"""Objectives against direct evaluations of REDI.md's formulas."""

from __future__ import annotations

import math

import pytest
import torch

from megatron_redi.objectives.losses import ObjectiveConfig, dpo_loss, redi_loss, simpo_loss
from megatron_redi.objectives.objective import build_objective


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
        build_objective(ObjectiveConfig(loss_type="dpo")).per_pair(*[torch.zeros(1)] * 4, None, None)


@pytest.mark.parametrize("loss_type", ["sft", "redi", "simpo", "dpo"])
def test_token_weights_are_the_gradient_of_the_loss(loss_type):
    """token_weights (used by the LM head to fuse its backward) equal d loss / d logp from autograd on
    the objective itself, for the linear objectives; the others announce none."""
    from megatron_redi.data.batch import Example, pack

    g = torch.Generator().manual_seed(0)
    rnd = lambda n: torch.randint(3, 300, (n,), generator=g).tolist()
    exs = [Example(rnd(3), [rnd(5), rnd(2)], (-9.0, -7.0)), Example(rnd(4), [rnd(6), rnd(3)], (-8.0, -6.0))]
    if loss_type == "sft":
        exs = [Example(e.prompt, [c]) for e in exs for c in e.completions]
    mb = pack(exs, pad_to_multiple=8)  # padding tokens must get weight 0
    obj = build_objective(ObjectiveConfig(loss_type=loss_type, redi_alpha=0.7, redi_chosen_weight=1.3))
    units = 3.0
    logp = (-torch.rand(mb.tokens.shape, generator=g, dtype=torch.float32)).requires_grad_()
    loss, _ = obj.loss(logp, mb, units)
    (want,) = torch.autograd.grad(loss, logp)
    tw = obj.token_weights(mb, units)
    if loss_type in ("simpo", "dpo"):
        assert tw is None and not obj.linear
        return
    assert obj.linear and tw.shape == logp.shape
    assert torch.equal(tw, want)
    assert (tw[mb.segment_ids < 0] == 0).all() and (tw[mb.loss_mask == 0] == 0).all()
    if loss_type == "redi":  # the paper's coefficients, by hand: -w/|y_w| and alpha/|y_l|, / units
        first_chosen = tw[0][mb.loss_mask[0] > 0][0]
        assert math.isclose(float(first_chosen), -1.3 / len(exs[0].completions[0]) / units, rel_tol=1e-6)
