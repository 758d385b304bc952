"""pass@k edge cases: one sample per problem is valid, and bad matrices are refused with a message
that says what is wrong (found by mutation testing, docs/MUTATION.md)."""

import math

import pytest

from megatron_redi.evaluation import passk


def test_one_sample_per_problem_is_a_valid_matrix():
    # greedy evaluation: n = 1 sample per problem; pass@1 is the fraction of problems solved
    matrix = [[1], [0], [1], [1]]
    assert passk.benchmark_pass_at_k(matrix, 1) == pytest.approx(3 / 4)
    assert passk.per_index_accuracy(matrix) == pytest.approx([3 / 4])
    # one per-index accuracy: its population std is 0, and so is the SEM
    assert passk.sem(matrix) == (0.0, 0.0)


def test_sem_of_two_sample_indices_by_hand():
    # per-index accuracies [1, 0] -> mean 1/2, population std 1/2, SEM (1/2)/sqrt(2)
    std, sem = passk.sem([[1, 0], [1, 0]])
    assert std == pytest.approx(0.5)
    assert sem == pytest.approx(0.5 / math.sqrt(2))


def test_empty_matrix_error_names_the_problem():
    with pytest.raises(ValueError, match="^no problems$"):
        passk.benchmark_pass_at_k([], 1)


def test_ragged_matrix_error_names_the_problem():
    with pytest.raises(ValueError, match=r"^every problem needs the same number \(>= 1\) of samples$"):
        passk.per_index_accuracy([[1, 0], [1]])
    with pytest.raises(ValueError, match="same number"):
        passk.per_index_accuracy([[]])


def test_bad_counts_error_names_the_counts():
    with pytest.raises(ValueError, match=r"^need 0 <= c <= n and 1 <= k <= n, got n=4 c=5 k=1$"):
        passk.pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="got n=4 c=1 k=5"):
        passk.pass_at_k(4, 1, 5)
