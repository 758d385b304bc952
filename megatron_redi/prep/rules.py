"""The paper's row rules (docs/DATA.md) as small pure functions, each testable alone.

Applied per problem by :mod:`megatron_redi.prep.builder` in this order: the row is well formed, its problem
is valid, its source is allowed, both label lists have one entry per generation, no generation is empty;
then a generation is correct when BOTH stored labels are true (a null label counts as false, as in the
reference scripts); SFT = first correct generation, pair = (first correct, first incorrect).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

LLAMA, MATH_VERIFY = "llama_verification", "math_verify_reparsed_answer"
LABEL_KEYS = (LLAMA, MATH_VERIFY)
CORRECT_RULES = ("both", "llama", "math_verify", "either")
REVERIFY_COMBINE = ("replace", "and", "or")


def _is_label_list(value: Any) -> bool:
    return isinstance(value, list) and all(v is None or isinstance(v, bool) for v in value)


def check_schema(row: Any, *, need_labels: bool = True, need_answer: bool = False) -> str | None:
    """Reason the row cannot be processed (`missing_field:x`, `wrong_type:x`, ...), or None if it can.

    A null value counts as missing. Fields the rules never read (`answer` unless regrading) are not required,
    so rows the paper keeps are never dropped for them.
    """
    if not isinstance(row, dict):
        return "not_an_object"
    for name in ("problem", "problem_is_valid", "source", "uuid"):
        if row.get(name) is None:
            return f"missing_field:{name}"
        if not isinstance(row[name], str):
            return f"wrong_type:{name}"
    gens = row.get("generations")
    if gens is None:
        return "missing_field:generations"
    if not isinstance(gens, list) or not all(g is None or isinstance(g, str) for g in gens):
        return "wrong_type:generations"
    if need_labels:
        corr = row.get("correctness")
        if corr is None:
            return "missing_field:correctness"
        if not isinstance(corr, dict):
            return "wrong_type:correctness"
        for key in LABEL_KEYS:
            if corr.get(key) is None:
                return f"missing_field:correctness.{key}"
            if not _is_label_list(corr[key]):
                return f"wrong_type:correctness.{key}"
    if need_answer:
        if row.get("answer") is None:
            return "missing_field:answer"
        if not isinstance(row["answer"], str):
            return "wrong_type:answer"
    if not row["problem"].strip():
        return "empty_problem"
    if not gens:
        return "no_generations"
    return None


def is_valid_problem(value: str, accepted: Sequence[str]) -> bool:
    """`problem_is_valid` test, case- and space-insensitive as in the reference script; none = keep all."""
    return not accepted or value.strip().lower() in {a.lower() for a in accepted}


def is_allowed_source(source: str, excluded: Sequence[str]) -> bool:
    return source not in excluded


def labels_match(n_generations: int, labels: dict) -> bool:
    """Both label lists have exactly one entry per generation."""
    return all(len(labels[k]) == n_generations for k in LABEL_KEYS)


def has_empty_generation(generations: Sequence[str | None]) -> bool:
    return any(g is None or not g.strip() for g in generations)


def correct_mask(labels: dict, n_generations: int, rule: str = "both") -> list[bool]:
    """Per-generation correctness from the stored labels; null or missing labels count as false."""

    def get(key: str, i: int) -> bool:
        values = labels[key]
        return i < len(values) and values[i] is True

    out = []
    for i in range(n_generations):
        llama, mv = get(LLAMA, i), get(MATH_VERIFY, i)
        out.append({"both": llama and mv, "llama": llama, "math_verify": mv, "either": llama or mv}[rule])
    return out


def combine_labels(stored: Sequence[bool] | None, regraded: Sequence[bool], mode: str) -> list[bool]:
    """Merge math-verify regrades with the stored-label verdicts: replace, and, or."""
    if mode == "replace" or stored is None:
        return list(regraded)
    if mode == "and":
        return [a and b for a, b in zip(stored, regraded)]
    if mode == "or":
        return [a or b for a, b in zip(stored, regraded)]
    raise ValueError(f"unknown combine mode {mode!r}")


def first_correct_incorrect(mask: Sequence[bool]) -> tuple[int | None, int | None]:
    """Indices of the first correct and the first incorrect generation (None when there is none)."""
    correct = next((i for i, ok in enumerate(mask) if ok), None)
    incorrect = next((i for i, ok in enumerate(mask) if not ok), None)
    return correct, incorrect


def sft_record(problem: str, generation: str, uuid: str, source: str) -> dict:
    """One SFT row in the trainer's schema (`messages` = [user, assistant]) plus provenance."""
    return {
        "messages": [{"role": "user", "content": problem}, {"role": "assistant", "content": generation}],
        "uuid": uuid,
        "source": source,
    }


def pair_record(problem: str, chosen: str, rejected: str, uuid: str, source: str) -> dict:
    """One pair row in exactly the schema the trainer reads."""
    return {
        "prompt": [{"role": "user", "content": problem}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "uuid": uuid,
        "source": source,
    }


def shuffle_key(seed: int, file_index: int, row: int) -> int:
    """64-bit order key of an input row: a keyed hash, so the permutation depends on nothing but the seed."""
    digest = hashlib.blake2b(f"{seed}/{file_index}/{row}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
