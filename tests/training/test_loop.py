"""The loop's bookkeeping against hand computations: metric means over --log-interval, the constant LR
schedule, --train-epochs end to end, and the FLOPs behind TFLOP/s and MFU. One launch for all runs."""

from __future__ import annotations

import math

import pytest

from tests.helpers_dist import ROOT, SAMPLE, TINY, read_jsonl, torchrun

pytestmark = pytest.mark.slow  # launches processes (torchrun / tools); `-m 'not slow'` skips them

DRIVER = ROOT / "tests" / "training" / "layout_driver.py"
LR = 1e-3


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("loop")
    data = d / "pairs.jsonl"
    data.write_text("\n".join((SAMPLE / "pairs.jsonl").read_text().splitlines()[:12]) + "\n")
    common = ["--model-config", str(TINY), "--tokenizer-model", str(TINY), "--data-path", str(data),
              "--global-batch-size", "4", "--micro-batch-size", "2", "--lr", str(LR), "--seq-length", "512",
              "--seed", "3", "--no-progress"]
    specs = {"every": ["--train-iters", "4"], "log2": ["--train-iters", "4", "--log-interval", "2"],
             "const": ["--train-iters", "4", "--lr-decay-style", "constant", "--lr-warmup-fraction", "0.5"],
             "epochs": ["--train-epochs", "2"]}
    torchrun(DRIVER, [str(d), *[f"{n}={','.join(f)}" for n, f in specs.items()], "--", *common], nproc=1)
    return {n: read_jsonl(d / f"{n}.jsonl") for n in specs}


def test_log_interval_reports_means_of_the_window(runs):
    every, log2 = runs["every"], runs["log2"]
    assert [r["iteration"] for r in log2] == [2, 4]
    for rec, (a, b) in zip(log2, [(every[0], every[1]), (every[2], every[3])]):
        for k in ("loss", "chosen_logp", "rejected_logp", "margin", "pair_accuracy"):
            assert math.isclose(rec[k], (a[k] + b[k]) / 2, rel_tol=1e-6, abs_tol=1e-9), k
        # lr and grad norm are the last iteration's, as Megatron logs them
        assert rec["grad_norm"] == b["grad_norm"] and rec["lr"] == b["lr"]


def test_first_record_carries_the_data_counts(runs):
    """What the data policy did (examples kept, skipped as too long or identical) is in the metrics file."""
    first, second = runs["every"][0], runs["every"][1]
    assert first["data/examples"] == 12 and first["data/skipped_too_long"] == 0
    assert first["data/skipped_identical_pairs"] == 0 and not any(k.startswith("data/") for k in second)


def test_constant_schedule_after_warmup(runs):
    # 4 iterations, warmup 0.5 -> 2 warmup steps: lr = LR * step / 2, then LR flat
    assert [r["lr"] for r in runs["const"]] == pytest.approx([0.0, LR / 2, LR, LR], rel=1e-9, abs=1e-15)


def test_train_epochs_end_to_end(runs):
    """12 pairs, 4 per global batch, 2 epochs: 6 iterations, every pair twice."""
    recs = runs["epochs"]
    assert [r["iteration"] for r in recs] == [1, 2, 3, 4, 5, 6]
    assert recs[-1]["consumed_samples"] == 24 and recs[-1]["epoch"] == 2.0 and recs[2]["epoch"] == 1.0


def test_model_flops_against_a_hand_count(megatron_world):
    """6 FLOPs per parameter of every matmul per token (forward + backward), counted from the built
    model's own weight matrices, plus causal attention's 6 * L * h * n^2, for each document."""
    from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape
    from megatron_redi.model.provider import build_model
    from megatron_redi.training.throughput import model_flops

    shape = Qwen2Shape.from_hf(TINY)
    model = build_model(shape, ModelBuildConfig())
    matmul = sum(p.numel() for n, p in model.named_parameters() if p.ndim == 2 and "decoder.layers" in n)
    head = shape.vocab_size * shape.hidden_size  # the LM head over the true vocabulary (tied here)
    docs = [37, 5, 120]
    attn = sum(6 * shape.num_hidden_layers * shape.hidden_size * n * n for n in docs)
    want = sum(6 * n * (matmul + head) for n in docs) + attn
    assert model_flops(shape, docs) == pytest.approx(want, rel=1e-12)
