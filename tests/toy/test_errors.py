"""The error classifier names the teacher's own mistakes by their kind, and other departures by theirs."""


import pytest

from megatron_redi.toy.errors import classify, problem_of, tally
from megatron_redi.toy.teacher import Problem, TeacherConfig, eligible_mistakes, iter_problems, solve

EXPECTED = {"dropped_carry": "dropped_carry", "off_by_one": "arithmetic",
            "smaller_from_larger": "smaller_from_larger", "sign_slip": "sign_slip"}


def test_every_teacher_mistake_is_classified_as_its_kind():
    seen = set()
    for p in iter_problems(300, 4, TeacherConfig(min_digits=2, max_digits=4), held_out=False):
        assert classify(p, solve(p)[0]) == "no_error"
        for kind, col in eligible_mistakes(p):
            assert classify(p, solve(p, kind, col)[0]) == EXPECTED[kind], (p, kind, col)
            seen.add(kind)
    assert seen == set(EXPECTED)


def _edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


def test_other_departures():
    add = Problem(0, 457, 386, "+", "")
    text = solve(add)[0]
    assert classify(add, _edit(text, "We add 457", "We add 475")) == "misread_operands"
    assert classify(add, _edit(text, "tens: 5 + 8", "tens: 6 + 8")) == "misread_digit"
    assert classify(add, _edit(text, "= 13, write 3, carry 1", "= 13, write 3, carry 0")) == "write_or_carry"
    assert classify(add, _edit(text, "So 457 + 386 = 843.", "So 457 + 386 = 834.")) == "assembly"
    assert classify(add, _edit(text, "ones: 7 + 6 + 0", "ones 7 + 6 + 0")) == "broken_format"
    neg = Problem(0, 120, 345, "-", "")
    text = solve(neg)[0]
    since = next(line for line in text.splitlines() if line.startswith("Since"))
    assert classify(neg, _edit(text, since + "\n", "")) == "missed_negative"


def test_problem_of_reads_the_prompt_and_tally_counts():
    prompt = "<|im_start|>system\nPlease reason step by step.<|im_end|>\n<|im_start|>user\nA tank held 84 liters " \
             "and 57 were drained.<|im_end|>\n<|im_start|>assistant\n"
    p = problem_of(prompt, "27")
    assert (p.a, p.b, p.op) == (84, 57, "-")
    assert problem_of("Add 12 and 30.", "42").op == "+"
    with pytest.raises(ValueError, match="neither"):
        problem_of("12 and 30", "5")
    good, bad = solve(p)[0], solve(p, "off_by_one", 0)[0]
    counts = tally([{"prompt": prompt, "gold": ["27"], "response": r} for r in (good, good, bad)])
    assert counts == {"no_error": 2, "arithmetic": 1}
