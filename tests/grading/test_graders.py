"""Grading on a table of tricky pairs, for both graders, in-process and through the process pool."""

import os
import signal
import threading
import time

import pytest

from megatron_redi.grading import graders
from megatron_redi.grading.graders import GradeRequest, grade, math_verify_grade, rllm_grade
from megatron_redi.grading.pool import shared_pool

# The worker count of tests/evaluation/eval_checks.py: every test in a process reuses one grading pool.
WORKERS = 2


def boxed(s: str) -> str:
    return "Some reasoning first. So the answer is $\\boxed{" + s + "}$."


# (label, response, gold answers, list mode, math-verify verdict, rllm-style verdict)
TABLE = [
    ("frac", boxed("\\frac{1}{2}"), ("\\frac{1}{2}",), "any", True, True),
    ("dfrac", boxed("\\dfrac{1}{2}"), ("\\frac{1}{2}",), "any", True, True),
    ("a/b", boxed("1/2"), ("\\frac{1}{2}",), "any", True, True),
    ("frac12 shorthand", boxed("\\frac{1}{{2}}"), ("\\frac12",), "any", True, True),
    ("decimal", boxed("0.5"), ("\\frac{1}{2}",), "any", True, True),
    ("rounded decimal", boxed("4.6667"), ("\\frac{14}{3}",), "any", False, False),
    # rllm (like the MATH grader) refuses unreduced fractions; math-verify compares values.
    ("unreduced fraction", boxed("\\frac{2}{4}"), ("\\frac{1}{2}",), "any", True, False),
    ("negative fraction", boxed("-\\frac{1}{3}"), ("-1/3",), "any", True, True),
    ("sum of fractions", boxed("\\frac{1}{2}+\\frac{1}{3}"), ("\\frac{5}{6}",), "any", True, True),
    ("sqrt in frac", boxed("\\frac{\\sqrt{3}}{2}"), ("\\frac{\\sqrt 3}{2}",), "any", True, True),
    ("rationalised", boxed("\\frac{1}{\\sqrt{2}}"), ("\\frac{\\sqrt{2}}{2}",), "any", True, True),
    ("half-open interval", boxed("(2, 5]"), ("(2,5]",), "any", True, True),
    ("wrong bracket", boxed("[2, 5]"), ("(2,5]",), "any", False, False),
    ("union", boxed("(-\\infty, 3) \\cup (4, \\infty)"), ("(-\\infty,3)\\cup(4,\\infty)",), "any",
     True, True),
    # sets are unordered for math-verify; the rllm grader compares element by element.
    ("set order", boxed("\\{3,2,1\\}"), ("\\{1,2,3\\}",), "any", True, False),
    ("tuple order", boxed("(2,1)"), ("(1,2)",), "any", False, False),
    ("tuple left/right", boxed("(3, \\frac{\\pi}{2})"), ("\\left( 3, \\frac{\\pi}{2} \\right)",), "any",
     True, True),
    ("text choice", boxed("\\text{(C)}"), ("C",), "any", True, True),
    ("text word", boxed("\\text{Evelyn}"), ("\\text{Evelyn}",), "any", True, True),
    ("unit text", boxed("10\\text{ cm}"), ("10",), "any", True, True),
    ("unit mathrm", boxed("10 \\mathrm{~cm}"), ("10",), "any", True, True),
    ("degrees", boxed("30^\\circ"), ("30",), "any", True, True),
    ("degrees braces", boxed("30^{\\circ}"), ("30",), "any", True, True),
    ("percent", boxed("25\\%"), ("25",), "any", True, True),
    ("percent as fraction", boxed("0.25"), ("25\\%",), "any", True, False),
    ("negative", boxed("-3"), ("-3",), "any", True, True),
    ("sign error", boxed("3"), ("-3",), "any", False, False),
    ("spaced minus", boxed("- 3"), ("-3",), "any", True, True),
    ("leading zero (AIME)", boxed("25"), ("025",), "any", True, True),
    ("thousands comma", boxed("12,000"), ("12000",), "any", True, True),
    ("thousands {,}", boxed("12{,}000"), ("12000",), "any", True, True),
    ("dollar sign", boxed("\\$18.90"), ("18.90",), "any", True, True),
    ("equation lhs", boxed("x = 5"), ("5",), "any", True, True),
    ("polynomial", boxed("x^{2}+2x+1"), ("(x+1)^2",), "any", True, True),
    ("radicals", boxed("2\\sqrt{2}"), ("\\sqrt{8}",), "any", True, True),
    ("scientific", boxed("8.7 \\times 10^{8}"), ("8.7 \\times 10^{8}",), "any", True, True),
    ("nested braces", boxed("\\frac{\\frac{1}{2}}{\\frac{3}{4}}"), ("\\frac{2}{3}",), "any", True, True),
    # OlympiadBench multi-answer: one gold string holding several answers, order free for math-verify.
    ("multi-answer gold string", boxed("84, 69"), ("$69$,$84$",), "all", True, False),
    ("all of a gold list", boxed("1, 3"), ("1", "3"), "all", True, True),
    ("part of a gold list", boxed("1"), ("1", "3"), "all", False, False),
    ("any of a gold list (Minerva)", boxed("0.02"), ("0.01", "0.02"), "any", True, True),
    ("same, but all required", boxed("0.02"), ("0.01", "0.02"), "all", False, False),
    # several answers in several boxes: math-verify joins the boxes (as its own extraction does) when the
    # gold holds several answers; the rllm grader reads the last box only, as rllm does
    ("answers split over boxes", "\\boxed{1} and \\boxed{3}", ("1,3",), "all", True, False),
    ("answers split over boxes, gold list", "\\boxed{3} and \\boxed{1}", ("1", "3"), "all", True, False),
    ("one answer: the last box counts", "\\boxed{5} or rather \\boxed{3}", ("5",), "any", False, False),
    ("one answer: the last box counts (2)", "\\boxed{3} or rather \\boxed{5}", ("5",), "any", True, True),
    ("split boxes, one missing", "\\boxed{(2,2)} and \\boxed{(1,1)}", ("(2,2), (6,2)",), "any", False, False),
    ("empty box", boxed(""), ("1",), "any", False, False),
    ("missing box", "I could not solve it, the answer is 1.", ("1",), "any", False, False),
    ("truncated box", "so the answer is \\boxed{\\frac{1}{2", ("\\frac{1}{2}",), "any", False, False),
]


