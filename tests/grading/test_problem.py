"""The builder's per-problem verdicts through the shared grading pool (the path `--reverify` takes)."""

import signal
import time

from megatron_redi.grading.pool import shared_pool
from megatron_redi.grading.problem import CORRECT, INCORRECT, TIMEOUT, grade_problem_request, problem_timed_out

WORKERS = 2  # the count of tests/evaluation/eval_checks.py: one pool per test process


def _hang_ignoring_alarm(req, timeout_s):
    if req[0] == "hang":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # like a hang inside C code
        time.sleep(60)
    return grade_problem_request(req, timeout_s)


def test_problems_in_the_pool_and_a_stuck_one_times_out():
    reqs = [("1", ["$\\boxed{1}$", "$\\boxed{2}$"]), ("hang", ["a", "b", "c"]), ("\\frac{1}{2}", ["So $0.5$."])]
    t = time.monotonic()
    res = shared_pool(WORKERS).grade(
        reqs, 5.0, fn=_hang_ignoring_alarm, hard_timeout_s=1.5, on_failure=problem_timed_out
    )
    assert time.monotonic() - t < 20
    assert res == [[CORRECT, INCORRECT], [TIMEOUT] * 3, [CORRECT]]
