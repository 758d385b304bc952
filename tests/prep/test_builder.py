"""The REDI dataset builder on a hand-made raw fixture (see fixtures/README.md for what each row tests).

Expected values below were derived by hand from the fixture rows and the rules in REDI.md, not by running
the builder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

import pytest

from megatron_redi.data.errors import DataError
from megatron_redi.grading.extraction import answer_region
from megatron_redi.grading.problem import CORRECT, ERROR, INCORRECT, TIMEOUT, grade_problem
from megatron_redi.grading.timeout import run_with_timeout
from megatron_redi.prep.builder import build
from megatron_redi.prep.config import BuilderConfig
from megatron_redi.prep.lengths import TokenLengths
from megatron_redi.prep.raw_synthetic import RawSyntheticConfig, iter_raw_rows, write_raw
from megatron_redi.prep.rules import (
    LLAMA,
    MATH_VERIFY,
    check_schema,
    combine_labels,
    correct_mask,
    first_correct_incorrect,
    has_empty_generation,
    is_allowed_source,
    is_valid_problem,
    labels_match,
    pair_record,
    sft_record,
    shuffle_key,
)
from megatron_redi.prep.sink import JsonlSink

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("build_redi_data", ROOT / "tools" / "build_redi_data.py")
_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cli)
main = _cli.main
FIXTURES = Path(__file__).resolve().parent / "fixtures"
RAW = FIXTURES / "raw_small.jsonl"
RAW_REVERIFY = FIXTURES / "raw_reverify.jsonl"
TOKENIZER = ROOT / "megatron_redi" / "assets" / "tiny_qwen2"

STEP_KEYS = [
    "rows_read",
    "well_formed",
    "problem_is_valid",
    "source_allowed",
    "labels_match",
    "generations_nonempty",
    "not_contaminated",
    "has_correct",
    "sft_length_ok",
    "has_correct_and_incorrect",
    "pairs_length_ok",
]
DEFAULT_FUNNEL = [30, 20, 18, 16, 14, 13, 13, 12, 12, 9, 9]
DEFAULT_MALFORMED = {
    "empty_generation": 1,
    "empty_problem": 1,
    "invalid_json": 1,
    "label_length_mismatch": 2,
    "missing_field:correctness.math_verify_reparsed_answer": 1,
    "missing_field:generations": 1,
    "missing_field:uuid": 1,
    "no_generations": 1,
    "not_an_object": 1,
    "wrong_type:correctness.llama_verification": 1,
    "wrong_type:generations": 1,
    "wrong_type:problem_is_valid": 1,
}
# uuid -> index of the first generation correct under BOTH labels
DEFAULT_SFT = {
    "p00-mixed": 1,
    "p01-all-correct": 0,
    "p03-llama-only-first": 1,
    "p04-null-label": 1,
    "p06-valid-uppercase": 0,
    "p22-math500": 0,
    "p23-aime24": 0,
    "p24-near-miss": 1,
    "p25-long-prompt": 0,
    "p26-long-rejected": 0,
    "p27-long-chosen": 1,
    "p28-math500-short": 0,
}
# uuid -> (first correct, first incorrect)
DEFAULT_PAIRS = {
    "p00-mixed": (1, 0),
    "p03-llama-only-first": (1, 0),
    "p04-null-label": (1, 0),
    "p06-valid-uppercase": (0, 1),
    "p22-math500": (0, 1),
    "p24-near-miss": (1, 0),
    "p25-long-prompt": (0, 1),
    "p26-long-rejected": (0, 1),
    "p27-long-chosen": (1, 0),
}


def _raw_by_uuid(path: Path = RAW) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "uuid" in row:
            out[row["uuid"]] = row
    return out


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _run(out: Path, *extra: str, inputs: list[str] | None = None) -> tuple[dict, list, list]:
    argv = ["--input", *(inputs or [str(RAW)]), "--output-dir", str(out), "--no-progress", *extra]
    assert main(argv) == 0
    return (
        json.loads((out / "report.json").read_text()),
        _read_jsonl(out / "sft.jsonl"),
        _read_jsonl(out / "pairs.jsonl"),
    )


def _funnel(report: dict) -> list[int]:
    assert [c["step"] for c in report["counts"]] == STEP_KEYS
    return [c["remaining"] for c in report["counts"]]


def _selection(sft: list, pairs: list, raw: dict) -> tuple[dict, dict]:
    """Map output rows back to generation indices of the raw rows (asserting the texts are copied intact)."""
    sft_idx, pair_idx = {}, {}
    for r in sft:
        gens = raw[r["uuid"]]["generations"]
        assert r["messages"][0] == {"role": "user", "content": raw[r["uuid"]]["problem"]}
        assert r["messages"][1]["role"] == "assistant"
        sft_idx[r["uuid"]] = gens.index(r["messages"][1]["content"])
    for r in pairs:
        gens = raw[r["uuid"]]["generations"]
        assert r["prompt"] == [{"role": "user", "content": raw[r["uuid"]]["problem"]}]
        assert r["chosen"][0]["role"] == r["rejected"][0]["role"] == "assistant"
        pair_idx[r["uuid"]] = (gens.index(r["chosen"][0]["content"]), gens.index(r["rejected"][0]["content"]))
    return sft_idx, pair_idx


# ------------------------------------------------------------------------------------------------ rules alone


def test_rule_functions() -> None:
    good = {
        "problem": "p",
        "problem_is_valid": "yes",
        "source": "s",
        "uuid": "u",
        "generations": ["a"],
        "correctness": {LLAMA: [True], MATH_VERIFY: [None]},
    }
    assert check_schema(good) is None
    assert check_schema({**good, "source": None}) == "missing_field:source"
    assert check_schema({**good, "generations": [1]}) == "wrong_type:generations"
    assert check_schema({**good, "correctness": {LLAMA: [1]}}) == "wrong_type:correctness.llama_verification"
    assert check_schema({**good, "correctness": None}, need_labels=False) is None
    assert check_schema(good, need_answer=True) == "missing_field:answer"
    assert check_schema({**good, "generations": []}) == "no_generations"
    assert check_schema("text") == "not_an_object"

    assert is_valid_problem(" YES ", ["yes"]) and not is_valid_problem("no", ["yes"])
    assert is_valid_problem("no", [])
    assert not is_allowed_source("cn_k12", ["cn_k12"]) and is_allowed_source("olympiads", ["cn_k12"])
    assert labels_match(2, {LLAMA: [1, 2], MATH_VERIFY: [1, 2]})
    assert not labels_match(2, {LLAMA: [1, 2], MATH_VERIFY: [1]})
    assert has_empty_generation(["x", " \n"]) and not has_empty_generation(["x"])

    labels = {LLAMA: [True, True, False, None], MATH_VERIFY: [True, False, True, True]}
    assert correct_mask(labels, 4, "both") == [True, False, False, False]
    assert correct_mask(labels, 4, "llama") == [True, True, False, False]
    assert correct_mask(labels, 4, "math_verify") == [True, False, True, True]
    assert correct_mask(labels, 4, "either") == [True, True, True, True]
    assert correct_mask({LLAMA: [True], MATH_VERIFY: [True]}, 2) == [True, False]  # missing = false

    assert first_correct_incorrect([False, True, True, False]) == (1, 0)
    assert first_correct_incorrect([True, True]) == (0, None)
    assert first_correct_incorrect([False]) == (None, 0)
    assert combine_labels([True, False, True], [False, False, True], "replace") == [False, False, True]
    assert combine_labels([True, False, True], [False, False, True], "and") == [False, False, True]
    assert combine_labels([True, False, False], [False, False, True], "or") == [True, False, True]


def test_output_records_have_the_trainer_schema() -> None:
    pair = pair_record("P", "good", "bad", "u1", "olympiads")
    assert pair == {
        "prompt": [{"role": "user", "content": "P"}],
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "assistant", "content": "bad"}],
        "uuid": "u1",
        "source": "olympiads",
    }
    sft = sft_record("P", "good", "u1", "olympiads")
    assert sft["messages"] == [{"role": "user", "content": "P"}, {"role": "assistant", "content": "good"}]


# ------------------------------------------------------------------------------------------ builds on fixture


def test_default_build(tmp_path: Path) -> None:
    report, sft, pairs = _run(tmp_path)
    assert _funnel(report) == DEFAULT_FUNNEL
    assert [c["dropped"] for c in report["counts"]] == [0, 10, 2, 2, 2, 1, 0, 1, 0, 4, 0]
    assert report["sft_rows"] == len(sft) == 12 and report["pair_rows"] == len(pairs) == 9
    assert report["malformed"]["by_reason"] == DEFAULT_MALFORMED
    assert report["malformed"]["total"] == 13
    assert report["labels"]["null_labels"] == 1  # p04's math-verify label
    assert report["paper"] == {"sft": 77629, "pairs": 53175}
    first = report["malformed"]["examples"][0]
    assert (first["row"], first["line"], first["reason"]) == (9, 9, "label_length_mismatch")
    assert first["file"] == str(RAW)

    sft_idx, pair_idx = _selection(sft, pairs, _raw_by_uuid())
    assert sft_idx == DEFAULT_SFT
    assert pair_idx == DEFAULT_PAIRS
    assert all(set(r) == {"messages", "uuid", "source"} for r in sft)
    assert all(set(r) == {"prompt", "chosen", "rejected", "uuid", "source"} for r in pairs)

    md = (tmp_path / "report.md").read_text()
    assert "| labels_match | problems | both label lists have one entry per generation | 14 | 2 |" in md
    assert "| sft.jsonl | 12 | 77,629 |" in md and "| pairs.jsonl | 9 | 53,175 |" in md
    assert "| label_length_mismatch | 2 |" in md


@pytest.mark.parametrize(
    "flags,funnel,extra_sft,extra_pairs,malformed_delta",
    [
        # No source excluded: p07 (cn_k12, correct) joins; p21 (cn_k12) now meets the empty-generation check.
        (
            ["--exclude-sources"],
            [30, 20, 18, 18, 16, 14, 14, 13, 13, 9, 9],
            {"p07-cn-k12": 0},
            {},
            {"empty_generation": 1},
        ),
        # No validity filter: p05 joins; p20 now reaches the label-length check.
        (
            ["--valid-values"],
            [30, 20, 20, 18, 15, 14, 14, 13, 13, 9, 9],
            {"p05-invalid": 0},
            {},
            {"label_length_mismatch": 1},
        ),
        # Mismatched label lists kept, missing labels false: p08 and p09 become [correct, incorrect].
        (
            ["--no-require-label-lengths"],
            [30, 20, 18, 16, 16, 15, 15, 14, 14, 11, 11],
            {"p08-llama-short": 0, "p09-mv-long": 0},
            {"p08-llama-short": (0, 1), "p09-mv-long": (0, 1)},
            {"label_length_mismatch": -2},
        ),
        # Empty generations kept: p10 = ["", correct].
        (
            ["--allow-empty-generations"],
            [30, 20, 18, 16, 14, 14, 14, 13, 13, 10, 10],
            {"p10-empty-generation": 1},
            {"p10-empty-generation": (1, 0)},
            {"empty_generation": -1},
        ),
    ],
)
def test_each_rule_has_a_flag(tmp_path, flags, funnel, extra_sft, extra_pairs, malformed_delta) -> None:
    report, sft, pairs = _run(tmp_path, *flags)
    assert _funnel(report) == funnel
    expected_malformed = dict(DEFAULT_MALFORMED)
    for k, d in malformed_delta.items():
        expected_malformed[k] = expected_malformed[k] + d
    assert report["malformed"]["by_reason"] == {k: v for k, v in expected_malformed.items() if v}
    raw = _raw_by_uuid()
    sft_idx, pair_idx = _selection(sft, pairs, raw)
    assert sft_idx == {**DEFAULT_SFT, **extra_sft}
    assert pair_idx == {**DEFAULT_PAIRS, **extra_pairs}


def test_correct_rule_llama_only(tmp_path: Path) -> None:
    report, sft, pairs = _run(tmp_path, "--correct-rule", "llama")
    sft_idx, pair_idx = _selection(sft, pairs, _raw_by_uuid())
    # With llama labels alone p03 and p04 are all-correct (no pair) and pick generation 0.
    assert sft_idx == {**DEFAULT_SFT, "p03-llama-only-first": 0, "p04-null-label": 0}
    assert pair_idx == {k: v for k, v in DEFAULT_PAIRS.items() if k not in ("p03-llama-only-first", "p04-null-label")}
    assert report["labels"]["rule"] == "llama"


def test_strict_names_file_and_row(tmp_path: Path, capsys) -> None:
    argv = ["--input", str(RAW), "--output-dir", str(tmp_path / "o"), "--no-progress", "--strict"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    # Rows 1-8 are fine or dropped by rules; row 9 (line 9) has a one-entry llama list for two generations.
    assert f"{RAW}: row 9 (line 9): label_length_mismatch" in err
    assert not (tmp_path / "o" / "sft.jsonl").exists() and not (tmp_path / "o" / "sft.jsonl.partial").exists()
    with pytest.raises(DataError) as e:
        build(
            BuilderConfig(
                input=[str(RAW)],
                output_dir=str(tmp_path / "o2"),
                strict=True,
                progress=False,
                exclude_sources=(),
                valid_values=(),
            )
        )
    assert (e.value.path, e.value.row, e.value.reason) == (str(RAW), 9, "label_length_mismatch")


def test_determinism_and_seed(tmp_path: Path) -> None:
    _run(tmp_path / "a", "--seed", "7")
    _run(tmp_path / "b", "--seed", "7")
    _, sft_c, pairs_c = _run(tmp_path / "c", "--seed", "8")
    for name in ("sft.jsonl", "pairs.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    ra, rb = (json.loads((tmp_path / d / "report.json").read_text()) for d in "ab")
    ra.pop("timing"), rb.pop("timing")
    ra["config"].pop("output_dir"), rb["config"].pop("output_dir")
    assert ra == rb
    # Another seed: same rows, another order.
    sft_a = _read_jsonl(tmp_path / "a" / "sft.jsonl")
    assert sorted(r["uuid"] for r in sft_a) == sorted(r["uuid"] for r in sft_c)
    assert [r["uuid"] for r in sft_a] != [r["uuid"] for r in sft_c]
    # The order is the seeded hash of the input position, the same permutation for both sets; the
    # expected order is computed here from the documented key (blake2b-64 of "seed/file/row"), not
    # with the builder's own function.
    def key(seed, file_index, row):
        import hashlib

        return int.from_bytes(hashlib.blake2b(f"{seed}/{file_index}/{row}".encode(), digest_size=8).digest(), "big")

    order = {u: key(7, 0, row) for row, u in enumerate(_all_uuids_by_row())}
    assert [r["uuid"] for r in sft_a] == sorted(DEFAULT_SFT, key=order.__getitem__)
    pairs_a = _read_jsonl(tmp_path / "a" / "pairs.jsonl")
    assert [r["uuid"] for r in pairs_a] == sorted(DEFAULT_PAIRS, key=order.__getitem__)


def _all_uuids_by_row() -> list:
    out = []
    for line in RAW.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        out.append(row.get("uuid") if isinstance(row, dict) else None)
    return out


def test_no_shuffle_keeps_input_order(tmp_path: Path) -> None:
    _, sft, pairs = _run(tmp_path, "--no-shuffle")
    rows = _all_uuids_by_row()
    assert [r["uuid"] for r in sft] == sorted(DEFAULT_SFT, key=rows.index)
    assert [r["uuid"] for r in pairs] == sorted(DEFAULT_PAIRS, key=rows.index)


def test_limit_reads_only_the_first_rows(tmp_path: Path) -> None:
    report, sft, pairs = _run(tmp_path, "--limit", "5", "--no-shuffle")
    assert _funnel(report)[:2] == [5, 5]
    assert [r["uuid"] for r in sft] == [
        "p00-mixed",
        "p01-all-correct",
        "p03-llama-only-first",
        "p04-null-label",
    ]
    assert [r["uuid"] for r in pairs] == ["p00-mixed", "p03-llama-only-first", "p04-null-label"]


def test_decontaminate(tmp_path: Path) -> None:
    report, sft, pairs = _run(tmp_path, "--decontaminate")
    removed = {"p22-math500", "p23-aime24", "p28-math500-short"}
    assert _funnel(report) == [30, 20, 18, 16, 14, 13, 10, 9, 9, 8, 8]
    dec = report["decontamination"]
    assert dec["removed"] == 3
    # p22 (a verbatim MATH-500 problem) also shares the generic 8-gram "that can be written as the sum of"
    # with AMC problem 4, so it counts for both benchmarks.
    amc4 = json.loads((ROOT / "megatron_redi/evaluation/benchmarks/rllm_amc.jsonl").read_text().splitlines()[4])
    assert "that can be written as the sum of" in " ".join(amc4["problem"].lower().split())
    assert dec["by_benchmark"] == {"aime24": 1, "amc": 1, "math500": 2}
    listed = {
        r["uuid"]: {(h["benchmark"], h["index"]) for h in r["hits"]}
        for r in _read_jsonl(tmp_path / "contaminated.jsonl")
    }
    assert listed == {
        "p22-math500": {("math500", 6), ("amc", 4)},
        "p23-aime24": {("aime24", 0)},
        "p28-math500-short": {("math500", 31)},
    }
    assert {r["uuid"] for r in sft} == set(DEFAULT_SFT) - removed
    assert {r["uuid"] for r in pairs} == set(DEFAULT_PAIRS) - removed
    assert "| aime24 | 30 | 1 |" in (tmp_path / "report.md").read_text()


def test_input_formats_agree(tmp_path: Path) -> None:
    """parquet, save_to_disk (Dataset and DatasetDict) and a folder give the same sets as jsonl."""
    import datasets

    # Arrow needs one type per column: leave out the three rows whose values have the wrong type (missing
    # fields become nulls, which the builder treats as missing).
    wrong_type = {"p12-generations-string", "p14-label-string", "p29-valid-is-bool"}
    rows = [r for u, r in _raw_by_uuid().items() if u not in wrong_type]
    assert len(rows) == 24
    jsonl = tmp_path / "in" / "raw.jsonl"
    jsonl.parent.mkdir()
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "raw.parquet"))
    ds.save_to_disk(str(tmp_path / "disk_ds"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "disk_dd"))

    ref_report, ref_sft, ref_pairs = _run(tmp_path / "o_jsonl", inputs=[str(jsonl)])
    assert _funnel(ref_report)[:2] == [24, 20]
    for name, inp in [
        ("parquet", tmp_path / "raw.parquet"),
        ("dataset", tmp_path / "disk_ds"),
        ("dict", tmp_path / "disk_dd"),
        ("folder", jsonl.parent),
    ]:
        report, sft, pairs = _run(tmp_path / f"o_{name}", inputs=[str(inp)])
        assert _funnel(report) == _funnel(ref_report), name
        assert sft == ref_sft and pairs == ref_pairs, name


def test_strict_on_save_to_disk_names_arrow_file_and_row(tmp_path: Path) -> None:
    import datasets

    good = [r for r in _raw_by_uuid().values() if check_schema(r) is None][:6]
    bad = _raw_by_uuid()["p09-mv-long"]
    datasets.Dataset.from_list(good[:4] + [bad] + good[4:]).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DataError) as e:
        build(
            BuilderConfig(
                input=[str(tmp_path / "d")],
                output_dir=str(tmp_path / "o"),
                strict=True,
                progress=False,
                valid_values=(),
                exclude_sources=(),
            )
        )
    assert e.value.row == 5 and e.value.path.endswith(".arrow") and str(tmp_path / "d") in e.value.path
    assert "row 5: label_length_mismatch" in str(e.value)


def test_length_filter(tmp_path: Path) -> None:
    report, sft, pairs = _run(
        tmp_path / "a",
        "--tokenizer-model",
        str(TOKENIZER),
        "--max-prompt-tokens",
        "1000",
        "--max-response-tokens",
        "1500",
    )
    # p25's problem, p26's rejected and p27's chosen are over the bounds (checked in the next test); every
    # other prompt and generation has fewer UTF-8 bytes than the bound, and a byte-level BPE token covers at
    # least one byte, so they cannot be over.
    assert _funnel(report) == [30, 20, 18, 16, 14, 13, 13, 12, 12, 9, 6]
    assert report["length_filter"]["dropped_by_check"] == {
        "pairs_chosen": 1,
        "pairs_prompt": 1,
        "pairs_rejected": 1,
    }
    long_ones = {"p25-long-prompt", "p26-long-rejected", "p27-long-chosen"}
    assert {r["uuid"] for r in pairs} == set(DEFAULT_PAIRS) - long_ones
    assert {r["uuid"] for r in sft} == set(DEFAULT_SFT)  # the paper filters pairs only

    report, sft, _ = _run(
        tmp_path / "b",
        "--tokenizer-model",
        str(TOKENIZER),
        "--max-prompt-tokens",
        "1000",
        "--max-response-tokens",
        "1500",
        "--length-filter-sft",
    )
    assert {r["uuid"] for r in sft} == set(DEFAULT_SFT) - {"p25-long-prompt", "p27-long-chosen"}
    assert report["sft_rows"] == 10


def test_token_counts_match_the_chat_template() -> None:
    """Prompt = templated system + user + generation prompt; response = generation + <|im_end|>\\n + EOS."""
    from transformers import AutoTokenizer

    counter = TokenLengths(str(TOKENIZER))
    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    raw = _raw_by_uuid()
    problems = [raw[u]["problem"] for u in ("p00-mixed", "p25-long-prompt", "p23-aime24")]
    gens = [raw["p26-long-rejected"]["generations"][1], raw["p00-mixed"]["generations"][0]]
    expected_prompt = [
        len(
            tok.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=True, add_generation_prompt=True, return_dict=True
            )["input_ids"]
        )
        for p in problems
    ]
    expected_resp = [len(tok(g + "<|im_end|>\n", add_special_tokens=False)["input_ids"]) + 1 for g in gens]
    assert counter.prompt_tokens(problems) == expected_prompt
    assert counter.response_tokens(gens) == expected_resp
    assert expected_prompt[1] > 1000 > max(expected_prompt[0], expected_prompt[2])
    assert expected_resp[0] > 1500 > expected_resp[1]
    assert len(raw["p25-long-prompt"]["problem"]) > 1000 and len(raw["p23-aime24"]["problem"]) < 800


def test_length_shortcut_gives_the_exact_decision() -> None:
    """ASCII texts at most `bound` characters long skip tokenization; the decisions equal exact counts."""
    counter = TokenLengths(str(TOKENIZER))
    assert counter.byte_bounded
    raw = _raw_by_uuid()
    gens = [g for u in ("p00-mixed", "p26-long-rejected", "p27-long-chosen") for g in raw[u]["generations"]]
    gens += ["Non-ASCII: \u2211 \u00d7 \u221a \u6570\u5b66 " * 5]
    exact = counter.response_tokens(gens)
    bounds = sorted({b for n in exact for b in (n - 1, n, n + 1)} | {10, 10**6})
    for bound in bounds:
        assert counter.responses_within(gens, bound) == [n <= bound for n in exact], bound
    before, after = counter.completion_parts
    for g, n in zip(gens[:-1], exact):  # the bound the shortcut relies on: tokens <= characters (ASCII)
        assert n <= len(before + g + after) + counter.eos_extra
    counter.tokenized = 0
    counter.responses_within(gens, 10**6)
    assert counter.tokenized == 1  # only the non-ASCII text needed the tokenizer
    problems = [raw["p00-mixed"]["problem"], raw["p25-long-prompt"]["problem"]]
    exact_p = counter.prompt_tokens(problems)
    assert counter.prompts_within(problems, 1000) == [n <= 1000 for n in exact_p] == [True, False]


# ------------------------------------------------------------------------------------------------- reverify


def test_run_with_timeout() -> None:
    t0 = time.perf_counter()
    assert run_with_timeout(lambda: time.sleep(5) or CORRECT, 0.2, TIMEOUT) == TIMEOUT
    assert time.perf_counter() - t0 < 2
    assert run_with_timeout(lambda: CORRECT, 1.0, TIMEOUT) == CORRECT


def test_grade_problem_in_process() -> None:
    grades = grade_problem(
        (
            "\\frac{1}{2}",
            [
                "So $\\boxed{0.5}$.",
                "$\\boxed{\\frac{1}{3}}$",
                "<think>\\boxed{7}</think> Final: $\\boxed{\\frac{2}{4}}$",
            ],
            10.0,
        )
    )
    assert grades == [CORRECT, INCORRECT, CORRECT]
    assert grade_problem(("", ["$\\boxed{1}$", "nothing"], 10.0)) == [ERROR, ERROR]  # no reference
    assert answer_region("<think>a</think> b") == " b"
    assert answer_region("no think tag") == "no think tag"


@pytest.mark.slow
@pytest.mark.parametrize(
    "combine,sft_expected,pairs_expected",
    [
        # Regrades: r0 [T, F], r1 [T, F, T], r2 [T, F]  (0.5 = 1/2, sqrt(2) boxed, 2 != sqrt(2)).
        (
            "replace",
            {"r0-stored-wrong": 0, "r1-agree": 0, "r2-split-labels": 0},
            {"r0-stored-wrong": (0, 1), "r1-agree": (0, 1), "r2-split-labels": (0, 1)},
        ),
        # Stored both-labels: r0 [F, T], r1 [T, F, T], r2 [F, F].  AND: r0 [F, F], r1 [T, F, T], r2 [F, F].
        ("and", {"r1-agree": 0}, {"r1-agree": (0, 1)}),
        # OR: r0 [T, T], r1 [T, F, T], r2 [T, F].
        (
            "or",
            {"r0-stored-wrong": 0, "r1-agree": 0, "r2-split-labels": 0},
            {"r1-agree": (0, 1), "r2-split-labels": (0, 1)},
        ),
    ],
)
def test_reverify_with_math_verify(tmp_path, combine, sft_expected, pairs_expected) -> None:
    report, sft, pairs = _run(
        tmp_path,
        "--reverify",
        "--reverify-combine",
        combine,
        "--reverify-workers",
        "2",
        "--reverify-timeout",
        "20",
        inputs=[str(RAW_REVERIFY)],
    )
    sft_idx, pair_idx = _selection(sft, pairs, _raw_by_uuid(RAW_REVERIFY))
    assert sft_idx == sft_expected and pair_idx == pairs_expected
    assert report["malformed"]["by_reason"] == {"missing_field:answer": 1}  # r3 has no answer to grade against
    rv = report["reverify"]
    assert (rv["graded"], rv["correct"], rv["timeouts"], rv["errors"]) == (7, 4, 0, 0)
    # Stored (both labels) vs regraded, per generation: r0 (F,T) (T,F); r1 (T,T) (F,F) (T,T); r2 (F,T) (F,F).
    assert (rv["both_correct"], rv["stored_only"], rv["regraded_only"], rv["both_incorrect"]) == (2, 1, 2, 2)


# --------------------------------------------------------------------------------------------------- plumbing


def test_sink_orders_by_key_even_when_buckets_split(tmp_path: Path) -> None:
    keys = [shuffle_key(3, 0, i) for i in range(500)]
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    splits = []

    class Sink(JsonlSink):
        def _drain(self, bucket, out, depth):
            splits.append(depth)
            super()._drain(bucket, out, depth)

    sink = Sink(tmp_path / "out.jsonl", tmp, max_bucket_bytes=300)  # ~8 rows of ~30 bytes per bucket
    for i, k in enumerate(keys):
        sink.write({"i": i}, k)
    assert sink.close() == 500
    assert max(splits) == 2  # some buckets were split by the next bits of the key
    got = [r["i"] for r in _read_jsonl(tmp_path / "out.jsonl")]
    assert got == sorted(range(500), key=keys.__getitem__)
    assert list(tmp.iterdir()) == []


def test_synthetic_raw_matches_an_independent_count(tmp_path: Path) -> None:
    cfg = RawSyntheticConfig(n=400, seed=5, gen_chars=200)
    rows = list(iter_raw_rows(cfg))
    assert rows == list(iter_raw_rows(cfg))  # deterministic
    assert all(check_schema(r) is None for r in rows)
    # Straightforward re-statement of the paper's recipe, to compare the builder with.
    sft = pairs = 0
    for r in rows:
        c = r["correctness"]
        n = len(r["generations"])
        if r["problem_is_valid"] != "yes" or r["source"] == "cn_k12":
            continue
        if len(c["llama_verification"]) != n or len(c["math_verify_reparsed_answer"]) != n:
            continue
        ok = [a and b for a, b in zip(c["llama_verification"], c["math_verify_reparsed_answer"])]
        sft += any(ok)
        pairs += any(ok) and not all(ok)
    assert 0 < pairs < sft < 400
    path = write_raw(tmp_path / "raw.parquet", cfg, rows_per_group=64)
    report, out_sft, out_pairs = _run(tmp_path / "o", inputs=[str(path)])
    assert (report["sft_rows"], report["pair_rows"]) == (sft, pairs) == (len(out_sft), len(out_pairs))
    assert report["inputs"][0]["rows"] == 400


def test_undecodable_line_is_malformed_not_fatal(tmp_path: Path) -> None:
    good = RAW.read_text().splitlines()[0]
    path = tmp_path / "raw.jsonl"
    path.write_bytes(b"\xff\xfe not utf-8\n" + good.encode() + b"\n\n")  # blank lines are not rows
    report, sft, _ = _run(tmp_path / "o", inputs=[str(path)])
    assert report["malformed"]["by_reason"] == {"invalid_json": 1}
    assert [r["uuid"] for r in sft] == ["p00-mixed"] and report["counts"][0]["remaining"] == 2
