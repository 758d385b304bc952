"""A synthetic teacher for the toy reproduction: column arithmetic word problems, solved step by step.

The paper distils a reasoning teacher's correct AND incorrect traces. At toy scale the teacher is this
program: for each problem it writes several generations in the OpenR1-Math-Raw schema, each working the
sum column by column (carries and borrows written out) and ending in ``\\boxed{...}``. Some generations
make one of the mistakes people make with column arithmetic, and carry on consistently from it:

- ``dropped_carry``: a column ignores the carry (or borrow) coming in from the column before;
- ``off_by_one``: a column's sum or difference is off by one;
- ``smaller_from_larger``: subtraction takes the smaller digit from the larger instead of borrowing;
- ``sign_slip``: a difference that should be negative loses its minus sign.

The teacher never says which generation is right: rows carry no correctness labels, so the dataset
builder's own verification (``--reverify``, math-verify against ``answer``) labels them, as it would a
real teacher's dump. Problems are a pure function of (seed, index); held-out evaluation problems are drawn
from a disjoint set of operand pairs, so none of them ever appears in training.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PLACES = ["ones", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands"]
MISTAKES = ("dropped_carry", "off_by_one", "smaller_from_larger", "sign_slip")

_ADD_STORIES = [
    "A library had {a} books and received {b} more. How many books does it have now?",
    "{name} walked {a} meters in the morning and {b} meters in the afternoon. How many meters did {name} walk?",
    "A farm harvested {a} apples on Monday and {b} apples on Tuesday. How many apples were harvested in all?",
    "A school has {a} students and {b} new students join. How many students are there now?",
]
_SUB_STORIES = [
    "A tank held {a} liters of water and {b} liters were drained. How many liters are left?",
    "{name} had {a} coins and spent {b} of them. How many coins does {name} have left?",
    "A shop earned {a} dollars and paid {b} dollars in costs. What was its profit in dollars?",
    "The temperature was {a} degrees and then fell by {b} degrees. What is the temperature now?",
]
_NAMES = ["Ana", "Ben", "Chen", "Dana", "Eli", "Fatima", "Goro", "Hana"]


@dataclass(frozen=True)
class TeacherConfig:
    """The toy task. Fixed before any objective is compared (docs/TOY.md)."""

    min_digits: int = 3  # operands have between min_digits and max_digits digits
    max_digits: int = 4
    p_subtract: float = 0.5
    generations: int = 4  # teacher generations per problem
    p_correct: float = 0.5  # chance a generation is free of mistakes


@dataclass(frozen=True)
class Problem:
    """One problem: ``a op b`` told as a story; ``answer`` is the exact integer."""

    index: int
    a: int
    b: int
    op: str  # "+" or "-"
    text: str

    @property
    def answer(self) -> int:
        return self.a + self.b if self.op == "+" else self.a - self.b


def _digits(x: int, width: int) -> list[int]:
    """Digits of `x` from the ones place up, padded with zeros to `width`."""
    return [(x // 10**i) % 10 for i in range(width)]


def _column_addition(a: int, b: int, mistake: str | None, at: int) -> tuple[list[str], int]:
    """Lines of the column addition of a + b and the result it reaches; `mistake` happens in column `at`."""
    width = max(len(str(a)), len(str(b)))
    da, db = _digits(a, width), _digits(b, width)
    lines, carry, out = [], 0, []
    for i in range(width):
        seen = 0 if (mistake == "dropped_carry" and i == at) else carry
        total = da[i] + db[i] + seen
        if mistake == "off_by_one" and i == at:
            total += 1 if total % 10 != 9 else -1
        digit, carry = total % 10, total // 10
        lines.append(f"{PLACES[i]}: {da[i]} + {db[i]} + {seen} = {total}, write {digit}, carry {carry}")
        out.append(digit)
    if carry:
        lines.append(f"{PLACES[width]}: carry {carry}, write {carry}")
        out.append(carry)
    return lines, int("".join(str(d) for d in reversed(out)))


def _column_subtraction(a: int, b: int, mistake: str | None, at: int) -> tuple[list[str], int]:
    """Lines of the column subtraction a - b for a >= b, and the result it reaches."""
    width = len(str(a))
    da, db = _digits(a, width), _digits(b, width)
    lines, borrow, out = [], 0, []
    for i in range(width):
        seen = 0 if (mistake == "dropped_carry" and i == at) else borrow
        need = db[i] + seen
        if mistake == "smaller_from_larger" and i == at and da[i] < need:
            digit, borrow = need - da[i], 0
            lines.append(f"{PLACES[i]}: {need} - {da[i]} = {digit}, write {digit}, borrow 0")
        else:
            top = da[i] + (10 if da[i] < need else 0)
            digit, borrow = top - need, int(da[i] < need)
            if mistake == "off_by_one" and i == at:
                digit = digit + 1 if digit < 9 else digit - 1
            lines.append(f"{PLACES[i]}: {top} - {db[i]} - {seen} = {digit}, write {digit}, borrow {borrow}")
        out.append(digit)
    return lines, int("".join(str(d) for d in reversed(out)))


def eligible_mistakes(p: Problem) -> list[tuple[str, int]]:
    """Every (mistake, column) that changes this problem's result; an empty list means none can."""
    width = max(len(str(p.a)), len(str(p.b)))
    out = []
    for kind in MISTAKES:
        if kind == "sign_slip":
            if p.answer < 0:
                out.append((kind, 0))
            continue
        for col in range(width):
            if solve(p, kind, col)[1] != solve(p, None, 0)[1]:
                out.append((kind, col))
    return out


