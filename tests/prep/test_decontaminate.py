"""n-gram decontamination against the bundled benchmark problems."""

from __future__ import annotations

import json

import pytest

from megatron_redi.prep.decontaminate import (
    BENCHMARK_DIR,
    NgramIndex,
    benchmark_name,
    build_index,
    normalize_text,
    word_ngrams,
)

NONSENSE = "zebra quilt mango orbit violet tundra saffron pylon"


def _problems(fname: str) -> list[str]:
    with open(BENCHMARK_DIR / fname) as f:
        return [json.loads(line)["problem"] for line in f if line.strip()]


@pytest.fixture(scope="module")
def index() -> NgramIndex:
    return build_index()


def test_normalize_and_ngrams() -> None:
    assert normalize_text("  What IS\n\tthe   Value? ") == "what is the value?"
    assert word_ngrams("a b c d", 3) == ["a b c", "b c d"]
    assert word_ngrams("a b", 3) == []
    assert word_ngrams("", 2) == []
    assert benchmark_name("x/rllm_math500.jsonl") == "math500"
    assert benchmark_name("custom_set.jsonl") == "custom_set"


def test_bundled_benchmarks_are_the_papers_five(index: NgramIndex) -> None:
    # Row counts from SOURCES.md: MATH-500, AIME24 (30), AMC (83), Minerva (272), OlympiadBench (675).
    assert index.sizes == {"math500": 500, "aime24": 30, "amc": 83, "minerva": 272, "olympiadbench": 675}


@pytest.mark.parametrize(
    "fname,name",
    [
        ("rllm_math500.jsonl", "math500"),
        ("rllm_aime24.jsonl", "aime24"),
        ("rllm_amc.jsonl", "amc"),
        ("rllm_minerva.jsonl", "minerva"),
        ("rllm_olympiadbench.jsonl", "olympiadbench"),
    ],
)
def test_every_benchmark_problem_matches_itself(index: NgramIndex, fname: str, name: str) -> None:
    for i, text in enumerate(_problems(fname)):
        assert (name, i) in {(h.benchmark, h.index) for h in index.match(text)}, (name, i)


def test_embedded_problem_with_other_case_and_spacing_is_found(index: NgramIndex) -> None:
    text = _problems("rllm_aime24.jsonl")[3]
    noisy = "Homework 12.   " + "\n".join(text.upper().split()) + "  Show all work."
    hits = index.match(noisy)
    assert ("aime24", 3) in {(h.benchmark, h.index) for h in hits}
    assert all(h.ngram in normalize_text(text) for h in hits if h.benchmark == "aime24")


def test_seven_shared_words_do_not_match_eight_do(index: NgramIndex) -> None:
    words = _problems("rllm_minerva.jsonl")[0].split()
    assert index.match(" ".join(words[:7]) + " " + NONSENSE) == []
    hits = index.match(" ".join(words[:8]) + " " + NONSENSE)
    assert [(h.benchmark, h.index) for h in hits] == [("minerva", 0)]
    assert hits[0].ngram == normalize_text(" ".join(words[:8]))


def test_short_benchmark_problems_match_as_a_whole(index: NgramIndex) -> None:
    # "Simplify $\sqrt{242}$." has 2 words: no 8-gram, matched as a contiguous word run instead.
    short = [i for i, p in enumerate(_problems("rllm_math500.jsonl")) if p == "Simplify $\\sqrt{242}$."]
    assert len(short) == 1
    hits = index.match("Exercise 4. Simplify   $\\sqrt{242}$. Then check your work.")
    assert [(h.benchmark, h.index) for h in hits] == [("math500", short[0])]
    assert index.match("Simplify $\\sqrt{243}$. Then check your work.") == []


def test_custom_benchmark_file(tmp_path) -> None:
    path = tmp_path / "my_eval.jsonl"
    path.write_text(
        json.dumps({"problem": "one two three four five six seven eight nine"})
        + "\n"
        + json.dumps({"question": "no problem field here"})
        + "\n"
    )
    idx = build_index([path], n=8)
    assert idx.sizes == {"my_eval": 1}
    assert [h.benchmark for h in idx.match("zero one two three four five six seven eight")] == ["my_eval"]
    assert idx.match("one two three four five six seven") == []
