"""Read metrics JSONL files and render them: a text table for terminals, a PNG for people.

The PNG puts chosen/rejected log-probs next to the grad norm, where REDI's failure mode (both
log-probs falling together while the update norm spikes) is visible at a glance.
"""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    """Records of a --metrics-file. FileNotFoundError / ValueError name the file (missing, empty, or a
    line that is not JSON)."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{p} is a folder; give the --metrics-file JSONL of a run")
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such metrics file")
    out = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}: line {n} is not JSON ({e})") from None
    if not out:
        raise ValueError(f"{p}: no records (did the run log anything? see --log-interval)")
    return out


def table(records: list[dict], keys: tuple[str, ...] = ("loss", "chosen_logp", "rejected_logp", "margin",
                                                           "pair_accuracy", "rewards/margins",
                                                           "rewards/accuracies", "grad_norm", "lr"),
          max_rows: int = 12) -> str:
    keys = tuple(k for k in keys if any(r.get(k) is not None for r in records))
    step = max(1, len(records) // max_rows)
    rows = records[::step]
    if records and rows[-1] is not records[-1]:
        rows.append(records[-1])
    head = f"{'iter':>6} " + " ".join(f"{k:>14}" for k in keys)
    lines = [head, "-" * len(head)]
    for r in rows:
        vals = [f"{r[k]:>14.4e}" if k == "lr" else f"{r[k]:>14.4f}" if r.get(k) is not None else f"{'-':>14}"
                for k in keys]
        lines.append(f"{r['iteration']:>6} " + " ".join(vals))
    return "\n".join(lines)


def plot(runs: dict[str, list[dict]], out: str | Path, stages: bool = False,
         evals: dict[str, tuple[float, float]] | None = None) -> Path:
    """One PNG. Overlay (default): runs compared on one iteration axis. `stages`: the runs are
    consecutive stages (e.g. SFT then REDI) on ONE time axis, each starting where the previous ended,
    with the boundary marked, and each stage's loss on its own y scale (losses of different objectives
    are not comparable numbers). `evals` (with `stages`): {run name: (pass@1 %, SEM %)} measured at the
    end of that stage, drawn as a fourth panel on the same time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if evals and not stages:
        raise ValueError("evals are drawn at stage ends: pass stages=True")
    panels = 4 if evals else 3
    fig, axes = plt.subplots(1, panels, figsize=(5.4 * panels, 4.2), sharex=stages)
    offset, colors = 0, plt.rcParams["axes.prop_cycle"].by_key()["color"]
    loss_ax = axes[0]
    for k, (name, recs) in enumerate(runs.items()):
        color = colors[k % len(colors)]
        it = [r["iteration"] + (offset if stages else 0) for r in recs]
        ax = loss_ax if (k == 0 or not stages) else loss_ax.twinx()
        if stages and k > 0:
            ax.spines["right"].set_position(("axes", 1 + 0.12 * (k - 1)))
            ax.tick_params(axis="y", colors=color)
        ax.plot(it, [r["loss"] for r in recs], color=color, label=f"{name} loss")
        if stages:
            ax.set_ylabel(f"{name} loss", color=color)
        if any("chosen_logp" in r for r in recs):
            axes[1].plot(it, [r.get("chosen_logp") for r in recs], color=color, label=f"{name} chosen")
            axes[1].plot(it, [r.get("rejected_logp") for r in recs], "--", color=color, label=f"{name} rejected")
        axes[2].plot(it, [r["grad_norm"] for r in recs], color=color, label=name)
        if stages:
            for ax_ in axes:
                if k > 0:
                    ax_.axvline(offset, color="grey", ls=":", lw=1)
                ax_.text(offset, 0.98, f" {name}", transform=ax_.get_xaxis_transform(), va="top", fontsize=8,
                         clip_on=True)
            if evals and name in evals:
                value, sem = evals[name]
                axes[3].errorbar([it[-1]], [value], yerr=[sem], fmt="o", color=color, capsize=4)
                axes[3].annotate(f"{value:.1f} ± {sem:.1f}", (it[-1], value), textcoords="offset points",
                                 xytext=(-8, 8), ha="right", fontsize=8, color=color)
            offset = it[-1]
    axes[2].set_yscale("log")
    titles = ("loss" + (" (each stage on its own scale)" if stages else ""), "mean per-token log-prob",
              "grad norm (log scale)", "held-out pass@1 (%) ± SEM, at each stage's end")
    if evals:
        axes[3].set_ylim(0, 100)
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("iteration" + (" (stages one after the other)" if stages else ""))
        if ax is not axes[0] and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if not stages:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