@pytest.mark.parametrize("label, response, gold, mode, mv, rl", TABLE, ids=[t[0] for t in TABLE])
def test_tricky_pairs(label, response, gold, mode, mv, rl):
    assert math_verify_grade(response, gold, mode).correct is mv
    assert rllm_grade(response, gold, mode).correct is rl


def test_pool_agrees_with_in_process_grading():
    reqs = [GradeRequest(r, g, m, ("math_verify", "rllm")) for _, r, g, m, _, _ in TABLE]
    results = shared_pool(WORKERS).grade(reqs, timeout_s=20)
    for (label, _, _, _, mv, rl), res in zip(TABLE, results):
        assert not res.timed_out and res.error is None, label
        assert (res.verdicts["math_verify"].correct, res.verdicts["rllm"].correct) == (mv, rl), label


def test_extracted_answer_is_the_last_box():
    v = math_verify_grade("\\boxed{1} ... \\boxed{\\frac{1}{2}}", ("0.5",))
    assert (v.extracted, v.correct) == ("\\frac{1}{2}", True)


def test_rllm_uses_text_after_think():
    resp = "<think>maybe \\boxed{4}</think> The answer is \\boxed{5}"
    assert rllm_grade(resp, ("5",)).extracted == "5"
    resp2 = "<think>I think \\boxed{5}</think> So the final answer is 6."
    assert rllm_grade(resp2, ("5",)).correct is False  # nothing boxed after </think>
    assert rllm_grade("\\boxed{5}", ("5",)).correct is True
    assert rllm_grade("\\boxed{5}", ("5",), require_think=True).correct is False


