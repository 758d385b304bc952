"""Benchmark registry and loading.

The bundled files are the paper's rllm copies (defaults) plus other published versions for
cross-checking; SOURCES.md next to them says where each came from. Any local JSONL with a problem and
an answer field works too. Everything is normalised to :class:`Problem` so graders never see file
layouts, and gold answers become lists of strings once, here (AMC stores ``27.0`` as a float).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from megatron_redi.grading.extraction import last_boxed

from .errors import BenchmarkError

BENCHMARK_DIR = Path(__file__).resolve().parent / "benchmarks"
DEFAULT_BENCHMARKS = ("math500", "aime24", "amc", "minerva", "olympiadbench")
LIST_MODES = ("any", "all")


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives and how its rows map to problem / answer / id.

    ``list_mode`` says what a gold list means: ``any`` (alternative spellings, Minerva) or ``all``
    (every listed answer is required, OlympiadBench). ``answer_from_solution`` names a field whose last
    ``\\boxed{}`` is the gold answer, for files that carry no separate answer.
    """

    name: str
    variant: str
    path: Path
    display: str
    problem_field: str = "problem"
    answer_field: str | None = "answer"
    id_field: str | None = None
    answer_from_solution: str | None = None
    list_mode: str = "any"
    expected_rows: int | None = None

    @property
    def key(self) -> str:
        """File-name-safe identifier, unique per variant (used for output files)."""
        return self.name if self.variant in ("rllm", "local") else f"{self.name}-{self.variant}"


def _bundled(name: str, variant: str, filename: str, display: str, **kw) -> BenchmarkSpec:
    return BenchmarkSpec(name=name, variant=variant, path=BENCHMARK_DIR / filename, display=display, **kw)


# name -> variant -> spec; the first variant listed is the default (the paper's rllm copies).
REGISTRY: dict[str, dict[str, BenchmarkSpec]] = {
    "math500": {
        "rllm": _bundled("math500", "rllm", "rllm_math500.jsonl", "MATH-500", id_field="unique_id",
                         expected_rows=500),
        "prm800k": _bundled("math500", "prm800k", "math500_prm800k.jsonl", "MATH-500",
                            id_field="unique_id", expected_rows=500),
    },
    "aime24": {
        "rllm": _bundled("aime24", "rllm", "rllm_aime24.jsonl", "AIME24", expected_rows=30),
        "qwen25math": _bundled("aime24", "qwen25math", "qwen25math_aime24.jsonl", "AIME24", id_field="id",
                               expected_rows=30),
    },
    "amc": {
        "rllm": _bundled("amc", "rllm", "rllm_amc.jsonl", "AMC", expected_rows=83),
        "qwen25math": _bundled("amc", "qwen25math", "qwen25math_amc23.jsonl", "AMC23", id_field="id",
                               expected_rows=40),
    },
    "minerva": {
        "rllm": _bundled("minerva", "rllm", "rllm_minerva.jsonl", "Minerva", id_field="idx",
                         list_mode="any", expected_rows=272),
        "qwen25math": _bundled("minerva", "qwen25math", "qwen25math_minerva_math.jsonl", "Minerva",
                               id_field="idx", answer_field=None, answer_from_solution="solution",
                               expected_rows=272),
    },
    "olympiadbench": {
        "rllm": _bundled("olympiadbench", "rllm", "rllm_olympiadbench.jsonl", "OlympiadBench",
                         id_field="id", list_mode="all", expected_rows=675),
        "qwen25math": _bundled("olympiadbench", "qwen25math", "qwen25math_olympiadbench.jsonl",
                               "OlympiadBench", problem_field="question", answer_field="final_answer",
                               id_field="id", list_mode="all", expected_rows=675),
    },
}


@dataclass(frozen=True)
class LocalFields:
    """Field names for local JSONL files (``--problem-field`` / ``--answer-field`` / ``--id-field``)."""

    problem: str = "problem"
    answer: str = "answer"
    id: str | None = None
    list_mode: str = "any"


@dataclass(frozen=True)
class Problem:
    index: int
    id: str
    problem: str
    answers: tuple[str, ...]
    list_mode: str = "any"


@dataclass
class Benchmark:
    spec: BenchmarkSpec
    problems: list[Problem]
    sha256: str
    rows: int
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.spec.key


def known_names() -> list[str]:
    return [f"{n}:{v}" if i else n for n, vs in REGISTRY.items() for i, v in enumerate(vs)]


