"""--reuse-sft: another Stage 2 setting starts from a finished run's Stage 1, and nothing of its Stage 2."""

import json
from dataclasses import asdict, replace

import pytest

from megatron_redi.toy.config import ToyConfig
from megatron_redi.toy.pipeline import Pipeline


def _finished_run(path, cfg):
    path.mkdir()
    (path / "config.json").write_text(json.dumps(asdict(cfg)))
    for d in ("data", "model", "built", "checkpoints/sft", "hf/sft", "eval/sft_seed1", "eval/sft_more_seed1",
              "eval/redi_seed1", "checkpoints/redi_seed1"):
        (path / d).mkdir(parents=True)
        (path / d / "x").write_text(d)
    (path / "checkpoints/sft/latest_checkpointed_iteration.txt").write_text("10")
    (path / "metrics").mkdir()
    (path / "metrics/sft.jsonl").write_text("{}\n")
    (path / "metrics/redi_seed1.jsonl").write_text("{}\n")


def test_reuse_copies_stage1_only(tmp_path):
    cfg = ToyConfig()
    _finished_run(tmp_path / "a", cfg)
    Pipeline(replace(cfg, stage2_lr=1e-5), tmp_path / "b", log=lambda s: None).reuse_stage1(tmp_path / "a")
    b = tmp_path / "b"
    for d in ("data", "model", "built", "checkpoints/sft", "hf/sft", "eval/sft_seed1"):
        assert (b / d / "x").read_text() == d
    assert (b / "metrics/sft.jsonl").exists()
    for stage2 in ("eval/sft_more_seed1", "eval/redi_seed1", "checkpoints/redi_seed1", "metrics/redi_seed1.jsonl"):
        assert not (b / stage2).exists(), stage2


def test_reuse_refuses_other_stage1_settings_or_no_checkpoint(tmp_path):
    cfg = ToyConfig()
    _finished_run(tmp_path / "a", cfg)
    with pytest.raises(ValueError, match="settings differ.*sft_lr"):
        Pipeline(replace(cfg, sft_lr=2e-3), tmp_path / "b", log=lambda s: None).reuse_stage1(tmp_path / "a")
    (tmp_path / "a/checkpoints/sft/latest_checkpointed_iteration.txt").unlink()
    with pytest.raises(ValueError, match="no finished toy run"):
        Pipeline(cfg, tmp_path / "c", log=lambda s: None).reuse_stage1(tmp_path / "a")
