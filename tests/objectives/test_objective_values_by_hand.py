"""Objective values, metrics, units and flag checks against numbers worked out by hand (REDI.md).

Written against the survivors of mutation testing (docs/MUTATION.md): completion lengths of 1 (so a
wrong clamp shows), a margin of exactly 0 (so `> 0` vs `>= 0` shows), a global unit count that is not
1 (so `/ units` vs `* units` shows), and the exact metric names the trainer logs.
"""

from __future__ import annotations

import math

import pytest
import torch

from megatron_redi.data.batch import Example, pack
from megatron_redi.objectives.losses import ObjectiveConfig, dpo_loss, pair_metrics, redi_loss, simpo_loss
from megatron_redi.objectives.objective import build_objective

DPO_MESSAGE = ("dpo needs ref_chosen_logp / ref_rejected_logp in the data "
               "(score the pair file with tools/score_reference.py)")


def softplus(x: float) -> float:
    """-log sigmoid(-x) = log(1 + e^x)."""
    return math.log1p(math.exp(x))


# Two pairs; documents in row order c0, r0, c1, r1 with completion lengths 1, 4, 2, 1.
# Sums chosen so that avg logp: c0 = -1, r0 = -2, c1 = -3, r1 = -3 -> margins 1 and 0.
LENGTHS = (1, 4, 2, 1)
SUMS = torch.tensor([-1.0, -8.0, -6.0, -3.0])
REFS = ((-2.0, -6.0), (-4.0, -1.0))  # per pair (chosen, rejected) reference log-probs
UNITS = 4.0


def pairs_batch(with_refs: bool):
    exs = [Example([1, 2], [[3] * LENGTHS[0], [4] * LENGTHS[1]], REFS[0] if with_refs else None),
           Example([5], [[6] * LENGTHS[2], [7] * LENGTHS[3]], REFS[1] if with_refs else None)]
    mb = pack(exs)
    assert mb.doc_lengths.tolist() == list(LENGTHS)  # the layout the hand values assume
    return mb


def close(got: torch.Tensor, want: float):
    assert math.isclose(float(got), want, rel_tol=1e-6, abs_tol=1e-9), (float(got), want)


# ---- flags -------------------------------------------------------------------------------------

def test_config_accepts_the_edges_of_each_range():
    ObjectiveConfig(redi_alpha=1.0).validate()  # symmetric REDI is allowed (REDI.md)
    ObjectiveConfig(redi_alpha=0.0).validate()
    ObjectiveConfig(redi_chosen_weight=0.0).validate()
    ObjectiveConfig(redi_chosen_weight=0.5).validate()
    ObjectiveConfig(simpo_beta=0.5).validate()
    ObjectiveConfig(dpo_beta=0.5).validate()


@pytest.mark.parametrize("kw,message", [
    ({"loss_type": "ppo"}, "--loss-type must be one of sft, redi, simpo, dpo; got 'ppo'"),
    ({"redi_chosen_weight": -0.5}, "--redi-chosen-weight must be >= 0; got -0.5"),
    ({"simpo_beta": 0.0}, "--simpo-beta must be > 0; got 0.0"),
    ({"simpo_beta": -1.0}, "--simpo-beta must be > 0; got -1.0"),
    ({"dpo_beta": 0.0}, "--dpo-beta must be > 0; got 0.0"),
    ({"dpo_beta": -0.1}, "--dpo-beta must be > 0; got -0.1"),
])
def test_config_rejects_out_of_range_with_the_flag_and_value(kw, message):
    with pytest.raises(ValueError) as err:
        ObjectiveConfig(**kw).validate()
    assert str(err.value) == message


# ---- the formulas' defaults are the paper's settings ---------------------------------------------

def test_formula_defaults_are_the_config_defaults():
    one, two = torch.tensor([1.0]), torch.tensor([2.0])
    # REDI alpha 0.8, w 1: -(-2)/1 + 0.8 * (-4)/2 = 0.4
    close(redi_loss(torch.tensor([-2.0]), one, torch.tensor([-4.0]), two), 0.4)
    # SimPO beta 2, gamma 1, margin -1/1 - (-4/2) = 1: -log sigmoid(2 - 1)
    close(simpo_loss(torch.tensor([-1.0]), one, torch.tensor([-4.0]), two), softplus(-1.0))
    # DPO beta 0.001 on a summed margin of 1000: -log sigmoid(1)
    close(dpo_loss(torch.tensor([0.0]), torch.tensor([-1000.0]), torch.tensor([0.0]), torch.tensor([0.0])),
          softplus(-1.0))
    cfg = ObjectiveConfig()
    assert (cfg.redi_alpha, cfg.redi_chosen_weight, cfg.simpo_beta, cfg.simpo_gamma, cfg.dpo_beta) == \
        (0.8, 1.0, 2.0, 1.0, 0.001)


