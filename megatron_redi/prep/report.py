"""The build report: the funnel of rows left after every rule (report.json) and its markdown table (report.md),
with the paper's final counts alongside ours."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from megatron_redi.data.readers import InputFile
from megatron_redi.prep.config import BuilderConfig

PAPER_COUNTS = {"sft": 77629, "pairs": 53175}

# (key, which set the count is about, what a row must satisfy to remain)
STEPS: list[tuple[str, str, str]] = [
    ("rows_read", "problems", "rows read from the input"),
    ("well_formed", "problems", "required fields present with the right types"),
    ("problem_is_valid", "problems", "problem_is_valid is one of {valid}"),
    ("source_allowed", "problems", "source not in {excluded}"),
    ("labels_match", "problems", "both label lists have one entry per generation"),
    ("generations_nonempty", "problems", "no empty generation"),
    ("not_contaminated", "problems", "no {n}-gram overlap with a benchmark problem"),
    ("has_correct", "sft", "a correct generation exists (first one -> SFT)"),
    ("sft_length_ok", "sft", "prompt <= {p} and response <= {r} tokens"),
    ("has_correct_and_incorrect", "pairs", "a correct and an incorrect generation exist (first of each)"),
    ("pairs_length_ok", "pairs", "prompt <= {p} and chosen, rejected <= {r} tokens"),
]
PREVIOUS = {"has_correct": "not_contaminated", "has_correct_and_incorrect": "not_contaminated"}
# (stored verdict, regraded verdict) -> report key
AGREEMENT = {
    (True, True): "both_correct",
    (True, False): "stored_only",
    (False, True): "regraded_only",
    (False, False): "both_incorrect",
}



@dataclass
class BuildState:
    """The counts a build keeps while it runs: the funnel, malformed rows, labels, regrades, filters."""

    remaining: Counter = field(default_factory=Counter)
    malformed: Counter = field(default_factory=Counter)
    malformed_examples: list = field(default_factory=list)
    malformed_keys: list | None = None  # the fields of the first row refused for a missing or mistyped field
    labels: Counter = field(default_factory=Counter)
    reverify: Counter = field(default_factory=Counter)
    length_dropped: Counter = field(default_factory=Counter)
    contaminated_by: Counter = field(default_factory=Counter)


def make_report(
    cfg: BuilderConfig,
    st: BuildState,
    files: Sequence[InputFile],
    elapsed: float,
    benchmark_sizes: Mapping[str, int],
    texts_tokenized: int,
) -> dict:
    """report.json of a finished build: inputs, config, the funnel, malformed rows and each optional step."""
    fmt = {
        "valid": "{" + ", ".join(cfg.valid_values) + "}",
        "excluded": "{" + ", ".join(cfg.exclude_sources) + "}",
        "n": cfg.ngram_size,
        "p": cfg.max_prompt_tokens or "inf",
        "r": cfg.max_response_tokens or "inf",
    }
    applied = {
        "problem_is_valid": bool(cfg.valid_values),
        "source_allowed": bool(cfg.exclude_sources),
        "labels_match": cfg.uses_stored_labels and cfg.require_label_lengths,
        "generations_nonempty": not cfg.allow_empty_generations,
        "not_contaminated": cfg.decontaminate,
        "sft_length_ok": cfg.length_filter_active and cfg.length_filter_sft,
        "pairs_length_ok": cfg.length_filter_active,
    }
    counts, prev = [], None
    for key, which, rule in STEPS:
        remaining = st.remaining[key]
        before = st.remaining[PREVIOUS.get(key, prev)] if prev is not None else remaining
        counts.append(
            {
                "step": key,
                "set": which,
                "rule": rule.format(**fmt),
                "applied": applied.get(key, True),
                "remaining": remaining,
                "dropped": before - remaining,
            }
        )
        prev = key
    rows = st.remaining["rows_read"]
    config = asdict(cfg)
    config["input"] = [str(p) for p in cfg.input]
    return {
        "inputs": [asdict(f) for f in files],
        "config": config,
        "counts": counts,
        "sft_rows": st.remaining["sft_length_ok"],
        "pair_rows": st.remaining["pairs_length_ok"],
        "paper": dict(PAPER_COUNTS),
        "malformed": {
            "total": sum(st.malformed.values()),
            "by_reason": dict(sorted(st.malformed.items())),
            "examples": st.malformed_examples,
            "first_row_keys": st.malformed_keys,
        },
        "labels": {
            "rule": "regraded" if not cfg.uses_stored_labels else cfg.correct_rule,
            "generations": st.labels["generations"],
            "correct": st.labels["correct"],
            "null_labels": st.labels["null_labels"],
        },
        "reverify": {
            "enabled": True,
            "combine": cfg.reverify_combine,
            "timeout_s": cfg.reverify_timeout,
            **{k: st.reverify[k] for k in ("graded", "correct", "timeouts", "errors", *AGREEMENT.values())},
        }
        if cfg.reverify
        else {"enabled": False},
        "decontamination": {
            "enabled": cfg.decontaminate,
            "ngram_size": cfg.ngram_size,
            "benchmarks": dict(benchmark_sizes),
            "removed": st.remaining["generations_nonempty"] - st.remaining["not_contaminated"],
            "by_benchmark": dict(sorted(st.contaminated_by.items())),
            "list": "contaminated.jsonl" if cfg.decontaminate else None,
        },
        "length_filter": {
            "applied": cfg.length_filter_active,
            "tokenizer": cfg.tokenizer_model,
            "max_prompt_tokens": cfg.max_prompt_tokens,
            "max_response_tokens": cfg.max_response_tokens,
            "sft_too": cfg.length_filter_sft,
            "dropped_by_check": dict(sorted(st.length_dropped.items())),
            "texts_tokenized": texts_tokenized,
        },
        "outputs": {
            "sft": "sft.jsonl",
            "pairs": "pairs.jsonl",
            "order": "shuffled" if cfg.shuffle else "input",
        },
        "timing": {
            "seconds": round(elapsed, 3),
            "rows_per_s": round(rows / elapsed, 1) if elapsed else None,
        },
    }


EXPECTED_FIELDS = (
    "problem (str), generations (list of str), correctness.llama_verification and "
    "correctness.math_verify_reparsed_answer (lists of true/false/null, one per generation, nested under "
    "'correctness'), problem_is_valid (str), source (str), uuid (str); answer (str) with --reverify"
)


def schema_hint(keys: Sequence[str] | None) -> str | None:
    """What a refused row's fields suggest, and the fields the builder expected (docs/DATA.md)."""
    if keys is None:
        return None
    found = set(keys)
    if found & {"prompt", "chosen", "rejected", "messages", "completion"}:
        guess = ("these look like training rows already (TRL layout): give them to the trainer's --data-path, "
                 "not to the builder")
    elif found & {"llama_verification", "math_verify_reparsed_answer"}:
        guess = "the label lists are at the top level: nest them under 'correctness'"
    elif "generation" in found or "response" in found:
        guess = "one generation per row: the builder wants all generations of a problem in one 'generations' list"
    else:
        guess = "the rows are not in the OpenR1-Math-Raw schema"
    return f"{guess}. Found fields {sorted(found)}; expected {EXPECTED_FIELDS} (see docs/DATA.md)"


