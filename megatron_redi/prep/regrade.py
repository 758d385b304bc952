"""Re-verification (`--reverify`): every generation regraded with math-verify against the row's `answer`.

The grading itself (integer verdicts, per-generation time limits) is :func:`megatron_redi.grading.problem.
grade_problem`; it runs in the grading package's process pool, whose hard deadline kills a worker stuck in
code that signals cannot interrupt, so one pathological generation cannot stall the build.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from megatron_redi.grading.pool import GradingPool
from megatron_redi.grading.problem import grade_problem_request, problem_timed_out


class Regrader:
    """Grade problems in batches on `workers` processes (0 = one per CPU), `timeout` seconds per generation.

    A problem whose worker returns nothing for `timeout * (generations + 1) + 60` seconds grades TIMEOUT for
    every generation, and its worker is replaced.
    """

    def __init__(self, workers: int = 0, timeout: float = 10.0) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.timeout = timeout
        self._pool = GradingPool(self.workers)

    def _budget(self, n_items: int) -> float:
        return self.timeout * n_items + 60.0

    def grade(self, tasks: Sequence[tuple[str, Sequence[str]]]) -> list[list[int]]:
        """Grades for each (answer, generations) task, in order."""
        if not tasks:
            return []
        return self._pool.grade(
            [(a, list(g)) for a, g in tasks],
            self.timeout,
            fn=grade_problem_request,
            hard_timeout_s=self._budget(max(len(g) for _, g in tasks) + 1),
            on_failure=problem_timed_out,
        )

    def close(self) -> None:
        self._pool.close()
