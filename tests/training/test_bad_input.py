"""Bad input fails fast with a message naming the flag, file or row, on every rank, never a hang."""

from __future__ import annotations

import json

import pytest

from megatron_redi.training.arguments import parse_args
from tests.helpers_dist import ROOT, SAMPLE, TINY, torchrun

pytestmark = pytest.mark.slow  # launches processes (torchrun / tools); `-m 'not slow'` skips them

BASE = ["--model-config", str(TINY), "--tokenizer-model", str(TINY), "--data-path", str(SAMPLE / "pairs.jsonl"),
        "--train-iters", "1", "--global-batch-size", "4"]


@pytest.mark.parametrize("extra,match", [
    (["--loss-type", "ppo"], "--loss-type"),
    (["--redi-alpha", "1.2"], "--redi-alpha"),
    (["--micro-batch-size", "0"], "--micro-batch-size"),
    (["--lr-warmup-fraction", "2"], "--lr-warmup-fraction"),
    (["--recompute-modules", "mlp", "--recompute-granularity", "full"], "--recompute-modules mlp"),
])
def test_flag_errors(extra, match):
    with pytest.raises(ValueError, match=match):
        parse_args(BASE + extra)


def test_recompute_modules_imply_selective():
    cfg = parse_args(BASE + ["--recompute-modules", "mlp", "core_attn"])
    assert cfg.model.recompute_granularity == "selective" and cfg.model.recompute_modules == ["mlp", "core_attn"]
    with pytest.raises(SystemExit):  # argparse names the flag and the choices
        parse_args(BASE + ["--recompute-modules", "moe"])


def test_layernorm_recompute_needs_te(megatron_world):
    from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape
    from megatron_redi.model.provider import build_model

    build = ModelBuildConfig(transformer_impl="local", recompute_granularity="selective",
                             recompute_modules=("layernorm",))
    with pytest.raises(RuntimeError, match="--recompute-modules layernorm needs Transformer Engine"):
        build_model(Qwen2Shape.from_hf(TINY), build)


def _fails(tmp_path, args, nproc, match):
    p = torchrun(ROOT / "pretrain_redi.py", args + ["--no-progress"], nproc=nproc, check=False, timeout=120)
    assert p.returncode != 0
    assert match in p.stderr, p.stderr[-3000:]
    if nproc == 2:  # every rank reports and exits, none waits in a collective
        assert "[rank 0] error" in p.stderr and "[rank 1] error" in p.stderr
    return p


def test_global_batch_not_divisible(tmp_path):
    _fails(tmp_path, BASE[:-1] + ["6", "--micro-batch-size", "4"], 2, "--global-batch-size 6")


def test_parallel_sizes_must_divide_world_and_model(tmp_path):
    _fails(tmp_path, BASE + ["--tensor-model-parallel-size", "3"], 2, "--tensor-model-parallel-size")
    cfg = json.loads((TINY / "config.json").read_text())
    cfg["num_attention_heads"], cfg["num_key_value_heads"] = 3, 1
    cfg["hidden_size"] = 48
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    args = ["--model-config", str(d)] + BASE[2:] + ["--tensor-model-parallel-size", "2"]
    _fails(tmp_path, args, 2, "does not divide num_attention_heads")


def test_missing_tokenizer_and_template(tmp_path):
    args = BASE.copy()
    args[3] = str(tmp_path / "nope")
    _fails(tmp_path, args, 1, "--tokenizer-model")
    tdir = tmp_path / "tok"
    tdir.mkdir()
    for f in TINY.iterdir():
        if f.name not in ("chat_template.jinja",):
            text = f.read_text()
            if f.name == "tokenizer_config.json":
                c = json.loads(text)
                c.pop("chat_template", None)
                text = json.dumps(c)
            (tdir / f.name).write_text(text)
    args[3] = str(tdir)
    _fails(tmp_path, args, 1, "no chat template")