def test_length_one_completions_divide_by_one():
    one, four = torch.tensor([1.0]), torch.tensor([4.0])
    # REDI: -1 * (-3)/1 + 0.5 * (-8)/4 = 3 - 1 = 2
    close(redi_loss(torch.tensor([-3.0]), one, torch.tensor([-8.0]), four, alpha=0.5), 2.0)
    # REDI with the length-1 trace rejected: -(-8)/4 + 0.5 * (-3)/1 = 2 - 1.5 = 0.5
    close(redi_loss(torch.tensor([-8.0]), four, torch.tensor([-3.0]), one, alpha=0.5), 0.5)
    # SimPO: margins -3 - (-2) = -1 and -2 - (-3) = 1, beta 1, gamma 0
    close(simpo_loss(torch.tensor([-3.0]), one, torch.tensor([-8.0]), four, beta=1.0, gamma=0.0), softplus(1.0))
    close(simpo_loss(torch.tensor([-8.0]), four, torch.tensor([-3.0]), one, beta=1.0, gamma=0.0), softplus(-1.0))


# ---- pair metrics ---------------------------------------------------------------------------------

def test_pair_metrics_by_hand_for_reference_free_objectives():
    cs, rs = SUMS[[0, 2]], SUMS[[1, 3]]
    cl, rl = torch.tensor([1.0, 2.0]), torch.tensor([4.0, 1.0])
    for loss_type in ("redi", "simpo"):
        refc, refr = torch.tensor([-2.0, -4.0]), torch.tensor([-6.0, -1.0])  # ignored: not DPO
        for refs in ((None, None), (refc, refr)):
            m = pair_metrics(ObjectiveConfig(loss_type=loss_type), cs, cl, rs, rl, *refs)
            assert set(m) == {"chosen_logp", "rejected_logp", "margin", "pair_accuracy"}
            close(m["chosen_logp"], -1.0 + -3.0)
            close(m["rejected_logp"], -2.0 + -3.0)
            close(m["margin"], 1.0 + 0.0)
            close(m["pair_accuracy"], 1.0)  # a margin of exactly 0 is not a win


def test_pair_metrics_by_hand_for_dpo():
    cs, rs = SUMS[[0, 2]], SUMS[[1, 3]]
    cl, rl = torch.tensor([1.0, 2.0]), torch.tensor([4.0, 1.0])
    refc, refr = torch.tensor([-2.0, -4.0]), torch.tensor([-6.0, -1.0])
    m = pair_metrics(ObjectiveConfig(loss_type="dpo", dpo_beta=0.5), cs, cl, rs, rl, refc, refr)
    # rewards: chosen 0.5 * (-1 + 2) = 0.5 and 0.5 * (-6 + 4) = -1; rejected 0.5 * (-8 + 6) = -1 and
    # 0.5 * (-3 + 1) = -1; margins 1.5 and 0 (TRL's names for DPO's implicit rewards)
    assert set(m) == {"chosen_logp", "rejected_logp", "rewards/chosen", "rewards/rejected", "rewards/margins",
                      "rewards/accuracies"}
    close(m["rewards/chosen"], 0.5 - 1.0)
    close(m["rewards/rejected"], -1.0 - 1.0)
    close(m["rewards/margins"], 1.5)
    close(m["rewards/accuracies"], 1.0)
    close(m["chosen_logp"], -4.0)
    close(m["rejected_logp"], -5.0)
    # without references DPO's metrics fall back to the length-normalised margin
    m = pair_metrics(ObjectiveConfig(loss_type="dpo", dpo_beta=0.5), cs, cl, rs, rl)
    close(m["margin"], 1.0)


# ---- objectives on a packed micro-batch ------------------------------------------------------------

