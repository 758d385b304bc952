"""Benchmark decontamination by word n-gram overlap (the recipe of s1 and open-r1, n = 8).

A training problem is flagged when any of its word 8-grams (after lower-casing and collapsing whitespace)
also occurs in a benchmark problem. A benchmark problem shorter than n words has no n-gram, so for it we
look for its whole normalized word sequence inside the training problem instead: otherwise a one-line
MATH-500 problem such as "Simplify $\\sqrt{242}$." (32 of the 500 have fewer than 8 words) could never match.

The benchmark files are read directly from `megatron_redi/evaluation/benchmarks/` (field `problem`), so the
prep package does not depend on the evaluation package.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCHMARK_DIR = Path(__file__).resolve().parent.parent / "evaluation" / "benchmarks"

# The five sets the paper reports (rllm/DeepScaleR copies): name -> file name.
DEFAULT_BENCHMARKS: dict[str, str] = {
    "math500": "rllm_math500.jsonl",
    "aime24": "rllm_aime24.jsonl",
    "amc": "rllm_amc.jsonl",
    "minerva": "rllm_minerva.jsonl",
    "olympiadbench": "rllm_olympiadbench.jsonl",
}


def normalize_text(text: str) -> str:
    """Lower-case and collapse all whitespace runs to one space (punctuation is kept, as in open-r1)."""
    return " ".join(text.lower().split())


def word_ngrams(text: str, n: int) -> list[str]:
    """Word n-grams of already normalized text, joined by single spaces."""
    words = text.split(" ") if text else []
    return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]


def default_benchmark_paths() -> dict[str, Path]:
    """The bundled benchmark files the paper evaluates on, keyed by short name."""
    return {name: BENCHMARK_DIR / fname for name, fname in DEFAULT_BENCHMARKS.items()}


def benchmark_name(path: str | Path) -> str:
    """Short name for a benchmark file: `rllm_math500.jsonl` -> `math500`."""
    stem = Path(path).name.split(".")[0]
    for prefix in ("rllm_", "qwen25math_"):
        if stem.startswith(prefix):
            return stem[len(prefix) :]
    return stem


def read_benchmark_problems(path: str | Path, field_name: str = "problem") -> list[str]:
    """Problem texts of one JSONL benchmark file; rows without a string `problem` are skipped."""
    problems = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                value = json.loads(line).get(field_name)
                if isinstance(value, str):
                    problems.append(value)
    return problems


@dataclass(frozen=True)
class Hit:
    """One overlap: which benchmark, which problem in it (0-based line), and the evidence."""

    benchmark: str
    index: int
    ngram: str


@dataclass
class NgramIndex:
    """n-gram -> benchmark problems that contain it, plus whole-text keys for problems shorter than n.

    A short benchmark problem (k < n words) matches when its k words occur contiguously in the training
    problem, so it is caught inside a longer statement too.
    """

    n: int = 8
    ngrams: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    short_texts: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    _lengths: list[int] | None = field(default=None, repr=False)

    def add(self, name: str, problems: Iterable[str]) -> None:
        """Index one benchmark's problems under `name`."""
        count = 0
        for idx, text in enumerate(problems):
            count += 1
            norm = normalize_text(text)
            grams = word_ngrams(norm, self.n)
            if not grams:
                self._lengths = None
                self.short_texts.setdefault(norm, []).append((name, idx))
                continue
            for g in set(grams):
                self.ngrams.setdefault(g, []).append((name, idx))
        self.sizes[name] = self.sizes.get(name, 0) + count

    def _short_lengths(self) -> list[int]:
        if self._lengths is None:
            self._lengths = sorted({len(t.split(" ")) for t in self.short_texts if t})
        return self._lengths

    def match(self, text: str) -> list[Hit]:
        """All benchmark problems sharing an n-gram with `text` (one Hit per problem, first n-gram found)."""
        norm = normalize_text(text)
        grams = word_ngrams(norm, self.n)
        hits: dict[tuple[str, int], Hit] = {}
        for g in grams:
            for name, idx in self.ngrams.get(g, ()):
                hits.setdefault((name, idx), Hit(name, idx, g))
        # A benchmark problem shorter than n words has no n-gram: look for its whole word sequence.
        for k in self._short_lengths():
            for g in word_ngrams(norm, k):
                for name, idx in self.short_texts.get(g, ()):
                    hits.setdefault((name, idx), Hit(name, idx, g))
        return sorted(hits.values(), key=lambda h: (h.benchmark, h.index))


def build_index(paths: dict[str, Path] | Sequence[str | Path] | None = None, n: int = 8) -> NgramIndex:
    """Index benchmark files; `None` means the five bundled sets of the paper."""
    if paths is None:
        named = default_benchmark_paths()
    elif isinstance(paths, dict):
        named = {k: Path(v) for k, v in paths.items()}
    else:
        named = {benchmark_name(p): Path(p) for p in paths}
    index = NgramIndex(n=n)
    for name, path in named.items():
        index.add(name, read_benchmark_problems(path))
    return index
