import json

import pytest

from megatron_redi.evaluation import benchmarks as B
from megatron_redi.evaluation.benchmarks import LocalFields, load, resolve
from megatron_redi.evaluation.errors import BenchmarkError
from megatron_redi.grading.graders import math_verify_grade, rllm_grade


@pytest.mark.parametrize(
    "name, rows, mode",
    [("math500", 500, "any"), ("aime24", 30, "any"), ("amc", 83, "any"), ("minerva", 272, "any"),
     ("olympiadbench", 675, "all"), ("math500:prm800k", 500, "any"), ("aime24:qwen25math", 30, "any"),
     ("amc:qwen25math", 40, "any"), ("minerva:qwen25math", 272, "any"),
     ("olympiadbench:qwen25math", 675, "all")],
)
def test_bundled_benchmarks_load(name, rows, mode):
    b = load(resolve(name))
    assert len(b.problems) == rows == b.rows
    assert len({p.id for p in b.problems}) == rows
    assert all(p.problem.strip() and p.answers and all(a for a in p.answers) for p in b.problems)
    assert {p.list_mode for p in b.problems} == {mode}


def test_defaults_are_the_rllm_copies():
    assert [resolve(n).variant for n in B.DEFAULT_BENCHMARKS] == ["rllm"] * 5
    assert resolve("math500").path.name == "rllm_math500.jsonl"


def test_gold_normalisation_against_the_files():
    amc = load(resolve("amc"))
    raw = json.loads(amc.spec.path.read_text().splitlines()[0])
    assert raw["answer"] == 142.0 and amc.problems[0].answers == ("142",)
    minerva = load(resolve("minerva"))
    assert minerva.problems[0].answers == ("9.6",)  # "9.6\n" stripped
    assert max(len(p.answers) for p in minerva.problems) == 3  # alternative spellings kept
    # The Qwen2.5-Math Minerva file has no answer field: the gold is the solution's last box.
    qm = load(resolve("minerva:qwen25math"))
    assert qm.problems[0].answers == ("1.6",)
    aime = load(resolve("aime24"))
    assert aime.problems[1].answers == ("025",)


def test_rllm_and_prm800k_math500_agree():
    a, b = load(resolve("math500")), load(resolve("math500:prm800k"))
    rows = lambda bench: [(p.id, p.problem, p.answers) for p in bench.problems]
    assert rows(a) == rows(b)


def test_limit_keeps_first_rows():
    b = load(resolve("aime24"), limit=3)
    assert [p.index for p in b.problems] == [0, 1, 2] and b.rows == 30


@pytest.mark.parametrize("name, match", [("math501", "unknown benchmark 'math501'"),
                                         ("math500:foo", "unknown version 'foo' of 'math500'"),
                                         ("missing/file.jsonl", "benchmark file not found")])
def test_unknown_names(name, match):
    with pytest.raises(BenchmarkError, match=match):
        resolve(name)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_local_file_with_custom_fields(tmp_path):
    f = _write(tmp_path / "mine.jsonl", [{"q": "1+1?", "gold": 2, "uid": "a"},
                                         {"q": "2+2?", "gold": ["4", "four"], "uid": "b"}])
    b = load(resolve(str(f), LocalFields(problem="q", answer="gold", id="uid")))
    assert b.key == "mine"
    assert [(p.id, p.problem, p.answers) for p in b.problems] == [("a", "1+1?", ("2",)),
                                                                  ("b", "2+2?", ("4", "four"))]


@pytest.mark.parametrize(
    "rows, fields, match",
    [
        ([{"problem": "p", "answer": "1"}, {"problem": "p2"}], LocalFields(),
         r"mine.jsonl, line 2: missing field 'answer' \(set --answer-field\)"),
        ([{"question": "p", "answer": "1"}], LocalFields(),
         r"line 1: missing field 'problem' \(set --problem-field\)"),
        ([{"problem": "p", "answer": ""}], LocalFields(), "line 1, field 'answer': empty answer"),
        ([{"problem": "p", "answer": None}], LocalFields(), "line 1, field 'answer': answer must be"),
        ([{"problem": "p", "answer": "1", "id": 1}, {"problem": "q", "answer": "2", "id": 1}],
         LocalFields(id="id"), "line 2: id '1' in field 'id' repeats line 1"),
    ],
)
def test_local_file_errors_name_file_and_row(tmp_path, rows, fields, match):
    f = _write(tmp_path / "mine.jsonl", rows)
    with pytest.raises(BenchmarkError, match=match):
        load(resolve(str(f), fields))


def test_invalid_json_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"problem": "p", "answer": "1"}\n{not json\n')
    with pytest.raises(BenchmarkError, match="bad.jsonl, line 2: not valid JSON"):
        load(resolve(str(f)))


def test_float_gold_from_amc():
    # The AMC file stores answers as floats (27.0); they become "27" once, when loaded.
    def boxed(s: str) -> str:
        return "Some reasoning first. So the answer is $\\boxed{" + s + "}$."

    assert B.gold_strings(27.0, "row") == ("27",)
    assert B.gold_strings(0.5, "row") == ("0.5",)
    gold = B.gold_strings(27.0, "row")
    assert math_verify_grade(boxed("27"), gold).correct
    assert rllm_grade(boxed("27"), gold).correct
    assert not math_verify_grade(boxed("27.5"), gold).correct