def resolve(name: str, fields: LocalFields | None = None) -> BenchmarkSpec:
    """Turn a ``--benchmarks`` entry (``math500``, ``aime24:qwen25math`` or a path) into a spec."""
    fields = fields or LocalFields()
    entry = name.strip()
    if not entry:
        raise BenchmarkError("--benchmarks: empty benchmark name")
    if entry.endswith(".jsonl") or os.sep in entry or Path(entry).is_file():
        path = Path(entry).expanduser()
        if not path.is_file():
            raise BenchmarkError(f"--benchmarks: benchmark file not found: {path}")
        return BenchmarkSpec(name=path.stem, variant="local", path=path.resolve(), display=path.stem,
                             problem_field=fields.problem, answer_field=fields.answer, id_field=fields.id,
                             list_mode=fields.list_mode)
    base, _, variant = entry.partition(":")
    if base not in REGISTRY:
        raise BenchmarkError(
            f"--benchmarks: unknown benchmark {entry!r}; known: {', '.join(known_names())}, "
            "or a path to a .jsonl file"
        )
    variants = REGISTRY[base]
    variant = variant or next(iter(variants))
    if variant not in variants:
        raise BenchmarkError(
            f"--benchmarks: unknown version {variant!r} of {base!r}; known: {', '.join(variants)}"
        )
    return variants[variant]


def gold_strings(value, where: str) -> tuple[str, ...]:
    """Gold answer(s) as non-empty strings; integral floats lose their ``.0`` (AMC's ``27.0``)."""
    if isinstance(value, list | tuple):
        out: list[str] = []
        for item in value:
            out.extend(gold_strings(item, where))
        if not out:
            raise BenchmarkError(f"{where}: empty answer list")
        return tuple(out)
    if isinstance(value, bool) or value is None:
        raise BenchmarkError(f"{where}: answer must be a string, number or list, got {value!r}")
    if isinstance(value, int):
        return (str(value),)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise BenchmarkError(f"{where}: answer is not a finite number: {value!r}")
        return (str(int(value)) if value.is_integer() else repr(value),)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise BenchmarkError(f"{where}: empty answer")
        return (text,)
    raise BenchmarkError(f"{where}: answer must be a string, number or list, got {type(value).__name__}")


def _field_error(path: Path, line: int, name: str, flag: str | None) -> BenchmarkError:
    hint = f" (set {flag})" if flag else ""
    return BenchmarkError(f"{path}, line {line}: missing field {name!r}{hint}")


def load(spec: BenchmarkSpec, limit: int | None = None) -> Benchmark:
    """Read and validate every row (errors name file and line), then keep the first ``limit``."""
    if not spec.path.is_file():
        raise BenchmarkError(f"benchmark file not found: {spec.path}")
    if spec.list_mode not in LIST_MODES:
        raise BenchmarkError(f"list mode must be one of {LIST_MODES}, got {spec.list_mode!r}")
    raw = spec.path.read_bytes()
    local = spec.variant == "local"
    problems: list[Problem] = []
    seen_ids: dict[str, int] = {}
    for lineno, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{spec.path}, line {lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BenchmarkError(f"{where}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise BenchmarkError(f"{where}: expected a JSON object")
        if spec.problem_field not in row:
            raise _field_error(spec.path, lineno, spec.problem_field, "--problem-field" if local else None)
        problem = row[spec.problem_field]
        if not isinstance(problem, str) or not problem.strip():
            raise BenchmarkError(f"{where}: field {spec.problem_field!r} must be a non-empty string")
        if spec.answer_from_solution:
            if spec.answer_from_solution not in row:
                raise _field_error(spec.path, lineno, spec.answer_from_solution, None)
            boxed = last_boxed(str(row[spec.answer_from_solution]))
            if boxed is None:
                raise BenchmarkError(f"{where}: no \\boxed{{}} answer in field {spec.answer_from_solution!r}")
            answers = gold_strings(boxed, where)
        else:
            assert spec.answer_field is not None
            if spec.answer_field not in row:
                raise _field_error(spec.path, lineno, spec.answer_field, "--answer-field" if local else None)
            answers = gold_strings(row[spec.answer_field], f"{where}, field {spec.answer_field!r}")
        index = len(problems)
        if spec.id_field:
            if spec.id_field not in row:
                raise _field_error(spec.path, lineno, spec.id_field, "--id-field" if local else None)
            pid = str(row[spec.id_field])
            if pid in seen_ids:
                raise BenchmarkError(
                    f"{where}: id {pid!r} in field {spec.id_field!r} repeats line {seen_ids[pid]}"
                )
            seen_ids[pid] = lineno
        else:
            pid = str(index)
        problems.append(Problem(index=index, id=pid, problem=problem, answers=answers,
                                list_mode=spec.list_mode))
    if not problems:
        raise BenchmarkError(f"{spec.path}: no rows")
    rows = len(problems)
    if spec.expected_rows is not None and rows != spec.expected_rows:
        raise BenchmarkError(f"{spec.path}: expected {spec.expected_rows} rows, found {rows}")
    if limit is not None:
        problems = problems[:limit]
    return Benchmark(spec=spec, problems=problems, sha256=hashlib.sha256(raw).hexdigest(), rows=rows)
