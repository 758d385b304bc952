"""Training checkpoints: exact resume, resharded resume, crashes during save, SIGTERM, keep-last."""

from __future__ import annotations

import math
import signal
import time

import pytest

from megatron_redi.checkpointing.layout import MARKER, complete_checkpoints, latest_iteration
from tests.helpers_dist import ROOT, SAMPLE, TINY, kill_all, launch_trainer, read_jsonl, torchrun, wait_for

pytestmark = pytest.mark.slow  # launches processes (torchrun / tools); `-m 'not slow'` skips them

DRIVER = ROOT / "tests" / "training" / "layout_driver.py"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("d") / "pairs.jsonl"
    out.write_text("\n".join((SAMPLE / "pairs.jsonl").read_text().splitlines()[:32]) + "\n")
    return out


def _common(data, iters=6):
    return ["--model-config", str(TINY), "--tokenizer-model", str(TINY), "--data-path", str(data),
            "--loss-type", "redi", "--global-batch-size", "8", "--micro-batch-size", "2", "--train-iters",
            str(iters), "--lr", "1e-3", "--seq-length", "512", "--seed", "5", "--no-progress"]


def test_resume_is_exact_with_and_without_distributed_optimizer(tmp_path, data):
    """Interrupted at iteration 3 and resumed: the loss curve equals the uninterrupted one bit for bit
    (fp32, fp32 with the distributed optimizer, bf16 with fp32 master weights). Without the
    optimizer-step repair in platform.mcore_optimizer this diverges at iteration 5."""
    specs = []
    tags = (("plain", ""), ("distopt", "--use-distributed-optimizer"), ("bf16", "--bf16,--use-distributed-optimizer"))
    for tag, opt in tags:
        save = f"--save,{tmp_path / tag}"
        specs += [f"{tag}_full={opt}", f"{tag}_part={opt},{save},--exit-interval,3",
                  f"{tag}_part={opt},--load,{tmp_path / tag}"]
    torchrun(DRIVER, [str(tmp_path), *specs, "--", *_common(data)], nproc=2)
    for tag, _ in tags:
        full = read_jsonl(tmp_path / f"{tag}_full.jsonl")
        part = read_jsonl(tmp_path / f"{tag}_part.jsonl")
        assert [r["iteration"] for r in part] == [1, 2, 3, 4, 5, 6]
        assert [(r["loss"], r["grad_norm"], r["lr"]) for r in full] == \
            [(r["loss"], r["grad_norm"], r["lr"]) for r in part], tag
        assert part[3]["consumed_samples"] == 32


def test_resume_is_exact_under_cp_with_packing(tmp_path, data):
    """CP2 with first-fit-decreasing packing, interrupted at iteration 3 and resumed: bit-identical curve."""
    flags = "--context-parallel-size,2,--packing,ffd,--micro-batch-tokens,1500,--micro-batch-size,1"
    specs = [f"full={flags}", f"part={flags},--save,{tmp_path / 'ck'},--exit-interval,3",
             f"part={flags},--load,{tmp_path / 'ck'}"]
    torchrun(DRIVER, [str(tmp_path), *specs, "--", *_common(data)], nproc=2)
    full, part = read_jsonl(tmp_path / "full.jsonl"), read_jsonl(tmp_path / "part.jsonl")
    assert [r["iteration"] for r in part] == [1, 2, 3, 4, 5, 6] and part[0]["micro_batches"] < 4
    assert [(r["loss"], r["grad_norm"]) for r in full] == [(r["loss"], r["grad_norm"]) for r in part]


def test_resume_under_a_different_layout(tmp_path, data):
    """Saved with TP2, resumed with PP2 and with DP2 (distributed optimizer): same curve (rtol 1e-5)."""
    ck = tmp_path / "ck"
    specs = ["full=--tensor-model-parallel-size,2,--use-distributed-optimizer",
             f"tp2=--tensor-model-parallel-size,2,--use-distributed-optimizer,--save,{ck},--exit-interval,3",
             f"pp2=--pipeline-model-parallel-size,2,--use-distributed-optimizer,--load,{ck}",
             f"dp2=--use-distributed-optimizer,--load,{ck}"]
    torchrun(DRIVER, [str(tmp_path), *specs, "--", *_common(data)], nproc=2)
    full = read_jsonl(tmp_path / "full.jsonl")
    for name in ("pp2", "dp2"):
        got = read_jsonl(tmp_path / f"{name}.jsonl")
        assert [r["iteration"] for r in got] == [4, 5, 6]
        for a, b in zip(full[3:], got):
            assert math.isclose(a["loss"], b["loss"], rel_tol=1e-5), (name, a, b)
            assert math.isclose(a["grad_norm"], b["grad_norm"], rel_tol=1e-4), (name, a, b)