def solve(p: Problem, mistake: str | None = None, at: int = 0) -> tuple[str, int]:
    """The teacher's worked solution of `p` (with `mistake` in column `at`) and the answer it boxes."""
    if p.op == "+":
        lines, result = _column_addition(p.a, p.b, mistake, at)
        head = [f"We add {p.a} and {p.b} column by column, starting from the ones."]
        tail = [f"So {p.a} + {p.b} = {result}."]
    else:
        big, small = (p.a, p.b) if p.a >= p.b else (p.b, p.a)
        lines, result = _column_subtraction(big, small, mistake, at)
        head = [f"We subtract {p.b} from {p.a} column by column, starting from the ones."]
        if p.a < p.b:
            head.append(f"Since {p.b} is larger than {p.a}, the result is negative: we compute {big} - {small}.")
            if mistake != "sign_slip":
                result = -result
        tail = [f"So {p.a} - {p.b} = {result}."]
    text = "<think>\n" + "\n".join(head + lines + tail) + "\n</think>\n\n"
    return text + f"The answer is $\\boxed{{{result}}}$.", result


def _operand(rng: random.Random, cfg: TeacherConfig) -> int:
    digits = rng.randint(cfg.min_digits, cfg.max_digits)
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


def make_problem(rng: random.Random, index: int, cfg: TeacherConfig) -> Problem:
    a, b = _operand(rng, cfg), _operand(rng, cfg)
    op = "-" if rng.random() < cfg.p_subtract else "+"
    stories = _SUB_STORIES if op == "-" else _ADD_STORIES
    text = rng.choice(stories).format(a=a, b=b, name=rng.choice(_NAMES))
    return Problem(index=index, a=a, b=b, op=op, text=text)


def is_held_out(p: Problem) -> bool:
    """A fixed fifth of all (a, op, b), chosen by a hash: evaluation problems come only from here, training
    never. A hash, not arithmetic on the operands: a rule such as (a + b) % 5 would pick problems by their
    ones digits and shift the held-out set away from training."""
    digest = hashlib.blake2b(f"{p.a}{p.op}{p.b}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 5 == 0


def iter_problems(n: int, seed: int, cfg: TeacherConfig, *, held_out: bool) -> Iterator[Problem]:
    """`n` distinct problems, all from the held-out set or all from the training set."""
    rng, seen, i = random.Random(seed), set(), 0
    while i < n:
        p = make_problem(rng, i, cfg)
        key = (p.a, p.op, p.b)
        if is_held_out(p) != held_out or key in seen:
            continue
        seen.add(key)
        yield p
        i += 1


def teacher_row(p: Problem, rng: random.Random, cfg: TeacherConfig, seed: int) -> dict:
    """One OpenR1-Math-Raw row: the problem, its answer and `cfg.generations` unlabelled generations."""
    gens, mistakes = [], []
    options = eligible_mistakes(p)
    for _ in range(cfg.generations):
        if rng.random() < cfg.p_correct or not options:
            kind, col = None, 0
        else:  # a kind of mistake first, then where it happens
            kind = rng.choice(sorted({k for k, _ in options}))
            col = rng.choice([c for k, c in options if k == kind])
        gens.append(solve(p, kind, col)[0])
        mistakes.append(kind)
    return {
        "problem": p.text,
        "solution": solve(p)[0],
        "answer": str(p.answer),
        "problem_type": "Arithmetic",
        "question_type": "math-word-problem",
        "problem_is_valid": "yes",
        "solution_is_valid": "yes",
        "source": "toy_teacher",
        "synthetic": True,
        "generations": gens,
        "generations_count": len(gens),
        "uuid": f"toy-{seed}-{p.index:07d}",
        # Not read by the builder (it labels by its own verification); kept to audit the teacher.
        "teacher_mistakes": mistakes,
    }


def write_teacher_data(
    out_dir: str | Path, *, train: int, heldout: int, seed: int, cfg: TeacherConfig = TeacherConfig()
) -> dict[str, str]:
    """Write ``raw.jsonl`` (training problems, OpenR1-Math-Raw schema) and ``heldout.jsonl`` (problem, answer).

    Training and held-out problems come from disjoint operand sets (:func:`is_held_out`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw, held = out / "raw.jsonl", out / "heldout.jsonl"
    rng = random.Random(seed + 1)
    with open(raw, "w", encoding="utf-8") as f:
        for p in iter_problems(train, seed, cfg, held_out=False):
            f.write(json.dumps(teacher_row(p, rng, cfg, seed)) + "\n")
    with open(held, "w", encoding="utf-8") as f:
        for p in iter_problems(heldout, seed + 7, cfg, held_out=True):
            f.write(json.dumps({"id": f"heldout-{p.index}", "problem": p.text, "answer": str(p.answer)}) + "\n")
    return {"raw": str(raw), "heldout": str(held)}
