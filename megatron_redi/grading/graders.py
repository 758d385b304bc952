"""Answer grading: math-verify (default) and an rllm-style grader (the paper's final numbers).

Both are plain functions of (response, gold answers) so they run the same in-process, in the
process pool (:mod:`.pool`) or in a test. Time limits are enforced here with one ``SIGALRM`` per
sample (:mod:`.timeout`) instead of math-verify's own alarms: math-verify's alarms raise in threads and nest badly,
while ours covers extraction, parsing and comparison together and is interruptible in pool workers
(each runs tasks on its main thread).

Gold lists follow the benchmark: ``any`` accepts a match with one listed spelling (Minerva),
``all`` needs every listed answer, compared as one set (OlympiadBench).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache

from .extraction import Extraction, after_think, all_boxed, last_boxed
from .timeout import ItemTimeout, run_with_timeout

GRADERS = ("math_verify", "rllm")


@dataclass(frozen=True)
class GradeRequest:
    response: str
    answers: tuple[str, ...]
    list_mode: str = "any"
    graders: tuple[str, ...] = ("math_verify",)
    extraction: str = "boxed"
    require_think: bool = False  # rllm grader: a response without </think> is wrong


@dataclass
class Verdict:
    extracted: str | None
    correct: bool


@dataclass
class GradeResult:
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    timed_out: bool = False
    error: str | None = None

    def primary(self, grader: str) -> Verdict:
        return self.verdicts[grader]


# --------------------------------------------------------------------------------------- math-verify
_MV_READY = False


def _mv_import():
    global _MV_READY
    import math_verify

    if not _MV_READY:
        for name in ("math_verify", "math_verify.parser", "math_verify.grader", "latex2sympy2_extended"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        _MV_READY = True
    return math_verify


_MATH_DOLLAR = re.compile(r"(?<!\\)\$")  # a ``$`` that delimits math; ``\$`` is a dollar sign


def gold_latex(answer: str) -> str:
    """A gold answer as bare LaTeX: its math delimiters dropped, escaped ``\\$`` (a dollar sign, as in
    ``\\$18.90``) kept. Golds carry delimiters in every arrangement their sources wrote: ``$5$``,
    ``$69$,$84$``, ``$(-\\infty, 0) \\cup\\{1\\}$.`` (a sentence's period) and stray ones
    (OlympiadBench's ``$221,$8$``, Minerva's ``a+$ $b``)."""
    text = answer.strip()
    if text.endswith("$.") and not text.endswith("\\$."):
        text = text[:-1]
    return re.sub(r"\s+", " ", _MATH_DOLLAR.sub(" ", text)).strip()


def gold_text(answer: str) -> str:
    """A gold answer as math-verify should read it: :func:`gold_latex` in ``$...$`` (math-verify's LaTeX
    extractor needs delimiters), or the gold itself when it holds a ``\\boxed{}``."""
    return answer if "\\boxed" in answer else f"${gold_latex(answer)}$"


@lru_cache(maxsize=8192)
def _mv_parse_gold(text: str):
    mv = _mv_import()
    return mv.parse(text, parsing_timeout=None)


def _mv_parse_pred(content: str):
    mv = _mv_import()
    return mv.parse("\\boxed{" + content + "}", parsing_timeout=None)


def _golds_for(answers: tuple[str, ...], list_mode: str) -> tuple[str, ...]:
    if list_mode == "all" and len(answers) > 1:
        return (", ".join(gold_latex(a) for a in answers),)
    return answers


def _final_boxes(response: str, ext: Extraction) -> list[str]:
    """Distinct non-empty boxes of the answer region (after ``</think>`` when there is one), in order."""
    tail = after_think(response)
    if tail is None and ext.mode == "think_boxed":
        return []
    out: list[str] = []
    for box in all_boxed(response if tail is None else tail):
        box = box.strip()
        if box and box not in out:
            out.append(box)
    return out


def _is_several_answers(parsed) -> bool:
    import sympy

    return bool(parsed) and isinstance(parsed[0], sympy.FiniteSet) and len(parsed[0]) > 1


def math_verify_grade(response: str, answers: tuple[str, ...], list_mode: str = "any",
                      extraction: str = "boxed") -> Verdict:
    """Extract (last box by default) and compare with math-verify's ``verify``.

    A gold made of several answers (a set such as OlympiadBench's ``(2,2), (6,2)``, or an ``all`` list)
    may also be answered one box per answer: when the last box does not match, the distinct boxes of
    the answer region are joined and compared as one set, as math-verify's own extraction does.
    """
    mv = _mv_import()
    ext = Extraction.parse(extraction)
    if ext.mode == "math_verify":
        pred = mv.parse(response, parsing_timeout=None)
        extracted = (str(pred[-1]) if pred else None)
    else:
        extracted = ext(response)
        pred = _mv_parse_pred(extracted) if extracted else []
    if not pred:
        return Verdict(extracted, False)
    golds = [_mv_parse_gold(g) for g in map(gold_text, _golds_for(answers, list_mode))]
    for parsed in golds:
        if parsed and mv.verify(parsed, pred, timeout_seconds=None):
            return Verdict(extracted, True)
    boxes = _final_boxes(response, ext) if ext.mode in ("boxed", "think_boxed") else []
    multi = [g for g in golds if _is_several_answers(g)]
    if len(boxes) > 1 and multi:
        joined = ", ".join(boxes)
        joined_pred = _mv_parse_pred(joined)
        if joined_pred and any(mv.verify(g, joined_pred, timeout_seconds=None) for g in multi):
            return Verdict(joined, True)
    return Verdict(extracted, False)


# ------------------------------------------------------------------------------------ rllm-style
# Two tests in the spirit of the MATH / PRM800K graders that rllm uses: equality after a light
# normalisation of the LaTeX string, then, failing that, sympy equivalence of a plain-text form.

_UNIT_WORDS = ("degree", "cm", "centimeter", "meter", "mile", "second", "minute", "hour", "day", "week",
               "month", "year", "foot", "feet", "inch", "yard", "unit")


def _unwrap_text(s: str) -> str:
    """``\\text{...}`` around the whole answer -> its content (``\\text{a} + \\text{b}`` stays)."""
    s = s.strip()
    m = re.match(r"\\(?:text|textbf|textnormal|mathrm|mbox)\s*(?=\{)", s)
    if m:
        got = _brace_group(s, m.end())
        if got is not None and got[1] == len(s):
            return got[0].strip()
    return s


def _brace_group(s: str, i: int) -> tuple[str, int] | None:
    """The argument starting at ``s[i]``: a balanced ``{...}`` group or one character."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        return None
    if s[i] != "{":
        return s[i], i + 1
    depth = 0
    for k in range(i, len(s)):
        if s[k] == "{":
            depth += 1
        elif s[k] == "}":
            depth -= 1
            if depth == 0:
                return s[i + 1 : k], k + 1
    return None


def _rewrite_command(s: str, cmd: str, nargs: int, fmt) -> str:
    """Replace ``\\cmd{a}{b}`` (or ``\\cmd ab``) by ``fmt(a, b)``, innermost arguments included."""
    out, i = [], 0
    while True:
        j = s.find(cmd, i)
        if j < 0:
            out.append(s[i:])
            return "".join(out)
        end = j + len(cmd)
        if end < len(s) and s[end].isalpha():  # \fracx is not \frac x; \sqrtx neither
            out.append(s[i:end])
            i = end
            continue
        args, k = [], end
        for _ in range(nargs):
            got = _brace_group(s, k)
            if got is None:
                break
            args.append(_rewrite_command(got[0], cmd, nargs, fmt))
            k = got[1]
        if len(args) < nargs:
            out.append(s[i:end])
            i = end
            continue
        out.append(s[i:j])
        out.append(fmt(*args))
        i = k


def normalize_string(answer: str) -> str:
    """Light, string-level normalisation (MATH-style): equal outputs mean equal answers."""
    s = _unwrap_text(answer.strip().replace("~", " "))
    s = s.replace("\n", "").replace("\\!", "").replace("\\,", "").replace("\\;", "")
    s = s.replace("\\\\", "\\").replace("tfrac", "frac").replace("dfrac", "frac").replace("cfrac", "frac")
    s = re.sub(r"\\(ge|le|ne)q(?![A-Za-z])", r"\\\1", s)  # \geq is \ge
    s = re.sub(r"\\lt(?![A-Za-z])", "<", s)
    s = re.sub(r"\\gt(?![A-Za-z])", ">", s)
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\circ", "")
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"\\(?:text|textbf|textnormal|mbox|mathrm)\{\s[^{}]*\}$", "", s)  # units: "10\text{ cm}"
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if s.startswith("."):
        s = "0" + s
    lhs, eq, rhs = s.partition("=")
    # "x = 5" -> "5", but a number on the left is part of the answer: "7 = 11a+c" stays
    if eq and "=" not in rhs and len(lhs.strip()) <= 2 and re.search(r"[A-Za-z]", lhs):
        s = rhs
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    s = s.replace(" ", "")
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    m = re.fullmatch(r"(-?\d+)/(\d+)", s)
    if m:
        s = f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}"
    return s


