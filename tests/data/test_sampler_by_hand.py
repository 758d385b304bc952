"""The global sampler's contract, checked directly (found by mutation testing, docs/MUTATION.md): the
order of epoch e is the permutation seeded with seed + e, no shuffle means dataset order, a dataset of one
example is valid, and bad sizes are refused with messages naming them."""

from __future__ import annotations

import numpy as np
import pytest

from megatron_redi.data.sampler import GlobalBatchSampler


def test_epoch_e_is_numpys_permutation_seeded_with_seed_plus_e():
    s = GlobalBatchSampler(10, 10, 0, 1, seed=3)
    for epoch in range(3):
        want = np.random.default_rng(3 + epoch).permutation(10).tolist()
        assert s.global_indices(10 * epoch) == want
    # so epoch 1 of seed 3 is epoch 0 of seed 4
    assert s.global_indices(10) == GlobalBatchSampler(10, 10, 0, 1, seed=4).global_indices(0)


def test_without_shuffle_the_order_is_the_dataset_order_every_epoch():
    s = GlobalBatchSampler(5, 4, 0, 1, seed=3, shuffle=False)
    assert s.global_indices(0) == [0, 1, 2, 3]
    assert s.global_indices(4) == [4, 0, 1, 2]  # crosses into epoch 1
    assert GlobalBatchSampler(5, 4, 1, 2, seed=3, shuffle=False).local_indices(4) == [1, 2]


def test_a_dataset_of_one_example_is_valid():
    assert GlobalBatchSampler(1, 3, 0, 1, seed=0).global_indices(0) == [0, 0, 0]


def test_bad_sizes_are_refused_with_their_values():
    with pytest.raises(ValueError) as err:
        GlobalBatchSampler(0, 4, 0, 1, seed=0)
    assert str(err.value) == "the dataset is empty"
    with pytest.raises(ValueError) as err:
        GlobalBatchSampler(10, 6, 0, 4, seed=0)
    assert str(err.value) == "--global-batch-size 6 is not divisible by the data-parallel size 4"


def test_epoch_of_is_consumed_over_dataset_size():
    s = GlobalBatchSampler(10, 4, 0, 1, seed=0)
    assert s.epoch_of(0) == 0.0 and s.epoch_of(25) == 2.5