def test_malformed_row_names_file_and_row_on_every_rank(tmp_path):
    bad = tmp_path / "bad.jsonl"
    lines = (SAMPLE / "pairs.jsonl").read_text().splitlines()[:5]
    row = json.loads(lines[2])
    del row["rejected"]
    lines[2] = json.dumps(row)
    bad.write_text("\n".join(lines) + "\n")
    args = BASE.copy()
    args[5] = str(bad)
    _fails(tmp_path, args, 2, f"{bad}: row 3")


@pytest.mark.parametrize("vocab", [256, 300])
def test_tokenizer_larger_than_the_model_is_refused_on_every_rank(tmp_path, vocab):
    """A 384-token tokenizer beside a model of 256 (used to be a raw IndexError) or 300 tokens (used to
    train NaN silently): the trainer and the scorer stop before any work, naming both files."""
    cfg = json.loads((TINY / "config.json").read_text())
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({**cfg, "vocab_size": vocab}))
    args = ["--model-config", str(d)] + BASE[2:]
    p = _fails(tmp_path, args, 2, f"--tokenizer-model {TINY} can emit token id 383")
    assert f"{d / 'config.json'} has vocab_size {vocab}" in p.stderr
    score = ["--model-config", str(d), "--tokenizer-model", str(TINY), "--data-path", str(SAMPLE / "pairs.jsonl"),
             "--output", str(tmp_path / "o.jsonl"), "--no-progress"]
    p = torchrun(ROOT / "tools" / "score_reference.py", score, nproc=1, check=False)
    assert p.returncode == 2 and f"--tokenizer-model {TINY} can emit token id 383" in p.stderr, p.stderr[-2000:]


def test_empty_data_file_is_named(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    args = BASE.copy()
    args[5] = str(empty)
    _fails(tmp_path, args, 2, f"--data-path {empty}: no example is left to train on (the files hold no rows)")


@pytest.mark.parametrize("make,extra,match", [
    (lambda d: (d / "f").write_text("x"), ["--load", "{d}/f"], "is a file, not a training --save folder"),
    (lambda d: (d / "hf").mkdir() or (d / "hf" / "config.json").write_text("{}"), ["--load", "{d}/hf"],
     r"holds a model \(converted or HF\), not a training checkpoint: start from it with --pretrained-checkpoint"),
    (lambda d: (d / "f").write_text("x"), ["--save", "{d}/f"], "is a file; give a folder"),
    (lambda d: None, ["--metrics-file", "{d}"], "is a folder; give a file path"),
    (lambda d: None, ["--train-iters", "0"], "--train-iters must be >= 1"),
    (lambda d: None, ["--save", "{d}/s", "--save-interval", "0"], "--save-interval must be >= 1"),
])
def test_paths_and_counts_that_cannot_be_meant(tmp_path, make, extra, match):
    """What a typo produces is refused before any work, naming the flag (the probe found each one running
    silently or ending in a traceback)."""
    make(tmp_path)
    with pytest.raises(ValueError, match=match):
        parse_args(BASE + [x.format(d=tmp_path) for x in extra])


def test_scorer_never_overwrites_a_file_unasked(tmp_path):
    from megatron_redi.training.arguments import parse_score_args

    out = tmp_path / "ref.jsonl"
    out.write_text("a user's file\n")
    base = ["--model-config", str(TINY), "--tokenizer-model", str(TINY), "--data-path", str(SAMPLE / "pairs.jsonl"),
            "--output", str(out)]
    with pytest.raises(ValueError, match="exists; choose a new file or pass --overwrite"):
        parse_score_args(base)
    assert parse_score_args([*base, "--overwrite"]).overwrite


def test_run_settings_check_names_unknown_overrides(tmp_path):
    from megatron_redi.training.checkpoint import check_run_settings

    now = {"seed": 1, "lr": 1e-3}
    with pytest.raises(ValueError, match="unknown setting.*sed; the names are: lr seed"):
        check_run_settings(tmp_path, {"seed": 1, "lr": 1e-3}, now, {"sed"}, False, print)
    with pytest.raises(ValueError, match="seed: checkpoint 2, now 1"):
        check_run_settings(tmp_path, {"seed": 2, "lr": 1e-3}, now, set(), False, print)
    check_run_settings(tmp_path, {"seed": 2, "lr": 1e-3}, now, {"seed"}, False, print)  # named: accepted