_LATEX_SYMBOLS = {
    "\\pi": "pi", "\\infty": "oo", "\\cdot": "*", "\\times": "*", "\\div": "/", "\\ln": "log",
    "\\log": "log", "\\sin": "sin", "\\cos": "cos", "\\tan": "tan", "\\sec": "sec", "\\csc": "csc",
    "\\cot": "cot", "\\exp": "exp", "\\le": "<=", "\\leq": "<=", "\\lt": "<", "\\ge": ">=", "\\geq": ">=",
    "\\gt": ">", "\\ne": "!=", "\\neq": "!=", "\\cup": "U", "\\{": "{", "\\}": "}",
}


def _frac_text(a: str, b: str) -> str:
    # Integer fractions stay "a/b" so the unreduced-fraction rule below can see them.
    if re.fullmatch(r"\s*-?\d+\s*", a) and re.fullmatch(r"\s*\d+\s*", b):
        return f"{a.strip()}/{b.strip()}"
    return f"(({a})/({b}))"


def _latex_to_plain(s: str) -> str:
    for cmd in ("\\dfrac", "\\tfrac", "\\cfrac", "\\frac"):
        s = _rewrite_command(s, cmd, 2, _frac_text)
    s = re.sub(r"\\sqrt\[([^\]]+)\]\{([^{}]*)\}", r"((\2)**(1/(\1)))", s)
    s = _rewrite_command(s, "\\sqrt", 1, lambda a: f"sqrt({a})")
    # a function with a bare argument: \sec x -> sec(x) (spaces go later, and "secx" would be one symbol)
    s = re.sub(r"\\(sin|cos|tan|sec|csc|cot|ln|log|exp)\s*([A-Za-z]|\d+)(?![A-Za-z0-9])", r"\\\1(\2)", s)
    for name in sorted(_LATEX_SYMBOLS, key=len, reverse=True):
        s = re.sub(re.escape(name) + r"(?![A-Za-z])", lambda _m, n=name: f" {_LATEX_SYMBOLS[n]} ", s)
    s = re.sub(r"\\[,;:! ]", "", s)
    s = re.sub(r"\\(?:text|textbf|textnormal|mathrm|mathbf|operatorname)\{([^{}]*)\}", r"\1", s)
    return s.replace("\\left", "").replace("\\right", "")