def test_incomplete_saves_are_ignored(tmp_path):
    (tmp_path / "iter_0000002").mkdir()
    (tmp_path / "iter_0000002" / "redi_meta.json").write_text("{}")
    (tmp_path / "iter_0000004").mkdir()  # killed before its metadata was written: not complete
    (tmp_path / "iter_0000006.tmp-123").mkdir()  # killed mid-write
    (tmp_path / MARKER).write_text("4")  # marker pointing at an incomplete checkpoint
    assert complete_checkpoints(tmp_path) == [2]
    assert latest_iteration(tmp_path) == 2


def test_kill_9_then_resume_reproduces_the_curve(tmp_path, data):
    ck, metrics = tmp_path / "ck", tmp_path / "m.jsonl"
    args = _common(data, iters=8) + ["--save", str(ck), "--save-interval", "1", "--metrics-file", str(metrics)]
    p = launch_trainer(args, tmp_path / "log.txt")
    assert wait_for(lambda: len(complete_checkpoints(ck)) >= 2), (tmp_path / "log.txt").read_text()[-3000:]
    kill_all(p)  # launcher and every rank, mid-step or mid-save
    it = latest_iteration(ck)
    assert it is not None and it < 8
    torchrun(ROOT / "pretrain_redi.py", _common(data, iters=8) + ["--load", str(ck), "--metrics-file",
                                                                  str(tmp_path / "resumed.jsonl")])
    ref = tmp_path / "ref.jsonl"
    torchrun(ROOT / "pretrain_redi.py", _common(data, iters=8) + ["--metrics-file", str(ref)])
    full = {r["iteration"]: r["loss"] for r in read_jsonl(ref)}
    resumed = read_jsonl(tmp_path / "resumed.jsonl")
    assert resumed[0]["iteration"] == it + 1 and resumed[-1]["iteration"] == 8
    assert all(full[r["iteration"]] == r["loss"] for r in resumed)


def test_sigterm_saves_and_exits_zero(tmp_path, data):
    ck, metrics = tmp_path / "ck", tmp_path / "m.jsonl"
    args = _common(data, iters=500) + ["--save", str(ck), "--metrics-file", str(metrics), "--keep-last", "1"]
    p = launch_trainer(args, tmp_path / "log.txt")
    assert wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 2)
    import psutil

    workers = psutil.Process(p.pid).children()
    workers[-1].send_signal(signal.SIGTERM)  # one rank is enough: the flag is all-reduced
    t0 = time.time()
    assert p.wait(timeout=60) == 0, (tmp_path / "log.txt").read_text()[-3000:]
    assert time.time() - t0 < 60
    done = complete_checkpoints(ck)
    assert len(done) == 1 and done[0] == len(read_jsonl(metrics)) < 500
    assert "stopping at iteration" in (tmp_path / "log.txt").read_text()


@pytest.mark.parametrize("keep_last,remain", [(2, [3, 4]), (None, [1, 2, 3, 4])])
def test_keep_last_prunes_the_oldest(megatron_world, tmp_path, keep_last, remain):
    """Four saves with --keep-last 2 leave the newest two (and the marker on the newest); without the
    flag every save stays."""
    from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape
    from megatron_redi.model.provider import build_model
    from megatron_redi.platform.distributed import ParallelConfig
    from megatron_redi.training import checkpoint as ck
    from megatron_redi.training.config import CheckpointArgs, OptimizerArgs
    from megatron_redi.training.optimizer import build_optimizer
    from megatron_redi.training.setup import build_ddp_model

    shape, parallel = Qwen2Shape.from_hf(TINY), ParallelConfig()
    model = build_ddp_model(lambda pre_process, post_process: build_model(shape, ModelBuildConfig()), parallel)
    opt, sched = build_optimizer(OptimizerArgs(), [model], 10)
    args = CheckpointArgs(save=str(tmp_path), keep_last=keep_last)
    for it in range(1, 5):
        ck.save_training_checkpoint(args, model, opt, sched, ck.TrainState(it, 4 * it), parallel, {})
    assert complete_checkpoints(tmp_path) == remain
    assert latest_iteration(tmp_path) == 4 and (tmp_path / MARKER).read_text() == "4"
    assert sorted(p.name for p in tmp_path.glob("iter_*")) == [f"iter_{i:07d}" for i in remain]


