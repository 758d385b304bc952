"""Synthetic paired math traces: a stand-in for teacher data in tests and the quickstart."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def _trace(a: int, b: int, op: str, answer: int, rng: random.Random, steps: int) -> str:
    lines = [f"We need to compute {a} {op} {b}."]
    for i in range(steps):
        lines.append(f"Step {i + 1}: consider the digits of {a} and {b} and combine them with {op}.")
    lines.append(f"So {a} {op} {b} = {answer}.")
    lines.append(f"The final answer is $\\boxed{{{answer}}}$.")
    return "\n".join(lines)


def iter_synthetic_problems(n: int, seed: int = 0, max_steps: int = 6) -> Iterator[dict]:
    """Yield problems with one correct and one wrong trace each (the wrong one is off by a bit)."""
    rng = random.Random(seed)
    for i in range(n):
        a, b = rng.randint(2, 999), rng.randint(2, 999)
        op = rng.choice(sorted(_OPS))
        answer = _OPS[op](a, b)
        wrong = answer + rng.choice([-10, -2, -1, 1, 2, 10])
        yield {
            "uuid": f"synthetic-{seed}-{i}",
            "problem": f"What is ${a} {op} {b}$?",
            "answer": str(answer),
            "correct": _trace(a, b, op, answer, rng, rng.randint(1, max_steps)),
            "incorrect": _trace(a, b, op, wrong, rng, rng.randint(1, max_steps)),
        }


def write_synthetic_sets(out_dir: str | Path, n: int, seed: int = 0, max_steps: int = 6) -> dict:
    """Write `sft.jsonl` (messages) and `pairs.jsonl` (prompt/chosen/rejected) in the training schema."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"sft": out / "sft.jsonl", "pairs": out / "pairs.jsonl"}
    with open(paths["sft"], "w") as fs, open(paths["pairs"], "w") as fp:
        for p in iter_synthetic_problems(n, seed, max_steps):
            fs.write(json.dumps({"messages": [
                {"role": "user", "content": p["problem"]},
                {"role": "assistant", "content": p["correct"]},
            ]}) + "\n")
            fp.write(json.dumps({
                "prompt": [{"role": "user", "content": p["problem"]}],
                "chosen": [{"role": "assistant", "content": p["correct"]}],
                "rejected": [{"role": "assistant", "content": p["incorrect"]}],
            }) + "\n")
    return {k: str(v) for k, v in paths.items()}
