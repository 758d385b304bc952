"""Per-document sums under context parallelism: all-reduced over the CP group exactly when that group
has more than one rank, with an identity backward (objectives/sums.py).

A stand-in for torch.distributed plays the other CP ranks: its all_reduce adds their (known) partial
sums, as a SUM all-reduce over the group would, so the test runs in one process. Written against the
survivors of mutation testing (docs/MUTATION.md).
"""

from __future__ import annotations

import pytest
import torch

from megatron_redi.data.batch import Example, pack
from megatron_redi.objectives import sums as sums_module
from megatron_redi.objectives.losses import ObjectiveConfig
from megatron_redi.objectives.objective import build_objective
from megatron_redi.objectives.sums import document_sums

CP2, CP1 = object(), object()  # a CP group of two ranks, and one of a single rank


class FakeDist:
    """torch.distributed for a world of 8 ranks: `sizes` maps group -> size (None: the world)."""

    def __init__(self, others: torch.Tensor):
        self.sizes = {None: 8, CP2: 2, CP1: 1}
        self.others = others  # what the other CP rank contributes to each document's sum
        self.calls = []

    def get_world_size(self, group=None):
        return self.sizes[group]

    def all_reduce(self, tensor, op=None, group=None):
        self.calls.append(group)
        tensor += self.others


def _batch():
    # SFT documents with 2 and 3 completion tokens, padded so padding must not count
    return pack([Example([1, 2], [[3, 4]]), Example([5], [[6, 7, 8]])], pad_to_multiple=16)


def _logp(mb):
    g = torch.Generator().manual_seed(0)
    return (-torch.rand(mb.tokens.shape, generator=g)).requires_grad_()


def _local_sums(mb, logp):
    """Plain per-document sums of completion log-probs, written out with a loop."""
    out = torch.zeros(mb.doc_pair.numel())
    for t in range(mb.tokens.shape[1]):
        d = int(mb.segment_ids[0, t])
        if d >= 0 and mb.loss_mask[0, t] > 0:
            out[d] += float(logp[0, t])
    return out


@pytest.fixture
def fake(monkeypatch):
    f = FakeDist(torch.tensor([-10.0, -20.0]))
    monkeypatch.setattr(sums_module, "dist", f)
    return f


def test_sums_are_all_reduced_over_a_cp_group_of_two(fake):
    mb = _batch()
    logp = _logp(mb)
    got = document_sums(logp, mb, CP2)
    assert fake.calls == [CP2]
    assert torch.allclose(got, _local_sums(mb, logp) + fake.others)
    # identity backward: each rank's tokens get d(sum)/d logp = their mask, not the group size times it
    (grad,) = torch.autograd.grad(got.sum(), logp)
    assert torch.equal(grad, mb.loss_mask)


@pytest.mark.parametrize("group", [None, CP1], ids=["no-cp-group", "cp-group-of-one"])
def test_no_all_reduce_without_a_cp_group_of_several_ranks(fake, group):
    mb = _batch()
    logp = _logp(mb)
    got = document_sums(logp, mb, group)
    assert fake.calls == []  # not over the whole world (8 ranks), not over a group of one
    assert torch.allclose(got, _local_sums(mb, logp))


def test_objective_loss_passes_its_cp_group_to_the_sums(fake):
    mb = _batch()
    logp = _logp(mb)
    obj = build_objective(ObjectiveConfig(loss_type="sft"))
    loss, _ = obj.loss(logp, mb, 5.0, CP2)
    assert fake.calls == [CP2]
    want = -(_local_sums(mb, logp).sum() + fake.others.sum()) / 5.0
    assert torch.allclose(loss, want)
    (grad,) = torch.autograd.grad(loss, logp)
    assert torch.allclose(grad, -mb.loss_mask / 5.0)
