"""Save and load time of a full training checkpoint (model, distributed-optimizer state, scheduler,
RNG) for a Qwen2 shape. Not a test.

    python tools/benchmark_checkpoint.py --layers 28          # the 1.5B shape (needs ~30 GB RAM in fp32)
    python tools/benchmark_checkpoint.py --layers 8           # what fits a 24 GB CPU box

One process; the checkpoint goes through the same atomic save/load code as `--save` / `--load`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    a = ap.parse_args(argv)

    import torch

    from megatron_redi.model.config import Qwen2Shape
    from megatron_redi.platform.distributed import ParallelConfig, init_distributed, init_model_parallel, set_seed
    from megatron_redi.platform.mcore_optimizer import prime_adam_state
    from megatron_redi.training import checkpoint as ck
    from megatron_redi.training.config import CheckpointArgs, OptimizerArgs
    from megatron_redi.training.optimizer import build_optimizer
    from megatron_redi.training.setup import build_ddp_model
    from tools.benchmark_train import SHAPE_1P5B

    os.environ.setdefault("MASTER_PORT", "29571")
    init_distributed()
    init_model_parallel(ParallelConfig())
    set_seed(0)
    cfg_dict = dict(SHAPE_1P5B, num_hidden_layers=a.layers)
    shape = Qwen2Shape.from_hf(cfg_dict)
    from megatron_redi.model.config import ModelBuildConfig
    from megatron_redi.model.provider import build_model

    bf16 = torch.cuda.is_available()
    parallel = ParallelConfig(use_distributed_optimizer=True)
    model = build_ddp_model(lambda pre_process, post_process: build_model(
        shape, ModelBuildConfig(bf16=bf16, fast_init=True), pre_process=pre_process, post_process=post_process),
        parallel)
    opt, sched = build_optimizer(OptimizerArgs(), [model], 10, bf16=bf16, use_distributed_optimizer=True)
    prime_adam_state(opt)  # full Adam state, as after a first step
    n_params = sum(p.numel() for p in model.parameters())
    root = Path(a.dir or tempfile.mkdtemp(prefix="redi_ckpt_bench_"))
    t0 = time.perf_counter()
    path = ck.save_training_checkpoint(CheckpointArgs(save=str(root)), model, opt, sched, ck.TrainState(1, 32),
                                       parallel, {})
    t_save = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    t0 = time.perf_counter()
    ck.load_training_checkpoint(root, model, opt, sched, parallel)
    t_load = time.perf_counter() - t0
    r = {"layers": a.layers, "params": n_params, "checkpoint_gb": size / 2**30, "save_s": t_save,
         "load_s": t_load, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
         "dtype": "bf16 params + fp32 main/Adam" if bf16 else "fp32"}
    print(json.dumps(r))
    if not a.dir:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
