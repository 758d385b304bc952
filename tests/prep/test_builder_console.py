"""The builder speaks: per-rule counts on the console, a non-zero exit with reasons when nothing is written, a
hint when rows are in another schema; and the paper's length rules (800-token prompts, 19,000-token
responses) checked with the real Qwen2.5 tokenizer, counted independently by the trainer's encoder."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from megatron_redi.data.tokenize import ChatEncoder, TokenizeConfig, load_tokenizer
from megatron_redi.prep.builder import build
from megatron_redi.prep.config import BuilderConfig
from tests.helpers_dist import ROOT
from tests.qwen_helpers import qwen25_dir

RAW = Path(__file__).parent / "fixtures" / "raw_small.jsonl"
_spec = importlib.util.spec_from_file_location("build_redi_data", ROOT / "tools" / "build_redi_data.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)


def _raw(uuid: str, problem: str, gens: list[str], ok: list[bool]) -> dict:
    return {"problem": problem, "answer": "1", "problem_is_valid": "yes", "source": "olympiads", "uuid": uuid,
            "generations": gens, "correctness": {"llama_verification": ok, "math_verify_reparsed_answer": ok}}


def test_console_shows_every_rule_count(tmp_path, capsys):
    assert tool.main(["--input", str(RAW), "--output-dir", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    for c in report["counts"]:
        if c["applied"]:
            assert f"{c['step']:<28}{c['remaining']:>12,}{c['dropped']:>10,}" in out
    assert f"sft rows {report['sft_rows']:,} | pairs {report['pair_rows']:,}" in out
    first = report["malformed"]["examples"][0]
    assert f"malformed rows skipped: {report['malformed']['total']}" in out
    assert f"first: {RAW}: row {first['row']}: {first['reason']}" in out


def test_rows_of_another_schema_exit_nonzero_naming_reasons_and_expected_fields(tmp_path, capsys):
    flat = [{"problem": "P", "generations": ["a"], "llama_verification": [True],
             "math_verify_reparsed_answer": [True], "problem_is_valid": "yes", "source": "s", "uuid": f"u{i}"}
            for i in range(3)]
    (tmp_path / "flat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in flat))
    assert tool.main(["--input", str(tmp_path / "flat.jsonl"), "--output-dir", str(tmp_path / "o"),
                      "--no-progress"]) == 3
    cap = capsys.readouterr()
    assert "error: nothing written" in cap.err
    assert "3 rows malformed: missing_field:correctness" in cap.err
    assert "nest them under 'correctness'" in cap.err and "correctness.llama_verification" in cap.err
    assert "rows_read" in cap.out and "well_formed" in cap.out  # the counts are printed all the same
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "Q", "chosen": "a", "rejected": "b"}) + "\n")
    assert tool.main(["--input", str(pairs), "--output-dir", str(tmp_path / "o2"), "--no-progress"]) == 3
    assert "look like training rows already" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert tool.main(["--input", str(empty), "--output-dir", str(tmp_path / "o3"), "--no-progress"]) == 3
    assert "the input holds no rows" in capsys.readouterr().err


def test_paper_length_rules_with_the_qwen25_tokenizer(tmp_path):
    tok_dir = qwen25_dir()
    enc = ChatEncoder(load_tokenizer(tok_dir), TokenizeConfig())

    def prompt_len(problem):  # the trainer's count: templated system + user turn + generation prompt
        return len(enc.encode_prompt([{"role": "user", "content": problem}]))

    def response_len(gen):  # the trainer's count: templated assistant turn + EOS
        return len(enc.encode_completion([{"role": "user", "content": "P"}], [{"role": "assistant", "content": gen}]))

    base_p, base_r = prompt_len("Compute"), response_len("Step")
    problem = {n: "Compute" + " x" * (n - base_p) for n in (800, 801)}
    gen = {n: "Step" + " y" * (n - base_r) for n in (19000, 19001)}
    assert [prompt_len(problem[n]) for n in (800, 801)] == [800, 801]
    assert [response_len(gen[n]) for n in (19000, 19001)] == [19000, 19001]
    rows = [_raw("p800", problem[800], ["short ok", "short bad"], [True, False]),
            _raw("p801", problem[801], ["short ok", "short bad"], [True, False]),
            _raw("c19000", "P1", [gen[19000], "short bad"], [True, False]),
            _raw("c19001", "P2", [gen[19001], "short bad"], [True, False]),
            _raw("r19001", "P3", ["short ok", gen[19001]], [True, False])]
    (tmp_path / "raw.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = build(BuilderConfig(input=[str(tmp_path / "raw.jsonl")], output_dir=str(tmp_path / "o"),
                                 tokenizer_model=str(tok_dir), progress=False, shuffle=False))
    kept = [json.loads(line)["uuid"] for line in (tmp_path / "o" / "pairs.jsonl").read_text().splitlines()]
    assert kept == ["p800", "c19000"]
    assert report["length_filter"]["dropped_by_check"] == {"pairs_chosen": 1, "pairs_prompt": 1, "pairs_rejected": 1}
