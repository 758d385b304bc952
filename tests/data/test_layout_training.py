"""End to end: the trainer's first-step loss is the same whatever layout the same pairs come in."""

from __future__ import annotations

import json

from tests.helpers_dist import ROOT, SAMPLE, TINY, read_jsonl, torchrun

DRIVER = ROOT / "tests" / "training" / "layout_driver.py"


def test_first_step_loss_is_the_same_for_two_pair_layouts(tmp_path):
    rows = read_jsonl(SAMPLE / "pairs.jsonl")[:8]
    with open(tmp_path / "explicit.jsonl", "w") as a, open(tmp_path / "repeated.jsonl", "w") as b:
        for r in rows:
            a.write(json.dumps(r) + "\n")  # prompt + assistant-only completions
            # the public-preference-set layout: a string prompt AND whole conversations that repeat it
            b.write(json.dumps({"prompt": r["prompt"][0]["content"], "chosen": r["prompt"] + r["chosen"],
                                "rejected": r["prompt"] + r["rejected"], "score": 1}) + "\n")
    common = ["--model-config", str(TINY), "--tokenizer-model", str(TINY), "--loss-type", "redi",
              "--global-batch-size", "8", "--micro-batch-size", "4", "--train-iters", "1", "--lr", "1e-3",
              "--seq-length", "512", "--seed", "3", "--no-progress"]
    (tmp_path / "m").mkdir()
    torchrun(DRIVER, [str(tmp_path / "m"), f"explicit=--data-path,{tmp_path / 'explicit.jsonl'}",
                      f"repeated=--data-path,{tmp_path / 'repeated.jsonl'}", "--", *common], nproc=1)
    a, b = (read_jsonl(tmp_path / "m" / f"{n}.jsonl")[0] for n in ("explicit", "repeated"))
    assert a["loss"] == b["loss"] and a["grad_norm"] == b["grad_norm"]
    assert a["loss"] > 0
