"""pass@k and the paper's standard error, as pure functions of a correctness matrix.

``correct[p][j]`` is sample ``j`` of problem ``p``. pass@1 is the mean over all samples. The SEM
follows the paper's evaluation code: take the benchmark accuracy of each sample index ``j`` (a column
mean), then population std (ddof = 0) of those ``n`` accuracies divided by sqrt(n).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of P(at least one of k draws without replacement is correct),
    given c correct among n samples: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _check(correct: Sequence[Sequence[bool]]) -> int:
    if not correct:
        raise ValueError("no problems")
    n = len(correct[0])
    if n < 1 or any(len(row) != n for row in correct):
        raise ValueError("every problem needs the same number (>= 1) of samples")
    return n


def benchmark_pass_at_k(correct: Sequence[Sequence[bool]], k: int) -> float:
    _check(correct)
    return sum(pass_at_k(len(row), sum(map(bool, row)), k) for row in correct) / len(correct)


def per_index_accuracy(correct: Sequence[Sequence[bool]]) -> list[float]:
    n = _check(correct)
    return [sum(bool(row[j]) for row in correct) / len(correct) for j in range(n)]


def sem(correct: Sequence[Sequence[bool]]) -> tuple[float, float]:
    """(std of per-sample-index accuracies with ddof 0, that std / sqrt(n))."""
    acc = per_index_accuracy(correct)
    mean = sum(acc) / len(acc)
    std = math.sqrt(sum((a - mean) ** 2 for a in acc) / len(acc))
    return std, std / math.sqrt(len(acc))
