"""Read metrics JSONL files and render them: a text table for terminals, a PNG for people.

The PNG puts chosen/rejected log-probs next to the grad norm, where REDI's failure mode (both
log-probs falling together while the update norm spikes) is visible at a glance.
"""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def table(records: list[dict], keys: tuple[str, ...] = ("loss", "chosen_logp", "rejected_logp", "margin",
                                                           "pair_accuracy", "grad_norm", "lr"),
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


def plot(runs: dict[str, list[dict]], out: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, recs in runs.items():
        it = [r["iteration"] for r in recs]
        axes[0].plot(it, [r["loss"] for r in recs], label=name)
        if any("chosen_logp" in r for r in recs):
            axes[1].plot(it, [r["chosen_logp"] for r in recs], label=f"{name} chosen")
            axes[1].plot(it, [r["rejected_logp"] for r in recs], "--", label=f"{name} rejected")
        axes[2].plot(it, [r["grad_norm"] for r in recs], label=name)
    for ax, title in zip(axes, ("loss", "mean per-token log-prob", "grad norm")):
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
