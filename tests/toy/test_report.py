"""The toy results table: means and SEMs over seeds, the paired difference with SFT, and the plots."""

import math
import statistics

import pytest

from megatron_redi.toy.report import markdown_table, mean_sem, plot_results, summarize


def test_mean_sem_matches_statistics():
    values = [31.5, 40.0, 36.25]
    mean, sem = mean_sem(values)
    assert mean == pytest.approx(statistics.mean(values))
    assert sem == pytest.approx(statistics.stdev(values) / math.sqrt(3))
    assert math.isnan(mean_sem([4.0])[1])
    with pytest.raises(ValueError):
        mean_sem([])


def _runs():
    sft = {1: 30.0, 2: 32.0, 3: 28.0}
    redi = {1: 36.0, 2: 35.0, 3: 33.0}
    dpo = {1: 29.0, 2: 33.0}
    return ([{"method": "redi", "seed": s, "pass@1": v} for s, v in redi.items()]
            + [{"method": "sft", "seed": s, "pass@1": v} for s, v in sft.items()]
            + [{"method": "dpo", "seed": s, "pass@1": v} for s, v in dpo.items()])


def test_summarize_orders_methods_and_pairs_seeds_with_sft():
    rows = summarize(_runs())
    assert [r["method"] for r in rows] == ["sft", "dpo", "redi"]
    redi = rows[2]
    assert redi["per_seed"] == [36.0, 35.0, 33.0] and redi["pass@1"] == pytest.approx(104 / 3)
    diffs = [6.0, 3.0, 5.0]
    assert redi["vs_sft"] == pytest.approx(statistics.mean(diffs))
    assert redi["vs_sft_sem"] == pytest.approx(statistics.stdev(diffs) / math.sqrt(3))
    dpo = rows[1]  # only the seeds it has are paired
    assert dpo["vs_sft"] == pytest.approx(statistics.mean([-1.0, 1.0]))
    assert "vs_sft" not in rows[0]


def test_table_and_plot(tmp_path):
    rows = summarize(_runs())
    text = markdown_table(rows)
    assert "| REDI (alpha 0.8) | 34.7 ± 0.9 | +4.7 ± 0.9 | 36.0, 35.0, 33.0 |" in text
    assert text.splitlines()[2].startswith("| SFT (Stage 1) | 30.0 ± 1.2 | - |")
    curves = {"redi_seed1": [{"iteration": i, "chosen_logp": -0.1 * i, "rejected_logp": -0.2 * i} for i in (1, 2)]}
    out = plot_results(rows, curves, tmp_path / "r.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
