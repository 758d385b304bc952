"""Learning-rate schedule (linear warmup, then linear or cosine decay to --min-lr) and run length."""

from __future__ import annotations

import math

import pytest

from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape
from megatron_redi.platform.distributed import ParallelConfig
from megatron_redi.training.config import DataArgs, OptimizerArgs, TrainConfig, TrainingArgs
from megatron_redi.training.loop import total_iterations
from megatron_redi.training.optimizer import build_optimizer
from megatron_redi.training.setup import build_ddp_model
from tests.helpers_dist import TINY


@pytest.mark.parametrize("style", ["linear", "cosine"])
def test_warmup_then_decay(megatron_world, style):
    from megatron_redi.model.provider import build_model

    cfg = OptimizerArgs(lr=1e-3, min_lr=1e-4, lr_warmup_fraction=0.2, lr_decay_style=style)
    shape = Qwen2Shape.from_hf(TINY)
    model = build_ddp_model(lambda pre_process, post_process: build_model(shape, ModelBuildConfig()),
                            ParallelConfig())
    opt, sched = build_optimizer(cfg, [model], 10)
    got = []
    for _ in range(10):
        got.append(opt.param_groups[0]["lr"])
        sched.step(1)
    warm, total = 2, 10
    for i, lr in enumerate(got):
        if i < warm:
            want = 1e-3 * i / warm
        else:
            frac = (i - warm) / (total - warm)
            coeff = 1 - frac if style == "linear" else 0.5 * (math.cos(math.pi * frac) + 1)
            want = 1e-4 + coeff * (1e-3 - 1e-4)
        assert math.isclose(lr, want, rel_tol=1e-6, abs_tol=1e-12), (i, lr, want)
    assert opt.param_groups[0]["weight_decay"] in (1e-4, 0.0)


def test_epochs_to_iterations():
    def cfg(global_batch_size=32, **training):
        return TrainConfig(training=TrainingArgs(**training), data=DataArgs(global_batch_size=global_batch_size))

    assert total_iterations(cfg(train_epochs=1, global_batch_size=32), 53175) == 1662
    assert total_iterations(cfg(train_epochs=3, global_batch_size=128), 77629) == math.ceil(3 * 77629 / 128)
    assert total_iterations(cfg(train_iters=7, train_epochs=5), 100) == 7
