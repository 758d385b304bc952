"""Where a student's worked solution first goes wrong, against the teacher's correct one.

Every sampled answer is compared line by line with the teacher's correct solution of the same problem; the
first line that differs names the error, so later lines (which follow from the first slip) are not
counted again. The kinds include the teacher's own mistakes (``dropped_carry``, ``smaller_from_larger``,
``sign_slip``; an arithmetic slip covers ``off_by_one``) so one can see whether Stage 2 removed the mistakes
its negatives showed, or others.
"""

from __future__ import annotations

import re
from collections import Counter

from megatron_redi.toy.teacher import Problem, solve

KINDS = ("no_error", "misread_operands", "missed_negative", "misread_digit", "dropped_carry", "smaller_from_larger",
         "arithmetic", "write_or_carry", "assembly", "sign_slip", "broken_format")

_ADD = re.compile(r"^\S+: (\d+) \+ (\d+) \+ (\d+) = (\d+), write (\d+), carry (\d+)$")
_SUB = re.compile(r"^\S+: (\d+) - (\d+) - (\d+) = (\d+), write (\d+), borrow (\d+)$")
_SMALLER = re.compile(r"^\S+: (\d+) - (\d+) = (\d+), write (\d+), borrow 0$")


def problem_of(text: str, answer: str | int) -> Problem:
    """The problem behind a held-out row: its first two integers, and + or - as the answer tells."""
    a, b = (int(x) for x in re.findall(r"\d+", text)[:2])
    op = "+" if a + b == int(answer) else "-"
    if op == "-" and a - b != int(answer):
        raise ValueError(f"{text!r}: answer {answer} is neither {a} + {b} nor {a} - {b}")
    return Problem(0, a, b, op, text)


def _column(line: str, want: str) -> str:
    """Kind of error in a column line `line` whose correct form is `want` (the inputs before it were right)."""
    w_add, w_sub = _ADD.match(want), _SUB.match(want)
    got = (_ADD if w_add else _SUB).match(line)
    if got is None:
        if w_sub and _SMALLER.match(line):
            return "smaller_from_larger"
        return "broken_format"
    g, w = [int(x) for x in got.groups()], [int(x) for x in (w_add or w_sub).groups()]
    if g[2] != w[2]:
        return "dropped_carry"
    if g[0] != w[0] and not (w_sub and g[0] % 10 == w[0] % 10):
        return "misread_digit"
    if g[1] != w[1]:
        return "misread_digit"
    if w_sub and g[0] != w[0]:  # borrowed when it should not, or did not borrow
        return "smaller_from_larger" if g[0] < w[0] else "arithmetic"
    result = g[0] + g[1] + g[2] if w_add else g[0] - g[1] - g[2]
    if g[3] != result:
        return "arithmetic"
    return "write_or_carry"


def classify(p: Problem, response: str) -> str:
    """One of :data:`KINDS` for a sampled `response` to `p`: ``no_error`` when it is the teacher's correct
    solution word for word, else the kind of its first differing line."""
    want = solve(p)[0].splitlines()
    got = response.strip().splitlines()
    for i, w in enumerate(want):
        line = got[i] if i < len(got) else ""
        if line == w:
            continue
        if w.startswith("Since "):  # went on as if the difference were positive
            return "missed_negative"
        if w.startswith("We "):
            return "misread_operands"
        if _ADD.match(w) or _SUB.match(w):
            return _column(line, w)
        if ": carry" in w:  # the last carry, written as a digit of its own
            return "write_or_carry"
        if w.startswith("So "):
            m = re.match(r"^So .* = (-?\d+)\.$", line)
            if m and p.answer < 0 and int(m.group(1)) == -p.answer:
                return "sign_slip"
            return "assembly"
        return "broken_format"
    return "no_error"


def tally(samples: list[dict]) -> Counter:
    """Counts of each kind over eval sample records (``prompt``, ``gold``, ``response``); the prompt's
    first two integers are the operands (the system prompt has none)."""
    def gold(s: dict) -> str:
        return s["gold"][0] if isinstance(s["gold"], list) else s["gold"]

    return Counter(classify(problem_of(s["prompt"], gold(s)), s["response"]) for s in samples)
