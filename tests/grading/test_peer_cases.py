"""Grading cases from a peer's own test suite, as an independent check of both graders.

Source: Math-Verify's regression tests, `tests/test_all.py` (huggingface/Math-Verify, MIT; read from the
copy vendored at open-compass/VLMEvalKit `vlmeval/dataset/PHYSICS/Math-Verify/tests/test_all.py`):
`test_sets_handling`, `test_latex_notation`, `test_percent_notation`, `test_number_extraction`,
`test_simple_fraction_notation`. Our graders read only the final `\\boxed{}` answer (the evaluation prompt
asks for one), so each prediction is boxed here; the verdicts are Math-Verify's.
"""

import pytest

from megatron_redi.grading.graders import math_verify_grade, rllm_grade

# (gold, prediction inside \boxed{}, Math-Verify's verdict)
CASES = [
    ("[0,1)", "[0,1)", True), ("[0,9)", "[0,1)", False), ("(0,9)", "[0,9)", False), ("1", "-[0,1)", False),
    ("1/3", "\\cfrac{1}{3}", True), ("1/3", "\\dfrac{1}{3}", True), ("1/3", "\\frac13", True),
    ("\\sqrt{3}", "\\sqrt3", True), ("1/3", "\\frac{1}{3} \\text{meters}", True), ("1/3", "k = \\frac{1}{3}", True),
    ("1/3", "\\left( \\frac{1}{3} \\right)", True), ("28\\%", "28", True), ("28\\%", "28 \\%", True),
    ("7425000", "7,425,000", True), ("1000.99", "1,000.99", True), ("10/9", "\\frac{10}{9}", True),
    ("-10/9", "-\\frac{10}{9}", True), ("0.4", ".4", True), ("10", "(9+1)", True),
]
# where the rllm-style grader deliberately keeps upstream rllm's reading (megatron_redi/evaluation/README.md):
# a parenthesised answer is a tuple / interval, never evaluated as an expression
RLLM_DIFFERS = {("10", "(9+1)")}


@pytest.mark.parametrize("gold,pred,verdict", CASES)
def test_math_verify_grader_agrees_with_math_verify_tests(gold, pred, verdict):
    assert math_verify_grade(f"so \\boxed{{{pred}}}", (gold,), "any").correct is verdict


@pytest.mark.parametrize("gold,pred,verdict", CASES)
def test_rllm_grader_agrees_except_where_documented(gold, pred, verdict):
    got = rllm_grade(f"so \\boxed{{{pred}}}", (gold,), "any").correct
    assert got is (not verdict if (gold, pred) in RLLM_DIFFERS else verdict)
