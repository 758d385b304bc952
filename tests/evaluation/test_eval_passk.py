import itertools
import math

import pytest

from megatron_redi.evaluation import passk


def brute_force(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of n samples (the first c correct) that contain a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert passk.pass_at_k(n, c, k) == pytest.approx(brute_force(n, c, k), abs=1e-12)


def test_pass_at_1_is_fraction_correct():
    assert passk.pass_at_k(16, 5, 1) == pytest.approx(5 / 16)


def test_benchmark_pass_at_k_is_mean_over_problems():
    matrix = [[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]]
    expected = (brute_force(4, 2, 2) + 0.0 + 1.0) / 3
    assert passk.benchmark_pass_at_k(matrix, 2) == pytest.approx(expected)


def test_sem_hand_computation():
    # per-sample-index accuracies: [2/3, 0, 2/3, 1]; mean 7/12;
    # squared deviations 1/144, 49/144, 1/144, 25/144 -> population variance 19/144 -> std sqrt(19)/12
    matrix = [[1, 0, 1, 1], [0, 0, 1, 1], [1, 0, 0, 1]]
    assert passk.per_index_accuracy(matrix) == pytest.approx([2 / 3, 0, 2 / 3, 1])
    std, sem = passk.sem(matrix)
    assert std == pytest.approx(math.sqrt(19) / 12)
    assert sem == pytest.approx(math.sqrt(19) / 24)  # / sqrt(n) with n = 4


def test_sem_zero_when_every_index_scores_the_same():
    assert passk.sem([[1, 1], [0, 0]]) == (0.0, 0.0)


@pytest.mark.parametrize("args", [(4, 5, 1), (4, 1, 0), (4, 1, 5), (4, -1, 1)])
def test_pass_at_k_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        passk.pass_at_k(*args)


def test_ragged_matrix_rejected():
    with pytest.raises(ValueError, match="same number"):
        passk.sem([[1, 0], [1]])
