"""End to end through the CLI (in-process) with the transformers backend and the tiny random model."""

import json
import shutil
import struct

import pytest
from eval_checks import WORKERS, check_summary_against_records, read_jsonl

from megatron_redi.evaluation import backends, runner
from megatron_redi.evaluation.benchmarks import load, resolve
from megatron_redi.evaluation.cli import main
from megatron_redi.evaluation.prompts import PromptConfig, render
from megatron_redi.grading.graders import math_verify_grade

N, MAX_TOKENS = 2, 16
COMMON = ["--limit", "3", "--n", str(N), "--max-tokens", str(MAX_TOKENS), "--grading-workers", str(WORKERS),
          "--no-progress", "--backend", "hf", "--device", "cpu"]


def evaluate(model, out, *extra, benchmarks="math500,aime24"):
    return main(["--model", str(model), "--output-dir", str(out), "--benchmarks", benchmarks, *COMMON,
                 *extra])


@pytest.fixture(scope="module")
def first_run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "out"
    assert evaluate(tiny_model, out, "--chunk-size", "1") == 0
    return out


def test_files_and_records(first_run, tiny_model):
    out = first_run
    for name in ("manifest.json", "summary.json", "summary.md", "accuracy_vs_length.png",
                 "samples/math500.jsonl", "samples/aime24.jsonl"):
        assert (out / name).is_file(), name
    png = (out / "accuracy_vs_length.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24])[0] > 100
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    for key in ("math500", "aime24"):
        problems = load(resolve(key), limit=3).problems
        recs = read_jsonl(out / "samples" / f"{key}.jsonl")
        assert sorted((r["problem_index"], r["sample_index"]) for r in recs) == [
            (p, j) for p in range(3) for j in range(N)]
        for r in recs:
            p = problems[r["problem_index"]]
            assert r["problem_id"] == p.id and r["gold"] == list(p.answers)
            assert r["prompt"] == render(tok, p.problem, PromptConfig())
            assert r["prompt_tokens"] == len(tok(r["prompt"], add_special_tokens=False)["input_ids"])
            assert 1 <= r["num_tokens"] <= MAX_TOKENS
            assert r["finish_reason"] in ("stop", "length")
            if r["finish_reason"] == "length":
                assert r["num_tokens"] == MAX_TOKENS
            v = math_verify_grade(r["response"], tuple(r["gold"]), r["gold_mode"])
            assert (r["extracted_answer"], r["correct"]) == (v.extracted, v.correct)
            assert r["grader"] == "math_verify" and "audit" not in r
        # the two samples of a problem are different draws
        assert any(recs[i]["response"] != recs[i + 1]["response"] for i in range(0, len(recs), 2))


def test_summary_equals_records(first_run):
    s = check_summary_against_records(first_run, N)
    assert list(s["benchmarks"]) == ["math500", "aime24"]
    assert s["sampling"] == {"n": N, "temperature": 0.6, "top_p": 0.95, "max_tokens": MAX_TOKENS, "seed": 0}


def test_manifest(first_run, tiny_model):
    m = json.loads((first_run / "manifest.json").read_text())
    assert m["status"] == "complete"
    assert set(m["versions"]) >= {"vllm", "transformers", "torch", "math-verify"}
    assert m["versions"]["vllm"] is None or isinstance(m["versions"]["vllm"], str)
    from megatron_redi.evaluation.report import sha256_file

    assert m["model_weights"]["files"] == {"model.safetensors": sha256_file(tiny_model / "model.safetensors")}
    assert len(m["model_weights"]["sha256"]) == 64
    assert m["seed"] == 0 and m["sampling"]["n"] == N
    assert m["backend"]["name"] == "hf" and m["backend"]["resolved"]["device"] == "cpu"
    assert m["benchmarks"]["math500"]["rows"] == 500 and m["benchmarks"]["math500"]["evaluated_problems"] == 3
    assert m["stop_token_ids"] == [0, 2]  # <|endoftext|> and <|im_end|>


def test_summary_markdown(first_run):
    md = (first_run / "summary.md").read_text()
    s = json.loads((first_run / "summary.json").read_text())
    assert "| model | MATH-500 | AIME24 | avg |" in md
    b = s["benchmarks"]["math500"]
    assert f"{100 * b['pass@1']:.1f} ± {100 * b['sem']:.1f}" in md


def _inject(out, edits):
    """Replace responses of chosen samples; edits: {(bench, problem, sample): response}."""
    for bench in {k[0] for k in edits}:
        path = out / "samples" / f"{bench}.jsonl"
        recs = read_jsonl(path)
        for r in recs:
            key = (bench, r["problem_index"], r["sample_index"])
            if key in edits:
                r["response"] = edits[key].replace("GOLD", r["gold"][0])
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_regrade_with_audit(first_run, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(first_run, out)
    _inject(out, {("math500", 0, 0): "... \\boxed{GOLD}", ("math500", 0, 1): "so $\\boxed{GOLD}$.",
                  ("math500", 1, 1): "\\boxed{GOLD}", ("aime24", 2, 0): "\\boxed{GOLD}",
                  ("aime24", 2, 1): "\\boxed{0}",
                  # graders disagree: the value is right, but rllm rejects a fraction for an integer answer
                  ("aime24", 0, 0): "\\boxed{\\frac{408}{2}}"})
    regrade = ["--regrade", str(out), "--grading-workers", str(WORKERS), "--no-progress"]
    assert main([*regrade, "--grader-audit"]) == 0
    s = check_summary_against_records(out, N)
    m5 = s["benchmarks"]["math500"]
    assert m5["pass@1"] == pytest.approx(3 / 6)  # matrix [[1,1],[0,1],[0,0]]
    assert m5["sem"] == pytest.approx((1 / 6) / 2 ** 0.5)  # per-index accuracies 1/3, 2/3
    assert m5["pass@k"]["2"] == pytest.approx(2 / 3)
    a24 = s["benchmarks"]["aime24"]
    assert read_jsonl(out / "samples" / "aime24.jsonl")[0]["gold"] == ["204"]
    assert a24["pass@1"] == pytest.approx(2 / 6)
    assert a24["audit"] == {"grader": "rllm", "pass@1": pytest.approx(1 / 6), "disagreements": 1,
                            "disagreement_rate": pytest.approx(1 / 6)}
    audit = read_jsonl(out / "grader_audit.jsonl")
    assert [(a["benchmark"], a["problem_id"], a["sample_index"]) for a in audit] == [("aime24", "0", 0)]
    assert audit[0]["math_verify"]["correct"] and not audit[0]["rllm"]["correct"]
    assert "50.0 ± 11.8" in (out / "summary.md").read_text()
    assert "1 disagreements" in capsys.readouterr().out
    # re-grading with the rllm grader flips the disputed sample
    assert main([*regrade, "--grader", "rllm"]) == 0
    s = check_summary_against_records(out, N)
    assert s["benchmarks"]["aime24"]["pass@1"] == pytest.approx(1 / 6)
    assert json.loads((out / "manifest.json").read_text())["grading"]["grader"] == "rllm"


class _Interrupt:
    """Wraps HFBackend.generate: counts calls and raises KeyboardInterrupt at call ``stop_at``."""

    def __init__(self, monkeypatch, stop_at=None):
        self.calls = 0
        real = backends.HFBackend.generate

        def generate(backend, requests, sampling, progress=None):
            self.calls += 1
            if stop_at is not None and self.calls == stop_at:
                raise KeyboardInterrupt
            return real(backend, requests, sampling, progress)

        monkeypatch.setattr(backends.HFBackend, "generate", generate)


def test_resume_after_interruption_matches_uninterrupted_run(first_run, tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    with monkeypatch.context() as mp:
        _Interrupt(mp, stop_at=2)
        with pytest.raises(KeyboardInterrupt):
            evaluate(tiny_model, out, "--chunk-size", "1")
    partial = read_jsonl(out / "samples" / "math500.jsonl")
    assert {r["problem_index"] for r in partial} == {0}
    with open(out / "samples" / "math500.jsonl", "a") as f:  # a write torn by the interruption
        f.write('{"benchmark": "math500", "problem_id": "test/alg')
    counter = _Interrupt(monkeypatch)
    assert evaluate(tiny_model, out, "--chunk-size", "1") == 0
    assert counter.calls == 2 + 3  # math500 problems 1 and 2, then the three aime24 problems
    for key in ("math500", "aime24"):
        name = f"samples/{key}.jsonl"
        assert read_jsonl(out / name) == read_jsonl(first_run / name)
    check_summary_against_records(out, N)


def test_finished_run_does_not_load_the_model_again(first_run, tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "again"
    shutil.copytree(first_run, out)
    before = {p.name: p.read_bytes() for p in (out / "samples").iterdir()}

    def no_backend(*a, **k):
        raise AssertionError("backend created for a finished run")

    monkeypatch.setattr(runner, "create_backend", no_backend)
    assert evaluate(tiny_model, out, "--chunk-size", "1") == 0
    assert {p.name: p.read_bytes() for p in (out / "samples").iterdir()} == before


def test_resume_refuses_other_settings(first_run, tiny_model, tmp_path, capsys):
    out = tmp_path / "other"
    shutil.copytree(first_run, out)
    assert evaluate(tiny_model, out, "--chunk-size", "1", "--temperature", "0.7") == 2
    err = capsys.readouterr().err
    assert "differs in: sampling" in err and "--overwrite" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n", "0"], "--n must be >= 1 (got 0)"),
        (["--benchmarks", "math500,math5000"], "unknown benchmark 'math5000'"),
        (["--benchmarks", "aime24:rllm2"], "unknown version 'rllm2' of 'aime24'"),
        (["--top-p", "0"], "--top-p must be in (0, 1]"),
        (["--prompt-template", "no placeholder"], "--prompt-template must contain"),
        (["--extraction", "lastbox"], "--extraction: unknown mode"),
    ],
)
def test_bad_input_errors(tiny_model, tmp_path, capsys, args, message):
    argv = ["--model", str(tiny_model), "--output-dir", str(tmp_path / "o"), "--no-progress"] + args
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_missing_model_dir(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "o")]) == 2
    assert f"--model: directory not found: {tmp_path / 'nope'}" in capsys.readouterr().err