def test_redi_objective_loss_and_metrics_by_hand():
    obj = build_objective(ObjectiveConfig(loss_type="redi", redi_alpha=0.5, redi_chosen_weight=2.0))
    loss, m = obj.loss_from_sums(SUMS, pairs_batch(with_refs=True), UNITS)
    # per pair -2 * avg_c + 0.5 * avg_r: 2 - 1 = 1 and 6 - 1.5 = 4.5; over 4 units
    close(loss, 5.5 / 4)
    assert set(m) == {"loss", "chosen_logp", "rejected_logp", "margin", "pair_accuracy"}
    close(m["loss"], 5.5 / 4)
    close(m["chosen_logp"], -4.0 / 4)
    close(m["rejected_logp"], -5.0 / 4)
    close(m["margin"], 1.0 / 4)  # the references in the data do not make REDI's margin DPO's
    close(m["pair_accuracy"], 1.0 / 4)


def test_simpo_objective_uses_its_gamma():
    obj = build_objective(ObjectiveConfig(loss_type="simpo", simpo_beta=1.5, simpo_gamma=0.3))
    loss, m = obj.loss_from_sums(SUMS, pairs_batch(with_refs=False), UNITS)
    # margins 1 and 0: -log sigmoid(1.5 - 0.3) - log sigmoid(-0.3)
    close(loss, (softplus(-1.2) + softplus(0.3)) / 4)
    close(m["loss"], float(loss))


def test_dpo_objective_loss_and_metrics_by_hand():
    obj = build_objective(ObjectiveConfig(loss_type="dpo", dpo_beta=0.5))
    loss, m = obj.loss_from_sums(SUMS, pairs_batch(with_refs=True), UNITS)
    # DPO margins 1.5 and 0 (see test_pair_metrics_by_hand_for_dpo)
    close(loss, (softplus(-1.5) + math.log(2.0)) / 4)
    close(m["loss"], float(loss))
    close(m["rewards/margins"], 1.5 / 4)
    close(m["rewards/accuracies"], 1.0 / 4)


def test_dpo_without_references_names_the_missing_columns():
    obj = build_objective(ObjectiveConfig(loss_type="dpo"))
    with pytest.raises(ValueError) as err:
        obj.loss_from_sums(SUMS, pairs_batch(with_refs=False), UNITS)
    assert str(err.value) == DPO_MESSAGE
    one = torch.zeros(1)
    for refc, refr in ((None, one), (one, None), (None, None)):  # one column missing is enough
        with pytest.raises(ValueError) as err:
            obj.per_pair(one, one, one, one, refc, refr)
        assert str(err.value) == DPO_MESSAGE


def test_sft_objective_loss_and_metric_name():
    mb = pack([Example([1], [[2, 3]]), Example([4, 5], [[6, 7, 8]])])
    obj = build_objective(ObjectiveConfig(loss_type="sft"))
    loss, m = obj.loss_from_sums(torch.tensor([-2.0, -3.0]), mb, 5.0)
    close(loss, 1.0)  # (2 + 3) / 5 completion tokens
    assert set(m) == {"loss"}
    close(m["loss"], 1.0)


class _Counts:
    """Stands in for TokenizedDataset: completion tokens of example i is 10 * i + 1."""

    def completion_tokens(self, i: int) -> int:
        return 10 * i + 1


@pytest.mark.parametrize("loss_type", ["redi", "simpo", "dpo"])
def test_paired_units_are_the_number_of_pairs(loss_type):
    obj = build_objective(ObjectiveConfig(loss_type=loss_type))
    assert obj.units(_Counts(), [5, 7, 9]) == 3.0


def test_sft_units_are_the_completion_tokens_of_the_global_batch():
    obj = build_objective(ObjectiveConfig(loss_type="sft"))
    assert obj.units(_Counts(), [0, 2, 3]) == 1.0 + 21.0 + 31.0
    assert isinstance(obj.units(_Counts(), [0]), float)


@pytest.fixture
def float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def test_sums_and_token_weights_stay_fp32_whatever_the_default_dtype(float64_default):
    """The documented contract: per-document sums and token weights are fp32 (the kernel's dtype)."""
    from megatron_redi.objectives.sums import document_sums

    mb = pairs_batch(with_refs=False)
    logp = -torch.ones(mb.tokens.shape, dtype=torch.float32)
    assert document_sums(logp, mb).dtype == torch.float32
    tw = build_objective(ObjectiveConfig(loss_type="redi")).token_weights(mb, UNITS)
    assert tw.dtype == torch.float32