def test_bf16_training_checkpoint_exports_its_weights(tmp_path, data, megatron_world):
    """A bf16 training checkpoint exports to HF safetensors in bf16, and every exported tensor equals
    the trainer's weights bit for bit (loaded back with the trainer's own loader)."""
    import json

    import torch
    from safetensors.torch import load_file

    from megatron_redi.conversion.hf_mapping import Dims, hf_from_megatron
    from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape
    from megatron_redi.model.provider import build_model
    from megatron_redi.training.checkpoint import load_pretrained

    ck, hf = tmp_path / "ck", tmp_path / "hf"
    torchrun(ROOT / "pretrain_redi.py", [*_common(data, iters=2), "--bf16", "--save", str(ck)], nproc=1)
    torchrun(ROOT / "tools" / "convert_checkpoint.py", ["mcore-to-hf", "--load", str(ck), "--output", str(hf),
                                                        "--no-progress"], nproc=1)
    exported = load_file(hf / "model.safetensors")
    assert {t.dtype for t in exported.values()} == {torch.bfloat16}
    assert json.loads((hf / "config.json").read_text())["torch_dtype"] == "bfloat16"
    shape = Qwen2Shape.from_hf(TINY)
    model = build_model(shape, ModelBuildConfig(bf16=True), seed=99)  # other weights until loaded
    load_pretrained(ck, model)
    d, checked = Dims.from_shape(shape), set()
    for name, p in model.named_parameters():
        for hf_name, t in hf_from_megatron(name, p.detach(), d):
            assert torch.equal(exported[hf_name], t), hf_name
            checked.add(hf_name)
    assert checked == set(exported) - {"lm_head.weight"}


def test_a_checkpoint_of_another_shape_is_named_not_a_traceback(megatron_world, tmp_path):
    """--load / --pretrained-checkpoint of a checkpoint saved from a smaller model: one ValueError that
    says it does not fit and where its config is, instead of dist_checkpointing's exception."""
    import json

    import pytest

    from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape
    from megatron_redi.model.provider import build_model
    from megatron_redi.platform.distributed import ParallelConfig
    from megatron_redi.training import checkpoint as ck
    from megatron_redi.training.config import CheckpointArgs, ModelArgs, OptimizerArgs
    from megatron_redi.training.optimizer import build_optimizer
    from megatron_redi.training.setup import build_ddp_model

    small_cfg = {**json.loads((TINY / "config.json").read_text()), "hidden_size": 32, "num_hidden_layers": 2}
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "config.json").write_text(json.dumps(small_cfg))
    parallel = ParallelConfig()

    def built(shape):
        model = build_ddp_model(lambda pre_process, post_process: build_model(shape, ModelBuildConfig()), parallel)
        return (model, *build_optimizer(OptimizerArgs(), [model], 10))

    small = built(Qwen2Shape.from_hf(small_cfg))
    save = tmp_path / "ck"
    ck.write_hf_side_files(save, ModelArgs(model_config=str(tmp_path / "small"), tokenizer_model=str(TINY)))
    ck.save_training_checkpoint(CheckpointArgs(save=str(save)), *small, ck.TrainState(1, 4), parallel, {})
    model, opt, sched = built(Qwen2Shape.from_hf(TINY))
    with pytest.raises(ValueError, match=f"--load {save / 'iter_0000001'} does not fit this model .*"
                                         f"saved for the model in {save / 'hf_config.json'}"):
        ck.load_training_checkpoint(save, model, opt, sched, parallel)
    with pytest.raises(ValueError, match="--pretrained-checkpoint .* does not fit this model"):
        ck.load_pretrained(save, model)