def test_math_verify_extraction_mode():
    v = math_verify_grade("The final answer is $\\frac{1}{2}$", ("0.5",), extraction="math_verify")
    assert v.correct and v.extracted
    v = math_verify_grade("Answer: 42", ("42",), extraction="regex:Answer:\\s*(\\d+)")
    assert (v.extracted, v.correct) == ("42", True)


def test_grading_in_a_thread_does_not_raise():
    # math-verify's own signal timeouts raise in threads; ours are off there and grading still works.
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", grade(GradeRequest(boxed("0.5"), ("1/2",)), 5)))
    t.start()
    t.join()
    assert out["r"].verdicts["math_verify"].correct and out["r"].error is None


def test_per_sample_time_limit(monkeypatch):
    monkeypatch.setattr(graders, "_grade_one", lambda req, g: time.sleep(5))
    t = time.monotonic()
    res = grade(GradeRequest(boxed("1"), ("1",), graders=("math_verify", "rllm")), timeout_s=0.3)
    assert time.monotonic() - t < 2
    assert res.timed_out
    assert {k: (v.extracted, v.correct) for k, v in res.verdicts.items()} == {
        "math_verify": ("1", False), "rllm": ("1", False)}


def test_grader_exception_is_recorded_not_raised(monkeypatch):
    def boom(req, g):
        raise RuntimeError("parser exploded")

    monkeypatch.setattr(graders, "_grade_one", boom)
    res = grade(GradeRequest(boxed("1"), ("1",)), timeout_s=5)
    assert res.verdicts["math_verify"].correct is False
    assert "parser exploded" in res.error


# Module-level task functions for the pool (pickled by name into the workers).
def _hang_ignoring_alarm(req, timeout_s):
    if req.response == "hang":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # like a hang inside C code
        time.sleep(60)
    return grade(req, timeout_s)


def _die(req, timeout_s):
    if req.response == "die":
        os._exit(3)
    return grade(req, timeout_s)


def test_pool_kills_a_stuck_worker_and_carries_on():
    pool = shared_pool(WORKERS)
    reqs = [GradeRequest(boxed(str(i)), (str(i),)) for i in range(6)]
    reqs.insert(2, GradeRequest("hang", ("1",)))
    t = time.monotonic()
    res = pool.grade(reqs, timeout_s=0.5, fn=_hang_ignoring_alarm, hard_timeout_s=1.5)
    assert time.monotonic() - t < 20
    assert res[2].timed_out and "killed" in res[2].error
    assert [r.verdicts["math_verify"].correct for i, r in enumerate(res) if i != 2] == [True] * 6


def test_pool_survives_a_dying_worker():
    pool = shared_pool(WORKERS)
    reqs = [GradeRequest(boxed(str(i)), (str(i),)) for i in range(5)] + [GradeRequest("die", ("1",))]
    res = pool.grade(reqs, timeout_s=5, fn=_die)
    assert "died" in res[-1].error and not res[-1].verdicts["math_verify"].correct
    assert all(r.verdicts["math_verify"].correct for r in res[:-1])
    # and the pool still works afterwards
    assert pool.grade([GradeRequest(boxed("2"), ("2",))], 5)[0].verdicts["math_verify"].correct


def test_in_process_mode_matches():
    from megatron_redi.grading.pool import GradingPool

    reqs = [GradeRequest(r, g, m, ("math_verify", "rllm")) for _, r, g, m, _, _ in TABLE[:8]]
    serial = GradingPool(0).grade(reqs, 20)
    assert [(r.verdicts["math_verify"].correct, r.verdicts["rllm"].correct) for r in serial] == [
        (t[4], t[5]) for t in TABLE[:8]]