def test_benchmark_file_without_needed_field(tiny_model, tmp_path, capsys):
    f = tmp_path / "mine.jsonl"
    f.write_text('{"problem": "1+1?", "answer": "2"}\n{"problem": "2+2?"}\n')
    argv = ["--model", str(tiny_model), "--output-dir", str(tmp_path / "o"), "--benchmarks", str(f)]
    assert main(argv) == 2
    assert f"{f}, line 2: missing field 'answer' (set --answer-field)" in capsys.readouterr().err


def test_mode_flags_are_exclusive(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["--regrade", str(tmp_path), "--grade-jsonl", str(tmp_path / "x.jsonl")])
    assert e.value.code == 2


def test_regrade_needs_an_output_dir(tmp_path, capsys):
    assert main(["--regrade", str(tmp_path), "--no-progress"]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_local_benchmark_end_to_end(tiny_model, tmp_path):
    f = tmp_path / "tiny_set.jsonl"
    f.write_text("".join(json.dumps({"q": f"What is {i}+{i}?", "sol": 2 * i}) + "\n" for i in range(2)))
    out = tmp_path / "o"
    assert evaluate(tiny_model, out, "--problem-field", "q", "--answer-field", "sol", "--no-plot",
                    benchmarks=str(f)) == 0
    recs = read_jsonl(out / "samples" / "tiny_set.jsonl")
    assert [r["gold"] for r in recs] == [["0"], ["0"], ["2"], ["2"]]
    assert [r["problem_id"] for r in recs] == ["0", "0", "1", "1"]
    assert not (out / "accuracy_vs_length.png").exists()
    check_summary_against_records(out, N)


def test_grade_jsonl(tmp_path, capsys):
    f = tmp_path / "gens.jsonl"
    rows = [{"response": "thus \\boxed{27}", "answer": 27.0, "id": 1},
            {"response": "\\boxed{\\frac{1}{2}}", "answer": "0.5"},
            {"response": "\\boxed{3}", "answer": ["1", "2"]},
            {"response": "no box at all", "answer": "4"}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["--grade-jsonl", str(f), "--grading-workers", str(WORKERS), "--no-progress"]) == 0
    graded = read_jsonl(tmp_path / "gens.graded.jsonl")
    assert [(g["extracted_answer"], g["correct"]) for g in graded] == [
        ("27", True), ("\\frac{1}{2}", True), ("3", False), (None, False)]
    assert all({k: v for k, v in g.items() if k not in ("extracted_answer", "correct")} == r
               for g, r in zip(graded, rows))
    assert "accuracy: 50.00% (2/4)" in capsys.readouterr().out


def test_grade_jsonl_custom_fields_and_errors(tmp_path, capsys):
    f = tmp_path / "other.jsonl"
    f.write_text(json.dumps({"output": "\\boxed{5}", "gold": "5"}) + "\n")
    assert main(["--grade-jsonl", str(f), "--response-field", "output", "--answer-field", "gold",
                 "--grading-workers", str(WORKERS), "--no-progress"]) == 0
    assert read_jsonl(tmp_path / "other.graded.jsonl")[0]["correct"] is True
    f.write_text(json.dumps({"output": "x", "gold": "5"}) + "\n" + json.dumps({"gold": "5"}) + "\n")
    assert main(["--grade-jsonl", str(f), "--response-field", "output", "--answer-field", "gold",
                 "--no-progress"]) == 2
    assert f"{f}, line 2: missing field 'output' (set --response-field)" in capsys.readouterr().err
