"""The synthetic teacher: worked solutions that are right, mistakes that are the named ones, held-out
problems that never reach training, and labels that come from the builder's own verification."""

import json
import random
import re

from megatron_redi.toy.teacher import (
    MISTAKES,
    PLACES,
    Problem,
    TeacherConfig,
    eligible_mistakes,
    iter_problems,
    solve,
    teacher_row,
    write_teacher_data,
)

LINE = re.compile(r"^(\S+): (\d+) ([+-]) (\d+) ([+-]) (\d+) = (-?\d+), write (\d+), (carry|borrow) (\d+)$")


def _boxed(text: str) -> int:
    return int(re.findall(r"\\boxed\{(-?\d+)\}", text)[-1])


def _column_lines(text: str) -> list[tuple]:
    return [LINE.match(line).groups() for line in text.splitlines() if LINE.match(line)]


def _problems(n=300, seed=0, **kw):
    return list(iter_problems(n, seed, TeacherConfig(**kw), held_out=False))


def test_correct_solutions_box_the_exact_answer_and_every_column_is_right():
    for p in _problems(300, min_digits=1, max_digits=4):
        text, result = solve(p)
        expected = p.a + p.b if p.op == "+" else p.a - p.b  # Python's arithmetic, not the teacher's columns
        assert result == expected == _boxed(text) == p.answer
        big, small = (max(p.a, p.b), min(p.a, p.b)) if p.op == "-" else (p.a, p.b)
        carry = 0
        for i, (_, x, op, y, _, z, total, digit, _, out) in enumerate(_column_lines(text)):
            x, y, z, total, digit, out = map(int, (x, y, z, total, digit, out))
            assert z == carry, f"column {i} of {p} ignores the carry/borrow"
            assert y == (small // 10**i) % 10
            if op == "+":
                assert x == (big // 10**i) % 10 and total == x + y + z
                assert (digit, out) == (total % 10, total // 10)
            else:
                assert x % 10 == (big // 10**i) % 10 and digit == x - y - z and 0 <= digit <= 9
                assert out == (x >= 10)
            carry = out
        assert text.startswith("<think>\n") and "</think>" in text


def test_each_mistake_is_the_named_one():
    seen = set()
    for p in _problems(400, min_digits=2, max_digits=4):
        right = solve(p)[1]
        for kind, col in eligible_mistakes(p):
            text, wrong = solve(p, kind, col)
            assert wrong != right and _boxed(text) == wrong
            seen.add(kind)
            if kind == "sign_slip":
                assert p.answer < 0 and wrong == -p.answer
            elif kind == "dropped_carry" and p.op == "+":
                assert wrong == right - 10**col  # the carry into column `col` is lost
            elif kind == "dropped_carry":
                assert abs(wrong) == abs(right) + 10**col  # a borrow is lost: the difference grows by 10^col
            elif kind == "smaller_from_larger":  # the column takes its top digit from the bottom one, no borrow
                big = max(p.a, p.b)
                line = next(x for x in text.splitlines() if x.startswith(PLACES[col] + ":"))
                bottom, top, digit = map(int, re.match(r"\S+: (\d+) - (\d+) = (\d+), write \d+, borrow 0$",
                                                         line).groups())
                assert top == (big // 10**col) % 10 < bottom and digit == bottom - top
    assert seen == set(MISTAKES)


def test_a_mistake_that_would_not_change_the_answer_is_not_offered():
    p = Problem(0, 12, 34, "+", "")  # no carry anywhere: dropping one changes nothing
    assert all(kind != "dropped_carry" for kind, _ in eligible_mistakes(p))
    assert all(kind != "sign_slip" for kind, _ in eligible_mistakes(p))


def test_held_out_problems_never_appear_in_training(tmp_path):
    cfg = TeacherConfig(min_digits=2, max_digits=3)
    paths = write_teacher_data(tmp_path, train=1500, heldout=150, seed=3, cfg=cfg)
    def key(row):  # the two operands and the answer (which tells + from -)
        return (*map(int, re.findall(r"\d+", row["problem"])[:2]), int(row["answer"]))

    train = {key(json.loads(line)) for line in open(paths["raw"])}
    held = [json.loads(line) for line in open(paths["heldout"])]
    assert len(held) == 150 and len(train) == 1500
    assert not {key(h) for h in held} & train
    assert all(set(h) == {"id", "problem", "answer"} for h in held)


def test_rows_are_unlabelled_and_deterministic():
    cfg = TeacherConfig()
    p = _problems(1)[0]
    a = teacher_row(p, random.Random(5), cfg, seed=0)
    assert a == teacher_row(p, random.Random(5), cfg, seed=0)
    assert "correctness" not in a and len(a["generations"]) == a["generations_count"] == cfg.generations


def test_builder_labels_match_the_teacher_by_its_own_verification(tmp_path):
    """The builder never reads `teacher_mistakes`; its math-verify labels must still agree with them."""
    from megatron_redi.prep.builder import build
    from megatron_redi.prep.config import BuilderConfig

    cfg = TeacherConfig(min_digits=2, max_digits=3, p_correct=0.5)
    paths = write_teacher_data(tmp_path / "raw", train=60, heldout=5, seed=1, cfg=cfg)
    build(BuilderConfig(input=[paths["raw"]], output_dir=str(tmp_path / "out"), reverify=True, reverify_workers=1,
                        max_prompt_tokens=None, max_response_tokens=None, progress=False))
    rows = {json.loads(line)["problem"]: json.loads(line) for line in open(paths["raw"])}
    sft = [json.loads(line) for line in open(tmp_path / "out/sft.jsonl")]
    pairs = [json.loads(line) for line in open(tmp_path / "out/pairs.jsonl")]
    assert sft and pairs
    for r in sft:
        raw = rows[r["messages"][0]["content"]]
        reply = r["messages"][-1]["content"]
        first = next(i for i, m in enumerate(raw["teacher_mistakes"]) if m is None)  # first correct generation
        assert reply == raw["generations"][first] and _boxed(reply) == int(raw["answer"])
    for r in pairs:
        raw = rows[_prompt_text(r)]
        chosen, rejected = _text(r["chosen"]), _text(r["rejected"])
        first_bad = next(i for i, m in enumerate(raw["teacher_mistakes"]) if m is not None)
        assert rejected == raw["generations"][first_bad] and _boxed(rejected) != int(raw["answer"])
        assert _boxed(chosen) == int(raw["answer"])
    expect_pairs = sum(None in r["teacher_mistakes"] and any(r["teacher_mistakes"]) for r in rows.values())
    assert len(pairs) == expect_pairs


def _text(value) -> str:
    return value if isinstance(value, str) else value[-1]["content"]


def _prompt_text(row) -> str:
    prompt = row["prompt"]
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def test_held_out_set_is_not_picked_by_digits():
    """The split must not select problems by their ones digits (a rule like (a + b) % 5 would make every
    held-out sum a multiple of 5): held-out and training sums spread alike over residues and ones digits."""
    from collections import Counter

    cfg = TeacherConfig(min_digits=2, max_digits=3, p_subtract=0.0)
    for held in (True, False):
        sums = [p.answer for p in iter_problems(2000, 11, cfg, held_out=held)]
        for mod in (5, 10):
            share = Counter(s % mod for s in sums)
            assert len(share) == mod and max(share.values()) < 2.0 / mod * len(sums), (held, mod, share)
