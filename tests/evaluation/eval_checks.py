"""Test helpers: constants, and an independent recomputation of summary numbers from sample records
(numpy + enumeration, not the package's passk)."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

TINY = Path(__file__).resolve().parents[2] / "megatron_redi" / "assets" / "tiny_qwen2"
# One worker count everywhere, so every test in a process reuses the same grading pool.
WORKERS = 2


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def brute_pass_at_k(row: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(range(len(row)), k))
    return sum(any(row[i] for i in s) for s in subsets) / len(subsets)


def check_summary_against_records(out: Path, n: int) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    accs = []
    for key, b in summary["benchmarks"].items():
        recs = read_jsonl(out / "samples" / f"{key}.jsonl")
        by: dict[int, dict[int, dict]] = {}
        for r in recs:
            by.setdefault(r["problem_index"], {})[r["sample_index"]] = r
        assert all(sorted(v) == list(range(n)) for v in by.values())
        m = np.array([[by[p][j]["correct"] for j in range(n)] for p in sorted(by)], dtype=float)
        assert b["n"] == n
        assert b["num_problems"] == m.shape[0]
        assert b["num_samples"] == m.size == len(recs)
        assert b["pass@1"] == pytest.approx(m.mean())
        col = m.mean(axis=0)
        assert b["per_sample_index_accuracy"] == pytest.approx(col.tolist())
        assert b["std_per_sample_index"] == pytest.approx(float(np.std(col)))
        assert b["sem"] == pytest.approx(float(np.std(col) / np.sqrt(n)))
        for k in range(1, n + 1):
            assert b["pass@k"][str(k)] == pytest.approx(np.mean([brute_pass_at_k(list(row), k) for row in m]))
        lengths = np.array([r["num_tokens"] for r in recs], dtype=float)
        t = b["response_tokens"]
        assert t["mean"] == pytest.approx(lengths.mean())
        assert t["median"] == pytest.approx(np.median(lengths))
        assert t["p90"] == pytest.approx(np.percentile(lengths, 90))
        assert t["std"] == pytest.approx(lengths.std())
        assert (t["min"], t["max"]) == (lengths.min(), lengths.max())
        right = [r["num_tokens"] for r in recs if r["correct"]]
        wrong = [r["num_tokens"] for r in recs if not r["correct"]]
        assert b["response_tokens_correct_mean"] == (pytest.approx(np.mean(right)) if right else None)
        assert b["response_tokens_incorrect_mean"] == (pytest.approx(np.mean(wrong)) if wrong else None)
        assert b["truncation_rate"] == pytest.approx(np.mean([r["finish_reason"] == "length" for r in recs]))
        no_answer = [r["extracted_answer"] in (None, "") for r in recs]
        assert b["no_answer_rate"] == pytest.approx(np.mean(no_answer))
        accs.append(m.mean())
    assert summary["average_pass@1"] == pytest.approx(np.mean(accs))
    return summary
