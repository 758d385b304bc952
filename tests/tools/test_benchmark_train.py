"""tools/benchmark_train.py at tiny size on CPU: it runs end to end, and the contenders train the same
model on the same data (their first-step REDI losses agree), one pair per step and on the realistic
mix (packed by the trainer's packer vs padded pairs). Timings are reported, never asserted. The Liger
baseline needs CUDA: here it is skipped, and the output says why."""

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
    assert "liger baseline (transformers + Liger kernels + fused AdamW): skipped: " in proc.stdout
    assert res["liger_baseline_skipped"] and "CUDA" in res["liger_baseline_skipped"]
    mix = res["mix"]
    # 6 pairs of unequal traces as one global batch: ours packs them (fewer micro-batches than pairs),
    # the baseline pads each pair; the loss of the whole batch agrees, useful tokens count no padding
    assert mix["pairs"] == 6 and 1 <= mix["ours_micro_batches"] < 6
    assert mix["tokens"] == sum(mix["distribution"]["pair_tokens"])
    assert abs(mix["ours_first_loss"] - mix["baseline_first_loss"]) < 1e-4, mix
    assert 0 < mix["baseline_pad_fraction"] < 1
    assert mix["ours_tokens_per_s"] > 0 and mix["baseline_tokens_per_s"] > 0
    assert "realistic mix: 6 pairs" in proc.stdout


def _tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmark_train", ROOT / "tools" / "benchmark_train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mix_distribution():
    """Traces log-uniform in [max/19, max] (1k-19k at full size), prompts in [max/8, max], the rejected
    trace the longer of the pair about two times in three; deterministic."""
    bt = _tool()
    pairs = bt.mix_pairs(600, 19000, 800, 1000, seed=0)
    assert pairs == bt.mix_pairs(600, 19000, 800, 1000, seed=0)
    traces = [len(t) for _, c, r in pairs for t in (c, r)]
    assert 1000 <= min(traces) and max(traces) <= 19000
    assert all(100 <= len(p) <= 800 for p, _, _ in pairs)
    below_median = sum(t < (1000 * 19000) ** 0.5 for t in traces) / len(traces)  # log-uniform: half below
    assert 0.45 < below_median < 0.55
    rejected_longer = sum(len(r) > len(c) for _, c, r in pairs) / len(pairs)
    assert 0.6 < rejected_longer < 0.73


def test_liger_patch_is_undone(monkeypatch):
    """apply_liger_kernel_to_qwen2 rebinds names in transformers' Qwen2 module for the whole process;
    the benchmark undoes it after the Liger contender, so the plain baseline stays plain. (A stand-in
    for liger-kernel, which needs CUDA.)"""
    import types

    from transformers.models.qwen2 import modeling_qwen2 as m

    before = dict(vars(m))
    forward = m.Qwen2ForCausalLM.forward

    def apply_liger_kernel_to_qwen2(**kw):
        assert kw == dict(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                          fused_linear_cross_entropy=False)
        m.apply_rotary_pos_emb = lambda *a: None
        m.Qwen2RMSNorm = type("LigerRMSNorm", (), {})
        m.Qwen2MLP = type("LigerSwiGLUMLP", (), {})
        m.added_by_liger = 1
        m.Qwen2ForCausalLM.forward = lambda *a: None

    pkg = types.ModuleType("liger_kernel")
    sub = types.ModuleType("liger_kernel.transformers")
    sub.apply_liger_kernel_to_qwen2 = apply_liger_kernel_to_qwen2
    monkeypatch.setitem(sys.modules, "liger_kernel", pkg)
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", sub)
    with _tool()._LigerPatched():
        assert m.Qwen2RMSNorm.__name__ == "LigerRMSNorm"
    assert dict(vars(m)) == before and m.Qwen2ForCausalLM.forward is forward
