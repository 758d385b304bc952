"""Synthetic raw teacher generations in the OpenR1-Math-Raw schema, for benchmarks and smoke tests.

The real file (~516k problems, tens of GB) cannot live in CI, yet the dataset builder must be measured on
something with the same shape: several long generations per problem, two label lists, invalid problems,
`cn_k12` rows and a few rows whose label lists do not match. Rows are arithmetic problems whose "correct"
generations really box the right answer, so `--reverify` (math-verify) mostly agrees with the stored labels.
Everything is a pure function of the seed, and rows are written as they are made (bounded memory).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SOURCES = ["olympiads", "aops_forum", "cn_contest", "amc_aime", "inequalities", "number_theory", "cn_k12"]
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_FILLER = [
    "Let me write down what is given and what is asked.",
    "First, consider the sizes of the two numbers involved.",
    "Hmm, I should double check this step before going on.",
    "Breaking the computation into tens and units makes it easier.",
    "Wait, let me recompute that partial result carefully.",
    "So the partial sums are consistent with the estimate.",
    "Alternatively, I could verify the result by working backwards.",
    "That matches the rough magnitude I expected earlier.",
]


@dataclass
class RawSyntheticConfig:
    """Shape of the synthetic raw data; defaults mimic OpenR1-Math-Raw proportions loosely."""

    n: int = 1000
    seed: int = 0
    min_generations: int = 2
    max_generations: int = 4
    gen_chars: int = 3000  # mean characters of reasoning per generation
    p_invalid: float = 0.08  # problem_is_valid == "no"
    p_cn_k12: float = 0.12  # source == "cn_k12"
    p_label_mismatch: float = 0.02  # one label list shorter than the generations
    p_correct: float = 0.55  # chance a generation boxes the right answer
    p_llama_disagree: float = 0.08  # chance the llama label is flipped


def _generation(rng: random.Random, question: str, boxed: int, chars: int, numbers: tuple[int, int]) -> str:
    a, b = numbers
    parts = ["<think>\n", f"We need {question}\n"]
    size = len(parts[1])
    while size < chars:
        if rng.random() < 0.3:
            partial, carry = rng.randint(-9999, 99999), rng.randint(0, 99)
            s = f"Partial step: {a} and {b} give {partial} so far, keep {carry}.\n"
        else:
            s = rng.choice(_FILLER) + "\n"
        parts.append(s)
        size += len(s)
    parts.append(
        f"</think>\n\nCombining the steps, the result is {boxed}.\n\nThe answer is $\\boxed{{{boxed}}}$."
    )
    return "".join(parts)


def iter_raw_rows(cfg: RawSyntheticConfig) -> Iterator[dict]:
    """Yield `cfg.n` rows in the OpenR1-Math-Raw schema (extra columns included, as in the real data)."""
    rng = random.Random(cfg.seed)
    for i in range(cfg.n):
        a, b = rng.randint(2, 9999), rng.randint(2, 999)
        op = rng.choice(sorted(_OPS))
        answer = _OPS[op](a, b)
        question = f"to compute ${a} {op} {b}$."
        n_gen = rng.randint(cfg.min_generations, cfg.max_generations)
        gens, truth = [], []
        for _ in range(n_gen):
            ok = rng.random() < cfg.p_correct
            boxed = answer if ok else answer + rng.choice([-10, -2, -1, 1, 2, 10])
            chars = max(50, int(cfg.gen_chars * rng.uniform(0.3, 1.7)))
            gens.append(_generation(rng, question, boxed, chars, (a, b)))
            truth.append(ok)
        llama = [t if rng.random() >= cfg.p_llama_disagree else not t for t in truth]
        reparsed = list(truth)
        if rng.random() < cfg.p_label_mismatch:
            (llama if rng.random() < 0.5 else reparsed).pop()
        source = "cn_k12" if rng.random() < cfg.p_cn_k12 else rng.choice(SOURCES[:-1])
        yield {
            "problem": f"Problem {i}. Compute ${a} {op} {b}$ and give the exact integer value.",
            "solution": f"Direct computation gives ${a} {op} {b} = {answer}$.",
            "answer": str(answer),
            "problem_type": "Algebra",
            "question_type": "math-word-problem",
            "problem_is_valid": "no" if rng.random() < cfg.p_invalid else "yes",
            "solution_is_valid": "yes",
            "source": source,
            "synthetic": False,
            "generations": gens,
            "generations_count": n_gen,
            "correctness": {
                "llama_verification": llama,
                "math_verify_answer": list(truth),
                "math_verify_reparsed_answer": reparsed,
            },
            "reparsed_answers": [str(answer)] * n_gen,
            "uuid": f"raw-synthetic-{cfg.seed}-{i:08d}",
        }


def _arrow_schema():
    import pyarrow as pa

    bools = pa.list_(pa.bool_())
    return pa.schema(
        [
            ("problem", pa.string()),
            ("solution", pa.string()),
            ("answer", pa.string()),
            ("problem_type", pa.string()),
            ("question_type", pa.string()),
            ("problem_is_valid", pa.string()),
            ("solution_is_valid", pa.string()),
            ("source", pa.string()),
            ("synthetic", pa.bool_()),
            ("generations", pa.list_(pa.string())),
            ("generations_count", pa.int64()),
            (
                "correctness",
                pa.struct(
                    [
                        ("llama_verification", bools),
                        ("math_verify_answer", bools),
                        ("math_verify_reparsed_answer", bools),
                    ]
                ),
            ),
            ("reparsed_answers", pa.list_(pa.string())),
            ("uuid", pa.string()),
        ]
    )


def write_raw(path: str | Path, cfg: RawSyntheticConfig, rows_per_group: int = 256) -> Path:
    """Write synthetic raw rows to `.jsonl` or `.parquet` (by suffix), streaming in groups of rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for row in iter_raw_rows(cfg):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        return path
    if path.suffix != ".parquet":
        raise ValueError(f"unsupported suffix {path.suffix!r}: use .jsonl or .parquet")
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema()
    with pq.ParquetWriter(str(path), schema) as writer:
        group: list[dict] = []
        for row in iter_raw_rows(cfg):
            group.append(row)
            if len(group) == rows_per_group:
                writer.write_table(pa.Table.from_pylist(group, schema=schema))
                group = []
        if group:
            writer.write_table(pa.Table.from_pylist(group, schema=schema))
    return path
