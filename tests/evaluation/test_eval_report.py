import json

import pytest
from eval_checks import check_summary_against_records

from megatron_redi.evaluation import report
from megatron_redi.evaluation.runner import write_reports


def _records(bench, matrix, lengths=None):
    out = []
    for p, row in enumerate(matrix):
        for j, c in enumerate(row):
            out.append({"benchmark": bench, "problem_id": f"id{p}", "problem_index": p, "sample_index": j,
                        "response": "", "extracted_answer": "1" if c else None, "correct": bool(c),
                        "gold": ["1"], "gold_mode": "any", "grader": "math_verify",
                        "num_tokens": (lengths or {}).get((p, j), 10 + p + j),
                        "finish_reason": "length" if (p + j) % 3 == 0 else "stop"})
    return out


def _manifest(keys, variant="rllm", n=3):
    return {"model": "/m/Qwen-REDI", "sampling": {"n": n, "temperature": 0.6, "top_p": 0.95,
                                                  "max_tokens": 32768, "seed": 0},
            "grading": {"grader": "math_verify"},
            "benchmarks": {k: {"display": k.upper(), "variant": variant} for k in keys}}


def test_reports_from_records(tmp_path):
    keys = list(report.PAPER_COLUMNS)
    recs = {k: _records(k, [[1, 0, 1], [0, 0, 1], [1, 1, 1]][: i % 3 + 1]) for i, k in enumerate(keys)}
    (tmp_path / "samples").mkdir()
    for k, r in recs.items():
        (tmp_path / "samples" / f"{k}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in r))
    summary = write_reports(tmp_path, recs, _manifest(keys), log=lambda s: None)
    check_summary_against_records(tmp_path, 3)
    md = (tmp_path / "summary.md").read_text()
    assert "| Qwen-REDI-1.5B (paper) | 83.1 | 28.1 | 62.4 | 28.8 | 45.2 | 49.5 |" in md
    assert md.count("\n| Qwen-REDI | ") == 1 and summary["model_name"] == "Qwen-REDI"
    png = (tmp_path / "accuracy_vs_length.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_paper_rows_only_for_the_paper_versions(tmp_path):
    keys = list(report.PAPER_COLUMNS)
    recs = {k: _records(k, [[1, 0, 1]]) for k in keys}
    write_reports(tmp_path, recs, _manifest(keys, variant="qwen25math"), plot=False, log=lambda s: None)
    assert "(paper)" not in (tmp_path / "summary.md").read_text()


def test_incomplete_problems_are_left_out(tmp_path):
    recs = _records("aime24", [[1, 1, 0], [0, 1, 1]])
    recs = [r for r in recs if not (r["problem_index"] == 1 and r["sample_index"] == 2)]  # interrupted
    s = write_reports(tmp_path, {"aime24": recs}, _manifest(["aime24"]), plot=False, log=lambda s: None)
    b = s["benchmarks"]["aime24"]
    assert b["num_problems"] == 1 and b["pass@1"] == pytest.approx(2 / 3)
    assert b["incomplete_problems_left_out"] == 1


def test_correctness_matrix_requires_every_sample():
    with pytest.raises(ValueError, match="problem 0 has samples"):
        report.correctness_matrix(_records("x", [[1, 0]])[:1], 2)


def test_weight_hash(tmp_path):
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"abc")
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"def")
    (tmp_path / "config.json").write_text("{}")
    h = report.hash_model_weights(tmp_path)
    import hashlib

    files = {n: hashlib.sha256(d).hexdigest() for n, d in [("model-00001-of-00002.safetensors", b"abc"),
                                                          ("model-00002-of-00002.safetensors", b"def")]}
    assert h["files"] == files
    assert h["sha256"] == hashlib.sha256("".join(f"{k}:{v}\n" for k, v in files.items()).encode()).hexdigest()