_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def join_thousands(s: str) -> str:
    """``48,000`` -> ``48000`` only when the whole answer is one number written with thousands separators
    (commas directly followed by three digits). Upstream (PRM800K / rllm) strips such commas anywhere,
    before splitting tuples, which merges ``(2,100)`` into ``2100``; here a tuple, interval, set or list
    keeps its parts, and ``32, 349`` (a list) is not ``32349``."""
    t = s.strip()
    return t.replace(",", "") if _THOUSANDS.fullmatch(t) else s


def _is_int_string(s: str) -> bool:
    try:
        x = float(s)
    except ValueError:
        return False
    return abs(x - round(x)) <= 1e-7


def normalize_for_sympy(answer: str) -> str:
    """Aggressive normalisation to a plain-text expression sympy can parse."""
    s = _unwrap_text(answer.strip().replace("~", " ").replace("{,}", ","))
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    s = s.replace(" or ", " , ").replace(" and ", " , ")
    for word, power in (("million", 6), ("billion", 9), ("trillion", 12)):
        s = s.replace(word, f"*10^{power}")
    s = re.sub(r"\\(?:text|mbox|mathrm)\{\s*(?:" + "|".join(_UNIT_WORDS) + r")[a-z]*\}", "", s)
    for unit in _UNIT_WORDS:
        s = re.sub(rf"{unit}(?:es|s)? *(\^[0-9]+)?", "", s)
    s = re.sub(r"\^ *\{? *\\circ *\}?", "", s)
    if len(s) > 1 and s[0] == "{" and s[-1] == "}":
        s = s[1:-1]
    s = re.sub(r"(\d),\\!(\d{3})(?!\d)", r"\1,\2", s)  # 32,\!348: a thousands separator in MATH's LaTeX
    s = join_thousands(s)
    try:
        f = float(s)
        if f.is_integer():
            s = str(int(f))
    except ValueError:
        pass
    if "\\" in s:
        s = _latex_to_plain(s)
    s = re.sub(r"- *", "-", s)
    s = re.sub(r"(\d) +(\d)", r"\1+\2", s)  # mixed number 7 3/4 -> 7+3/4
    s = s.replace(" ", "").replace("{", "(").replace("}", ")")
    s = s.lower()
    if _is_int_string(s):
        s = str(int(round(float(s))))
    return s


