"""Results of the toy reproduction: the table (like the paper's Table 2) and the plots.

pass@1 per run is the mean accuracy over the n samples of every held-out problem. Across seeds a method's
pass@1 is the mean of its seeds' values and its SEM is their sample standard deviation / sqrt(seeds); the
"vs SFT" column is the mean over seeds of (method - SFT) with the same sampling seed, and its SEM likewise.
"""

from __future__ import annotations

import math
from pathlib import Path

from megatron_redi.toy.config import METHODS
from megatron_redi.toy.errors import KINDS

LABELS = {"sft": "SFT (Stage 1)", "redi_sym_high_lr": "symmetric REDI, {factor:g}x lr", **{
    k: m.label for k, m in METHODS.items()}}
ORDER = ["sft", "dpo", "simpo", "redi_sym", "redi", "sft_more", "redi_sym_high_lr"]


def _in_order(methods) -> list[str]:
    """`methods` in the paper's table order; unknown names last."""
    return sorted(methods, key=lambda m: ORDER.index(m) if m in ORDER else len(ORDER))


def mean_sem(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std, ddof = 1, over sqrt(len)); SEM is nan for one value."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def summarize(runs: list[dict]) -> list[dict]:
    """One row per method, in the paper's order: pass@1 mean ± SEM over seeds, per-seed values, and the
    paired difference with SFT."""
    by_method: dict[str, dict[int, float]] = {}
    for r in runs:
        by_method.setdefault(r["method"], {})[r["seed"]] = r["pass@1"]
    sft = by_method.get("sft", {})
    rows = []
    for method in _in_order(by_method):
        seeds = by_method[method]
        mean, sem = mean_sem(list(seeds.values()))
        row = {"method": method, "seeds": sorted(seeds), "per_seed": [seeds[s] for s in sorted(seeds)],
               "pass@1": mean, "sem": sem}
        paired = [seeds[s] - sft[s] for s in sorted(seeds) if s in sft]
        if method != "sft" and paired:
            row["vs_sft"], row["vs_sft_sem"] = mean_sem(paired)
        rows.append(row)
    return rows


def _fmt(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.1f}"


def markdown_table(rows: list[dict], collapse_factor: float = 3.0) -> str:
    """The results as a Markdown table (pass@1 in %)."""
    lines = ["| method | pass@1 (%) ± SEM over seeds | vs SFT (paired) | per seed |", "|---|---|---|---|"]
    for r in rows:
        label = LABELS.get(r["method"], r["method"]).format(factor=collapse_factor)
        vs = f"{r['vs_sft']:+.1f} ± {_fmt(r['vs_sft_sem'])}" if "vs_sft" in r else "-"
        seeds = ", ".join(f"{v:.1f}" for v in r["per_seed"])
        lines.append(f"| {label} | {r['pass@1']:.1f} ± {_fmt(r['sem'])} | {vs} | {seeds} |")
    return "\n".join(lines)


def error_table(runs: list[dict], collapse_factor: float = 3.0) -> str:
    """Markdown: for each method, the share (%) of samples whose first departure from the teacher's correct
    solution is of each kind (:mod:`megatron_redi.toy.errors`), pooled over seeds."""
    pooled: dict[str, dict[str, int]] = {}
    for r in runs:
        acc = pooled.setdefault(r["method"], {})
        for kind, n in r.get("errors", {}).items():
            acc[kind] = acc.get(kind, 0) + n
    kinds = [k for k in KINDS if any(k in c for c in pooled.values())]
    lines = ["| method | " + " | ".join(k.replace("_", " ") for k in kinds) + " |",
             "|---|" + "---|" * len(kinds)]
    for method in _in_order(pooled):
        counts, total = pooled[method], sum(pooled[method].values())
        label = LABELS.get(method, method).format(factor=collapse_factor)
        lines.append(f"| {label} | " + " | ".join(f"{100 * counts.get(k, 0) / total:.1f}" for k in kinds) + " |")
    return "\n".join(lines)


def plot_results(rows: list[dict], curves: dict[str, list[dict]], out: str | Path,
                 collapse_factor: float = 3.0) -> Path:
    """One PNG: pass@1 per method (mean ± SEM over seeds, each seed a dot) and the chosen / rejected
    per-token log-probs during Stage 2 of the first seed (the paper's collapse figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    ax = axes[0]
    names = [LABELS.get(r["method"], r["method"]).format(factor=collapse_factor) for r in rows]
    ys = range(len(rows))
    for y, r in zip(ys, rows):
        color = "grey" if r["method"] == "sft" else "C0"
        ax.errorbar([r["pass@1"]], [y], xerr=[0 if math.isnan(r["sem"]) else r["sem"]], fmt="o", color=color,
                    capsize=4)
        ax.scatter(r["per_seed"], [y] * len(r["per_seed"]), s=12, color=color, alpha=0.4)
        ax.annotate(f"{r['pass@1']:.1f}", (r["pass@1"], y), textcoords="offset points", xytext=(0, 7),
                    ha="center", fontsize=8)
    sft = next((r for r in rows if r["method"] == "sft"), None)
    if sft:
        ax.axvline(sft["pass@1"], color="grey", ls=":", lw=1)
    ax.set_yticks(list(ys), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("held-out pass@1 (%)")
    ax.set_title("pass@1, mean ± SEM over seeds (dots: seeds)")
    styles = ["-", "--", ":", "-."]
    for k, (name, recs) in enumerate(curves.items()):
        if not any("chosen_logp" in r for r in recs):
            continue
        it = [r["iteration"] for r in recs]
        style = {"color": f"C{k % 10}", "ls": styles[k % len(styles)], "lw": 1.5}
        axes[1].plot(it, [r.get("chosen_logp") for r in recs], label=name, **style)
        axes[2].plot(it, [r.get("rejected_logp") for r in recs], label=name, **style)
    axes[1].set_title("chosen: mean per-token log-prob")
    axes[2].set_title("rejected: mean per-token log-prob")
    for a in axes[1:]:
        a.set_xlabel("Stage 2 iteration")
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
