"""The depth/length projection of tools/benchmark_memory.py recovers a known bilinear law exactly."""

from __future__ import annotations

import importlib.util

import pytest

from tests.helpers_dist import ROOT

_spec = importlib.util.spec_from_file_location("benchmark_memory", ROOT / "tools" / "benchmark_memory.py")
bm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bm)


def test_fit_recovers_bilinear_law():
    law = lambda L, T: 3.0 + 0.5 * L + 0.002 * T + 0.0007 * L * T
    pts = {(L, T): law(L, T) for L in (1, 2) for T in (1024, 2048)}
    assert bm.fit(pts) == pytest.approx((3.0, 0.5, 0.002, 0.0007))


def test_projection_to_full_depth():
    """Rows as benchmark_train writes them: held grows 1 GB per layer; a step adds 0.25 GB per layer
    per 1k tokens plus 2 GB; the baseline is missing (not run) and is left out."""
    rows = {L: [{"tokens": T, "ours_static_gb": 4.0 + L, "ours_peak_gb": 4.0 + L + 2.0 + 0.25 * L * T / 1000}
                for T in (1000, 2000)] for L in (1, 2)}
    (p,) = bm.project(rows, "ours", 28, [16000])
    assert p["held_gb"] == pytest.approx(32.0)
    assert p["step_gb"] == pytest.approx(2.0 + 0.25 * 28 * 16)
    assert p["peak_gb"] == pytest.approx(32.0 + 2.0 + 0.25 * 28 * 16)
    assert bm.project(rows, "baseline", 28, [16000]) == []
