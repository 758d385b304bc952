"""Pull the final answer out of a model response.

Graders compare answers, not whole responses, so extraction is its own step: it decides what
``extracted_answer`` says in every sample record, and the same function serves both graders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConfigError

THINK_END = "</think>"
_BOX_COMMANDS = ("\\boxed", "\\fbox")


def _boxed_spans(text: str) -> list[tuple[int, str]]:
    """(start, content) of every closed ``\\boxed{...}`` / ``\\fbox{...}``, nested braces included.

    An unclosed box (a truncated response) is skipped rather than returned half-read. The brace-less
    form ``\\boxed 5`` is accepted up to the next whitespace or ``$``.
    """
    found: list[tuple[int, str]] = []
    for cmd in _BOX_COMMANDS:
        start = text.find(cmd)
        while start != -1:
            i = start + len(cmd)
            # \boxedA is another command (e.g. a macro), not a box: require '{', space or end.
            j = i
            while j < len(text) and text[j] in " \t":
                j += 1
            if j < len(text) and text[j] == "{":
                depth = 0
                for k in range(j, len(text)):
                    ch = text[k]
                    if ch == "{" and text[k - 1] != "\\":
                        depth += 1
                    elif ch == "}" and text[k - 1] != "\\":
                        depth -= 1
                        if depth == 0:
                            found.append((start, text[j + 1 : k]))
                            break
            elif j > i and j < len(text):
                m = re.match(r"[^\s$]+", text[j:])
                if m:
                    found.append((start, m.group(0)))
            start = text.find(cmd, start + 1)
    found.sort(key=lambda item: item[0])
    return found


def all_boxed(text: str) -> list[str]:
    """Contents of every closed box, in order of appearance (outer before inner when nested)."""
    return [content for _, content in _boxed_spans(text)]


def last_boxed(text: str) -> str | None:
    """Content of the box that starts last; for ``\\boxed{\\boxed{2}}`` that is the inner ``2``."""
    spans = _boxed_spans(text)
    return spans[-1][1].strip() if spans else None


def after_think(text: str) -> str | None:
    """Text after the first ``</think>``; None when the response never closed its thinking."""
    idx = text.find(THINK_END)
    return None if idx < 0 else text[idx + len(THINK_END) :]


def answer_region(generation: str) -> str:
    """The part after the last ``</think>`` when there is one and it is not blank, else the whole text:
    the final answer lives there, and parsing only it is much faster than parsing a long reasoning trace
    (the dataset builder's re-verification)."""
    head, sep, tail = generation.rpartition(THINK_END)
    return tail if sep and tail.strip() else generation


@dataclass(frozen=True)
class Extraction:
    """How to find the answer: ``boxed`` (last box anywhere), ``think_boxed`` (last box after
    ``</think>``, none without it), ``regex:<pattern>`` (group 1, else the whole match, of the last
    match), or ``math_verify`` (math-verify's own search over the whole response)."""

    mode: str = "boxed"
    pattern: str | None = None

    @classmethod
    def parse(cls, spec: str) -> Extraction:
        if spec in ("boxed", "think_boxed", "math_verify"):
            return cls(mode=spec)
        if spec.startswith("regex:"):
            pattern = spec[len("regex:") :]
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"--extraction: bad regular expression {pattern!r}: {exc}") from exc
            return cls(mode="regex", pattern=pattern)
        raise ConfigError(
            f"--extraction: unknown mode {spec!r}; use boxed, think_boxed, math_verify or regex:<pattern>"
        )

    @property
    def spec(self) -> str:
        return f"regex:{self.pattern}" if self.mode == "regex" else self.mode

    def __call__(self, response: str) -> str | None:
        """The answer string, or None. ``math_verify`` mode returns None here: the grader extracts."""
        if self.mode == "boxed":
            return last_boxed(response)
        if self.mode == "think_boxed":
            tail = after_think(response)
            return None if tail is None else last_boxed(tail)
        if self.mode == "regex":
            matches = list(re.finditer(self.pattern or "", response))
            if not matches:
                return None
            m = matches[-1]
            return (m.group(1) if m.groups() else m.group(0)).strip()
        return None
