"""The rllm-style grader's comparison helpers on hand-picked strings (found by mutation testing,
docs/MUTATION.md): gold delimiters, integer detection, tuple/interval splitting, the
sympy guard, and rllm_equal's interval-bracket, length and fraction rules past the string shortcuts."""

from __future__ import annotations

import pytest

from megatron_redi.grading.graders import (
    _is_int_string,
    _split_tuple,
    _sympy_equal,
    gold_latex,
    gold_text,
    rllm_equal,
)


@pytest.mark.parametrize("text,want", [
    ("$12$", "12"),
    ("$ 12 $", "12"),
    ("$$", ""),
    ("5$", "5"),                # a stray delimiter goes
    ("$69$,$84$", "69 , 84"),   # OlympiadBench: one span per answer
    ("$221,$8$", "221, 8"),     # OlympiadBench 2349: a misplaced delimiter
    ("$(-\\infty, 0) \\cup\\{1\\}$.", "(-\\infty, 0) \\cup\\{1\\}"),  # OlympiadBench 1970: a period
    ("\\$18.90", "\\$18.90"),   # MATH-500 algebra/2780: an escaped dollar is a dollar sign
    ("$\\$5$", "\\$5"),
])
def test_gold_latex(text, want):
    assert gold_latex(text) == want


def test_gold_text_delimits_bare_latex_and_keeps_boxes():
    assert gold_text("\\frac{1}{2}") == "$\\frac{1}{2}$"
    assert gold_text("\\boxed{5}") == "\\boxed{5}"
    assert gold_text("$5$") == "$5$"
    assert gold_text("\\$32,\\!348") == "$\\$32,\\!348$"  # MATH-500 algebra/2626


@pytest.mark.parametrize("text,want", [
    ("5", True), ("-7", True), ("3.0", True),
    ("12,000", False),          # separators are joined once, in normalize_for_sympy, for a lone number
    ("0.0000001", True),        # exactly the 1e-7 tolerance
    ("2.5", False), ("24.9999", False), ("x", False), ("", False),
])
def test_is_int_string(text, want):
    assert _is_int_string(text) is want


@pytest.mark.parametrize("expr,want", [
    ("(1,2)", ["1", "2"]),
    ("[1, 2]", ["1", "2"]),
    ("(1,2]", ["1", "2"]),
    ("(1)", ["1"]),
    ("()", ["()"]),             # too short to hold a tuple
    ("1,2", ["1,2"]),           # no brackets: one item
    ("(1,2", ["(1,2"]),
    ("((1,2)", ["((1,2)"]),     # nested brackets: one item
    ("(1,2))", ["(1,2))"]),
    ("((1,2),(3,4))", ["((1,2),(3,4))"]),
    ("(1,000,2)", ["1", "000", "2"]),  # commas split: upstream's separator stripping merged parts
])
def test_split_tuple(expr, want):
    assert _split_tuple(expr) == want


def test_sympy_equal_on_up_to_two_unknowns():
    assert _sympy_equal("x*y", "y*x")
    assert _sympy_equal("x*y+sqrt(2)", "sqrt(2)+y*x")  # function names are not unknowns


@pytest.mark.parametrize("a,b", [
    ("x*y*z", "z*y*x"),         # three unknowns: refused
    ("2^1000", "2^1000"),       # a huge power: refused
    ("2^(3^4)", "5"),           # a power tower: refused
])
def test_sympy_equal_refuses_risky_expressions(a, b):
    assert _sympy_equal(a, b) is False


def test_rllm_equal_compares_interval_brackets_past_the_string_shortcuts():
    # 5.0 vs 5 differ as strings, so the bracket rule and the item comparison decide
    assert rllm_equal("(2, 5.0]", "(2,5]")
    assert not rllm_equal("[2, 5.0]", "(2,5]")
    assert not rllm_equal("(2, 5.0)", "(2,5]")


def test_rllm_equal_needs_the_same_number_of_items():
    assert not rllm_equal("(1,2,3)", "(1,2)")
    assert not rllm_equal("(1,2)", "(1,2,3)")


def test_rllm_equal_accepts_equal_reduced_fractions_inside_a_tuple():
    assert rllm_equal("(1/2, 3.0)", "(1/2,3)")
    assert not rllm_equal("(2/4, 3.0)", "(1/2,3)")  # an unreduced fraction is not the answer


def test_rllm_equal_empty_answer_is_wrong():
    assert not rllm_equal("", "5")
    assert not rllm_equal("$$", "5")
    assert rllm_equal("", "(1,2)") is False  # an empty answer against a tuple: False, not an IndexError
    assert rllm_equal("(1,2)", "") is False