def summary_lines(report: dict) -> list[str]:
    """The console summary: rows left after each rule, the outputs, malformed rows by reason."""
    out = [f"{'step':<28}{'remaining':>12}{'dropped':>10}"]
    for c in report["counts"]:
        if c["applied"]:
            out.append(f"{c['step']:<28}{c['remaining']:>12,}{c['dropped']:>10,}")
    out.append(f"sft rows {report['sft_rows']:,} | pairs {report['pair_rows']:,} "
               f"(paper: {report['paper']['sft']:,} / {report['paper']['pairs']:,})")
    mal = report["malformed"]
    if mal["total"]:
        out.append(f"malformed rows skipped: {mal['total']:,} ("
                   + ", ".join(f"{k} {v:,}" for k, v in sorted(mal["by_reason"].items(), key=lambda kv: -kv[1]))
                   + ")")
        first = mal["examples"][0]
        out.append(f"  first: {first['file']}: row {first['row']}: {first['reason']}")
    return out


def nothing_written(report: dict) -> str | None:
    """Why a build wrote no row at all (the top reasons, a schema hint), or None when it wrote some."""
    if report["sft_rows"] or report["pair_rows"]:
        return None
    drops = sorted(((c["dropped"], c["step"], c["rule"]) for c in report["counts"] if c["dropped"]), reverse=True)
    mal = report["malformed"]["by_reason"]
    reasons = [f"{n:,} rows malformed: {k}" for k, n in sorted(mal.items(), key=lambda kv: -kv[1])[:3]]
    reasons += [f"{n:,} dropped at {step} ({rule})" for n, step, rule in drops if step != "well_formed"][:3]
    msg = "nothing written: sft.jsonl and pairs.jsonl are empty"
    if not report["counts"][0]["remaining"]:
        msg += "; the input holds no rows"
    elif reasons:
        msg += "; top reasons: " + "; ".join(reasons)
    hint = schema_hint(report["malformed"].get("first_row_keys"))
    return msg + (f"\nhint: {hint}" if hint else "")


def render_markdown(report: dict) -> str:
    """The funnel as a markdown table, with the paper's final counts alongside ours."""
    lines = [
        "# REDI data build report",
        "",
        "| step | set | rule | remaining | dropped |",
        "|---|---|---|---:|---:|",
    ]
    for c in report["counts"]:
        rule = c["rule"] if c["applied"] else f"(off) {c['rule']}"
        lines.append(f"| {c['step']} | {c['set']} | {rule} | {c['remaining']:,} | {c['dropped']:,} |")
    paper = report["paper"]
    lines += [
        "",
        "| output | rows | paper |",
        "|---|---:|---:|",
        f"| sft.jsonl | {report['sft_rows']:,} | {paper['sft']:,} |",
        f"| pairs.jsonl | {report['pair_rows']:,} | {paper['pairs']:,} |",
    ]
    mal = report["malformed"]
    if mal["total"]:
        lines += ["", f"Malformed rows skipped: {mal['total']:,}", "", "| reason | rows |", "|---|---:|"]
        lines += [f"| {k} | {v:,} |" for k, v in mal["by_reason"].items()]
    dec = report["decontamination"]
    if dec["enabled"]:
        lines += ["", f"Decontamination ({dec['ngram_size']}-grams): {dec['removed']:,} problems removed", ""]
        lines += ["| benchmark | problems in benchmark | training rows hit |", "|---|---:|---:|"]
        lines += [f"| {k} | {v:,} | {dec['by_benchmark'].get(k, 0):,} |" for k, v in dec["benchmarks"].items()]
    rv = report["reverify"]
    if rv["enabled"]:
        lines += [
            "",
            "Regrading with math-verify ("
            + rv["combine"]
            + "): "
            + ", ".join(f"{k} {v:,}" for k, v in rv.items() if isinstance(v, int) and k != "enabled"),
        ]
    t = report["timing"]
    lines += ["", f"Time: {t['seconds']} s ({t['rows_per_s']} rows/s)", ""]
    return "\n".join(lines)
