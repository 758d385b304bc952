import pytest

from megatron_redi.grading.errors import ConfigError
from megatron_redi.grading.extraction import Extraction, after_think, all_boxed, last_boxed


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the answer is \\boxed{42}.", "42"),
        ("\\boxed{1} first, then \\boxed{2}", "2"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{x^{2^{3}}+\\sqrt{\\frac{a}{b}}}", "x^{2^{3}}+\\sqrt{\\frac{a}{b}}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not close the box
        ("\\fbox{7}", "7"),
        ("\\boxed 5 is it", "5"),
        ("\\boxed {9}", "9"),
        ("$\\boxed{ 12 }$", "12"),
        ("\\boxed{3} and then, cut off: \\boxed{4", "3"),  # unclosed last box: previous closed one
        ("\\boxed{\\boxed{2}}", "2"),  # the box that starts last is the inner one
        ("\\boxed{}", ""),
        ("no answer here", None),
        ("\\boxedx{3}", None),  # another command, not a box
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_all_boxed_in_order():
    assert all_boxed("a \\boxed{1} b \\fbox{2} c \\boxed{\\text{x}}") == ["1", "2", "\\text{x}"]


def test_after_think():
    assert after_think("<think>a</think>b</think>c") == "b</think>c"
    assert after_think("no thinking close") is None


def test_extraction_modes():
    resp = "<think>try \\boxed{1}</think> final \\boxed{2}. Answer: 17"
    assert Extraction.parse("boxed")(resp) == "2"
    assert Extraction.parse("think_boxed")(resp) == "2"
    assert Extraction.parse("think_boxed")("<think>\\boxed{1} never closed") is None
    assert Extraction.parse("regex:Answer:\\s*(\\S+)")(resp) == "17"
    assert Extraction.parse("regex:\\d+")(resp) == "17"  # no group: whole last match
    assert Extraction.parse("regex:(nothing)")(resp) is None
    assert Extraction.parse("regex:x").spec == "regex:x"


@pytest.mark.parametrize("spec", ["boxd", "regex:(unclosed"])
def test_bad_extraction_spec(spec):
    with pytest.raises(ConfigError, match="--extraction"):
        Extraction.parse(spec)
