"""The toy reproduction end to end at micro size: every step's command line really runs (builder, SFT,
reference scoring, DPO and REDI, export, evaluation), results agree with the samples on disk, and a second
start resumes without redoing anything."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from megatron_redi.toy.config import LAYOUTS, ToyConfig, ToyModel
from megatron_redi.toy.pipeline import Pipeline, StepFailed
from tests.helpers_dist import ROOT

pytestmark = pytest.mark.slow

# Tensor-parallel here (the documented runs use the default, data parallel), so both layouts run end to end.
MICRO = ToyConfig(model=ToyModel(hidden_size=64, intermediate_size=128, num_hidden_layers=2),
                  train_problems=48, heldout_problems=6, sft_epochs=1, stage2_iters=2, methods=("dpo", "redi"),
                  seeds=(1,), collapse_lr_factor=2.0, eval_n=2, eval_max_tokens=48,
                  parallel_flags=LAYOUTS["tp2"])


def test_micro_pipeline_runs_every_step_and_resumes(tmp_path):
    lines = []
    res = Pipeline(MICRO, tmp_path, log=lines.append).run()
    methods = [(r["method"], r["seed"]) for r in res["runs"]]
    assert methods == [("sft", 1), ("dpo", 1), ("redi", 1), ("redi_sym_high_lr", 1)]
    for r in res["runs"]:  # pass@1 is what the graded samples on disk say
        samples = [json.loads(x) for x in open(f"{r['eval_dir']}/samples/heldout.jsonl")]
        assert len(samples) == MICRO.heldout_problems * MICRO.eval_n == r["samples"]
        assert r["pass@1"] == pytest.approx(100 * sum(s["correct"] for s in samples) / len(samples))
    scored = [json.loads(x) for x in open(tmp_path / "built/pairs_scored.jsonl")]
    assert scored and all(isinstance(s["ref_chosen_logp"], float) for s in scored)
    dpo = [json.loads(x) for x in open(tmp_path / "metrics/dpo_seed1.jsonl")]
    assert "rewards/margins" in dpo[-1] and dpo[-1]["iteration"] == MICRO.stage2_iters
    high = next(r for r in res["runs"] if r["method"] == "redi_sym_high_lr")
    assert high["lr"] == pytest.approx(MICRO.stage2_lr * 2.0)
    assert set(res["curves"]) == {"dpo_seed1", "redi_seed1", f"redi_sym_lr{MICRO.stage2_lr * 2:g}_seed1"}
    log = (tmp_path / "logs/stage2_redi_seed1.log").read_text()
    assert "TP2 x PP1 x CP1 x DP1" in log

    again = []
    res2 = Pipeline(MICRO, tmp_path, log=again.append).run()
    assert res2["runs"] == res["runs"] and res2["elapsed"] == res["elapsed"] != "0m00s"
    steps = [x for x in again if x.startswith("[")]
    assert steps and all("done before, skipped" in x for x in steps), again


def test_a_failing_step_names_its_log(tmp_path):
    bad = replace(MICRO, seq_length=8)  # every example is longer: the SFT step exits with an error
    with pytest.raises(StepFailed, match=r"stage1_sft.*logs/stage1_sft\.log"):
        Pipeline(bad, tmp_path, log=lambda s: None).run()


def test_cli_refuses_another_runs_folder_and_unknown_methods(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"seeds": [9]}))
    tool = [sys.executable, str(ROOT / "tools/toy_reproduction.py"), "--output", str(tmp_path)]
    p = subprocess.run(tool, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "holds a run with other settings" in p.stderr
    p = subprocess.run(tool + ["--methods", "ppo"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "unknown methods ['ppo']" in p.stderr