def _split_tuple(expr: str) -> list[str]:
    """Items of ``(a,b)`` / ``[a,b)`` (no nested brackets), else ``[expr]``. Commas always split here:
    thousands separators were joined earlier, and only in a lone number (:func:`join_thousands`)."""
    if len(expr) > 2 and expr[0] in "([" and expr[-1] in ")]" and not any(c in expr[1:-1] for c in "()[]"):
        return [e.strip() for e in expr[1:-1].split(",")]
    return [expr]


def _is_fraction(s: str) -> bool:
    return re.fullmatch(r"-?\d+/0*[1-9]\d*", s) is not None


def _sympy_equal(a: str, b: str) -> bool:
    expr = f"({a})-({b})"
    letters = {c for c in re.sub(r"sqrt|pi|log|sin|cos|tan|sec|csc|cot|exp", "", expr) if c.isalpha()}
    if len(letters) > 2 or re.search(r"(\^|\*\*)\s*\(?\s*\d{3,}|\^\s*\([^()]*\^", expr):
        return False  # unknown words, huge powers or power towers: not worth the risk of a hang
    import sympy
    from sympy.parsing import sympy_parser as sp

    try:
        parsed = sp.parse_expr(expr.replace("^", "**"),
                               transformations=sp.standard_transformations
                               + (sp.implicit_multiplication_application,))
        return sympy.simplify(parsed) == 0
    except Exception:  # noqa: BLE001 - any parse failure means "not shown equal"
        return False


def rllm_equal(given: str, gold: str) -> bool:
    """True when ``given`` matches ``gold`` by normalised string or by sympy equivalence."""
    if normalize_string(given) == normalize_string(gold):
        return True
    g, p = normalize_for_sympy(gold), normalize_for_sympy(given)
    if g == p:
        return True
    if not p or not g:
        return False
    g_items, p_items = _split_tuple(g), _split_tuple(p)
    if len(g_items) > 1 and (g[0] != p[0] or g[-1] != p[-1]):
        return False  # (a, b) vs [a, b]: different intervals
    if len(g_items) != len(p_items):
        return False
    for gi, pi in zip(g_items, p_items):
        if _is_fraction(gi) and _is_fraction(pi):
            ok = gi == pi  # an unreduced fraction is not the answer
        elif _is_int_string(gi) != _is_int_string(pi):
            ok = False  # an integer answer needs an integer, not 24.9999
        else:
            ok = _sympy_equal(gi, pi)
        if not ok:
            return False
    return True


