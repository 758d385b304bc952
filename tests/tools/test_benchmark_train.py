"""tools/benchmark_train.py at tiny size on CPU: it runs end to end, and both contenders train the same
model on the same data (their first-step REDI losses agree). Timings are reported, never asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers_dist import ROOT, env, free_port

pytestmark = pytest.mark.slow  # launches processes (torchrun / tools); `-m 'not slow'` skips them


def test_tiny_run_same_loss_both_contenders(tmp_path):
    out = tmp_path / "bench.json"
    e = env()
    e["MASTER_PORT"] = str(free_port())
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark_train.py"), "--tiny", "--seq-lengths",
                           "192,320", "--steps", "1", "--output", str(out)],
                          cwd=ROOT, env=e, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["dtype"] == "fp32" and [r["tokens"] for r in res["rows"]] == [192, 320]
    for r in res["rows"]:
        assert abs(r["ours_first_loss"] - r["baseline_first_loss"]) < 1e-4, r
        assert r["ours_tokens_per_s"] > 0 and r["baseline_tokens_per_s"] > 0
        assert r["ours_peak_gb"] >= r["ours_static_gb"] > 0
        assert f"{r['speedup']:.2f}x" in proc.stdout  # the readable table shows each row's speedup
