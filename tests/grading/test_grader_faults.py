"""Grader fault kinds found by running peers' grading cases through ``--grade-jsonl``, each fixed as a
kind, plus peer cases with their source file named. Where we deliberately differ from the upstream
(PRM800K / rllm) grader, the case says so."""

import pytest

from megatron_redi.grading.graders import math_verify_grade, rllm_equal, rllm_grade


def boxed(s: str) -> str:
    return "So the answer is $\\boxed{" + s + "}$."


# (gold, prediction, correct) for BOTH graders: no normalisation may merge the parts of a tuple,
# interval, set or list; real thousands separators still match. Upstream PRM800K/rllm strips
# "d,ddd" commas before splitting tuples, so (2,100) == 2100 there: a deliberate deviation.
THOUSANDS = [
    ("(2,100)", "2100", False), ("[1,250]", "1250", False), ("(1,250]", "1250", False),
    ("\\{2,100\\}", "2100", False), ("2, 100", "2100", False), ("32349", "32, 349", False),
    ("(2,100)", "(2,100)", True), ("[1,250]", "[1, 250]", True),
    ("48,000", "48000", True), ("48000", "48,000", True), ("1,000,000", "1000000", True),
    ("12{,}000", "12000", True), ("\\$32,\\!348", "32348", True), ("32348", "32,348", True),
]


@pytest.mark.parametrize("gold, pred, ok", THOUSANDS, ids=[f"{g}|{p}" for g, p, _ in THOUSANDS])
def test_no_normalisation_merges_the_parts_of_a_tuple(gold, pred, ok):
    assert rllm_grade(boxed(pred), (gold,)).correct is ok
    assert math_verify_grade(boxed(pred), (gold,)).correct is ok


# MATH-500 golds with an escaped dollar (algebra/2626, algebra/2780, prealgebra/1203) were never
# matched by the math_verify grader: "\$" was read as a math delimiter and the gold parsed to nothing.
@pytest.mark.parametrize("gold, pred", [("\\$18.90", "\\$18.90"), ("\\$18.90", "18.90"), ("\\$36", "36"),
                                        ("\\$32,\\!348", "\\$32,348"), ("\\$32,\\!348", "32348")])
def test_escaped_dollar_golds(gold, pred):
    assert math_verify_grade(boxed(pred), (gold,)).correct
    assert rllm_grade(boxed(pred), (gold,)).correct
    assert not math_verify_grade(boxed("18.80"), ("\\$18.90",)).correct


# rllm-style normaliser gaps: relations, \cfrac, units in \textbf / \textnormal, \sec, numeric lhs.
RLLM = [
    ("x \\ge 3", "x \\geq 3", True), ("x \\le 3", "x \\leq 3", True), ("x \\ne 2", "x \\neq 2", True),
    ("x<3", "x \\lt 3", True), ("x>3", "x \\gt 3", True), ("x>3", "x \\lt 3", False),
    ("x \\ge 3", "x \\le 3", False),
    ("\\frac{1}{2}", "\\cfrac{1}{2}", True), ("\\frac{1}{3}", "\\cfrac{1}{2}", False),
    ("5", "5\\textbf{ cm}", True), ("5", "5 \\textnormal{ cm}", True), ("6", "5\\textbf{ cm}", False),
    ("\\frac{1}{\\cos x}", "\\sec x", True), ("\\cos x", "\\sec x", False), ("2\\sec x", "\\frac{2}{\\cos x}", True),
    # a short left-hand side is dropped only when it is a variable: "x = 5" is 5, "7 = 11a+c" is not 11a+c
    ("7 = 11a+c", "11a+c", False), ("5", "x = 5", True), ("7 = 11a+c", "7 = 11a+c", True),
]


@pytest.mark.parametrize("gold, pred, ok", RLLM, ids=[f"{g}|{p}" for g, p, _ in RLLM])
def test_rllm_normaliser_kinds(gold, pred, ok):
    assert rllm_grade(boxed(pred), (gold,)).correct is ok


# hendrycks/math modeling/math_equivalence_test.py (is_equiv(a, b) -> verdict), through our MATH-style
# rllm comparison. All agree.
HENDRYCKS = [
    ("\\tfrac{1}{2} + \\frac1{72}", "\\\\frac{1}{2} + 2/3", False),
    ("10, 4, -2", "4, 10, -2", False), ("10, 4, 2", "4, 12, 2", False),
    ("\\tfrac{1}{2} +\\! \\frac1{72}", "\\\\dfrac{1}{2} +\\frac{1}{72}", True),
    ("10\\text{ units}", "10 ", True), ("10\\text{ units}", "100 ", False), ("10", "\\$10", True),
    ("\\left(x-2\\right)\\left(x+2\\right)", "(x-2)(x+2)", True), ("0.1, 4, 2", "4, .1, 2", False),
    ("0.1", ".1", True), ("10\\%", "10", True), ("10\\sqrt{3} + \\sqrt4", "10\\sqrt3 + \\sqrt{4}", True),
    ("\\frac34i", "\\frac{3}{4}i", True), ("\\tfrac83", "\\frac{8}{3}", True),
    ("5x - 7y + 11z + 4 = 0", "x + y - z + 2 = 0", False), ("1/2", "\\frac{1}{2}", True),
]


@pytest.mark.parametrize("a, b, ok", HENDRYCKS, ids=[f"{a}|{b}" for a, b, _ in HENDRYCKS])
def test_hendrycks_math_equivalence_cases(a, b, ok):
    assert rllm_equal(a, b) is ok


# Several answers over several boxes. math_verify grader: the boxes of the answer region are joined
# when the gold holds several answers (Math-Verify's own parse joins every box: math_verify.parse on
# "\boxed{(2,2)} and \boxed{(6,2)}" gives {(2,2), (6,2)}). rllm grader: last box only, as rllm.
def test_answers_split_over_boxes():
    resp = "The pairs are $\\boxed{(2,2)}$ and $\\boxed{(6,2)}$."
    v = math_verify_grade(resp, ("(2,2), (6,2)",))
    assert v.correct and v.extracted == "(2,2), (6,2)"
    assert math_verify_grade(resp, ("$(2,2)$", "$(6,2)$"), "all").correct  # OlympiadBench gold list
    assert not math_verify_grade(resp, ("(2,2), (6,2), (1,1)",)).correct  # one missing
    assert not rllm_grade(resp, ("(2,2), (6,2)",)).correct
    # after </think>, boxes inside the thinking do not join the answer
    think = "<think>maybe \\boxed{(1,1)}</think> so \\boxed{(2,2)} and \\boxed{(6,2)}"
    assert math_verify_grade(think, ("(2,2), (6,2)",)).correct
    assert not math_verify_grade(think, ("(1,1), (2,2), (6,2)",)).correct
    # a single answer is still the last box: hedging over boxes earns nothing
    assert not math_verify_grade("\\boxed{5} or \\boxed{3}", ("5",)).correct
