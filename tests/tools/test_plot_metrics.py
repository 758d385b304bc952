"""tools/plot_metrics.py: stages on one time axis, and errors that name the file instead of a traceback
or a blank picture."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers_dist import ROOT

TOOL = ROOT / "tools" / "plot_metrics.py"


def _write(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def _run(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_stages_on_one_axis(tmp_path):
    sft = _write(tmp_path / "sft.jsonl", [{"iteration": i, "loss": 2.0 / i, "grad_norm": 1.0, "lr": 1e-3}
                                          for i in range(1, 7)])
    redi = _write(tmp_path / "redi.jsonl", [{"iteration": i, "loss": -0.1 * i, "grad_norm": 0.5, "lr": 1e-4,
                                             "chosen_logp": -1.0 + 0.01 * i, "rejected_logp": -1.0 - 0.02 * i}
                                            for i in range(1, 5)])
    out = tmp_path / "curves.png"
    p = _run(sft, redi, "--stages", "--output", out)
    assert p.returncode == 0, p.stderr
    png = out.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    import matplotlib.pyplot as plt

    from megatron_redi.training.curves import plot, read_metrics

    captured = {}
    real = plt.Figure.savefig

    def keep(fig, *a, **k):
        captured["axes"] = fig.axes
        return real(fig, *a, **k)

    plt.Figure.savefig = keep
    try:
        plot({"sft": read_metrics(sft), "redi": read_metrics(redi)}, tmp_path / "b.png", stages=True)
    finally:
        plt.Figure.savefig = real
    xs = sorted({float(x) for ax in captured["axes"] for line in ax.get_lines() for x in line.get_xdata()})
    assert xs == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]  # REDI's 1..4 continue after SFT's 6 iterations
    assert len(captured["axes"]) == 4  # the second stage's loss has its own y axis
    p = _run(sft, redi, "--stages", "--output", out)
    assert "replaced the previous plot" in p.stdout


def test_missing_and_empty_inputs_name_the_file(tmp_path):
    p = _run(tmp_path / "nope.jsonl")
    assert p.returncode == 2 and f"{tmp_path / 'nope.jsonl'}: no such metrics file" in p.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    p = _run(empty, "--output", tmp_path / "x.png")
    assert p.returncode == 2 and f"{empty}: no records" in p.stderr and not (tmp_path / "x.png").exists()


def test_pass_at_1_drawn_at_each_stage_end(tmp_path):
    import matplotlib.pyplot as plt
    import pytest

    from megatron_redi.training.curves import plot

    sft = [{"iteration": i, "loss": 1.0 / i, "grad_norm": 1.0} for i in range(1, 7)]
    redi = [{"iteration": i, "loss": -0.1 * i, "grad_norm": 0.5, "chosen_logp": -0.1, "rejected_logp": -0.2}
            for i in range(1, 5)]
    captured, real = {}, plt.Figure.savefig

    def keep(fig, *a, **k):
        captured["axes"] = fig.axes
        return real(fig, *a, **k)

    plt.Figure.savefig = keep
    try:
        plot({"sft": sft, "redi": redi}, tmp_path / "c.png", stages=True,
             evals={"sft": (27.5, 1.0), "redi": (31.0, 2.0)})
    finally:
        plt.Figure.savefig = real
    panel = next(ax for ax in captured["axes"] if "pass@1" in ax.get_title())
    points = sorted((float(x), float(y)) for line in panel.get_lines() if line.get_marker() == "o"
                    for x, y in zip(line.get_xdata(), line.get_ydata()))
    assert points == [(6.0, 27.5), (10.0, 31.0)]  # SFT's end, then REDI's end on the shared time axis
    with pytest.raises(ValueError, match="stages"):
        plot({"sft": sft}, tmp_path / "d.png", evals={"sft": (1.0, 0.1)})