def rllm_extract(response: str, require_think: bool = False) -> str | None:
    tail = after_think(response)
    if tail is None:
        if require_think:
            return None
        tail = response
    return last_boxed(tail)


def rllm_grade(response: str, answers: tuple[str, ...], list_mode: str = "any",
               require_think: bool = False) -> Verdict:
    """Answer after ``</think>`` (whole response if absent), last box, string/sympy equivalence."""
    extracted = rllm_extract(response, require_think)
    if not extracted:
        return Verdict(extracted, False)
    golds = []
    for ans in _golds_for(answers, list_mode):
        golds.append(last_boxed(ans) or ans if "\\boxed" in ans else gold_latex(ans))
    return Verdict(extracted, any(rllm_equal(extracted, g) for g in golds))


# ---------------------------------------------------------------------------------------- dispatch
def _extract_only(req: GradeRequest, grader: str) -> str | None:
    if grader == "rllm":
        return rllm_extract(req.response, req.require_think)
    return Extraction.parse(req.extraction)(req.response)


def _grade_one(req: GradeRequest, grader: str) -> Verdict:
    if grader == "math_verify":
        return math_verify_grade(req.response, req.answers, req.list_mode, req.extraction)
    if grader == "rllm":
        return rllm_grade(req.response, req.answers, req.list_mode, req.require_think)
    raise ValueError(f"unknown grader {grader!r}; known: {', '.join(GRADERS)}")


def grade(req: GradeRequest, timeout_s: float | None = None) -> GradeResult:
    """Grade with every grader in ``req.graders`` under one time limit for the whole sample.

    The limit needs SIGALRM on the main thread; elsewhere (a thread) it is not enforced, and the
    process pool's hard deadline is the backstop.
    """
    result = GradeResult()
    pending = list(req.graders)

    def grade_all() -> bool:
        while pending:
            grader = pending[0]
            try:
                result.verdicts[grader] = _grade_one(req, grader)
            except ItemTimeout:
                raise
            except Exception as exc:  # noqa: BLE001 - a grader crash is a wrong answer, recorded
                result.verdicts[grader] = Verdict(_safe_extract(req, grader), False)
                result.error = f"{grader}: {type(exc).__name__}: {exc}"[:500]
            pending.pop(0)
        return False

    result.timed_out = run_with_timeout(grade_all, timeout_s, on_timeout=True)
    for grader in pending:
        result.verdicts[grader] = Verdict(_safe_extract(req, grader), False)
    return result


def _safe_extract(req: GradeRequest, grader: str) -> str | None:
    try:
        return _extract_only(req, grader)
    except Exception:  # noqa: BLE001
        return None


_WARM = False
_WARM_CASES = (("\\frac{1}{2}", "0.5"), ("(2, 5]", "(2,5]"), ("\\{1,2\\}", "\\{2,1\\}"),
               ("(1, \\sqrt{2})", "(1,\\sqrt 2)"), ("x^{2}+1", "1+x^2"), ("\\text{(C)}", "C"),
               ("30^\\circ", "30"), ("25\\%", "25"), ("1, 3", "3,1"), ("x = 5", "5"))


def warm_up() -> None:
    """Grade a few typical answers once: the first use of sympy's and math-verify's parsers and
    simplifier costs ~1 s of lazy imports and caches, which should not land on a real sample."""
    global _WARM
    if _WARM:
        return
    for pred, gold in _WARM_CASES:
        grade(GradeRequest("\\boxed{" + pred + "}", (gold,), graders=GRADERS), None)
    _WARM = True
