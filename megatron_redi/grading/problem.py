"""Every generation of one problem graded against its raw reference answer, as integer verdicts.

This is the dataset builder's re-verification (``--reverify``): math-verify's own answer search over the
text after the last ``</think>``, one time limit for the reference answer and one per generation. A
reference answer that cannot be parsed grades nothing correct (ERROR for every generation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .extraction import answer_region
from .graders import _mv_import, gold_text
from .timeout import run_with_timeout

# Verdict of one generation.
INCORRECT, CORRECT, TIMEOUT, ERROR = 0, 1, -1, -2

# What the process pool sends to a worker for one problem: (reference answer, generations).
ProblemRequest = tuple[str, Sequence[str]]


def grade_problem(task: tuple[str, Sequence[str], float]) -> list[int]:
    """Grade every generation of one problem against its reference answer: CORRECT, INCORRECT, TIMEOUT or
    ERROR per generation. The time limits need SIGALRM, so run it in a process's main thread."""
    answer, generations, timeout = task
    mv = _mv_import()
    gold_box: list = []

    def parse_gold() -> int:
        try:
            gold_box.append(mv.parse(gold_text(answer), parsing_timeout=None))
        except Exception:
            return ERROR
        return CORRECT

    status = run_with_timeout(parse_gold, timeout, TIMEOUT)
    if status == TIMEOUT:
        return [TIMEOUT] * len(generations)
    if status != CORRECT or not gold_box[0]:  # an unparsable reference answer grades nothing correct
        return [ERROR] * len(generations)
    gold = gold_box[0]

    def grade(text: str) -> Callable[[], int]:
        def go() -> int:
            try:
                pred = mv.parse(answer_region(text), parsing_timeout=None)
                return CORRECT if mv.verify(gold, pred, timeout_seconds=None) else INCORRECT
            except Exception:
                return ERROR

        return go

    return [run_with_timeout(grade(g), timeout, TIMEOUT) for g in generations]


def grade_problem_request(request: ProblemRequest, timeout_s: float) -> list[int]:
    """:func:`grade_problem` as a task function of :class:`~.pool.GradingPool` (``fn=``)."""
    answer, generations = request
    return grade_problem((answer, generations, timeout_s))


def problem_timed_out(request: ProblemRequest, why: str, timed_out: bool) -> list[int]:
    """The pool's result for a problem whose worker was killed or died (``on_failure=``): TIMEOUT for all."""
    return [TIMEOUT] * len(request[1])
