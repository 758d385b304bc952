"""Throughput of one REDI training step: megatron-redi vs the transformers + plain PyTorch baseline.

Not a test. On one GPU (bf16) at 1.5B shape:
    python tools/benchmark_train.py --seq-lengths 4096,8192,16384 --output bench.json
On CPU at a tiny size (exercised by CI):
    python tools/benchmark_train.py --tiny --seq-lengths 256 --steps 1

Each step trains on one packed (chosen, rejected) pair of the given total length with AdamW. Ours:
megatron-core GPTModel (local spec + SDPA attention, or TE when installed), megatron DDP and optimizer,
chunked vocab-parallel log-probs. Baseline: `transformers` Qwen2ForCausalLM (sdpa attention) on the two
traces as a padded batch of 2, REDI loss from full logits, torch AdamW. Both start from the same
weights, so their first-step losses (printed) agree up to the dtype's rounding.

Memory is reported as what a process holds after the warm-up steps (weights, gradients, optimizer
state) and the peak of a timed step. With --num-layers 1 and 2 the difference is one layer's share,
which is how tools/benchmark_memory.py projects full depth from a machine too small to hold it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time

import torch

SHAPE_1P5B = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                  num_attention_heads=12, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=300000.0,
                  max_position_embeddings=32768, tie_word_embeddings=True, model_type="qwen2",
                  architectures=["Qwen2ForCausalLM"])


def _pair(total: int, vocab: int):
    """A shared prompt (1/16 of the tokens) and two traces; prompt + trace twice = `total` tokens."""
    g = torch.Generator().manual_seed(0)
    prompt = max(total // 32, 1)
    half = total // 2 - prompt
    draw = lambda n: torch.randint(0, vocab, (n,), generator=g).tolist()
    return draw(prompt), draw(half), draw(half)


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _memory_mark() -> float | None:
    """Memory held now (GB), and restart peak tracking from here. CPU: resident set size, the peak
    reset through /proc/self/clear_refs (Linux); GPU: the caching allocator's allocated bytes."""
    gc.collect()
    _sync()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**30
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_kb("VmRSS") / 2**20
    except OSError:
        return None


def _memory_peak() -> float | None:
    _sync()
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    try:
        return _proc_status_kb("VmHWM") / 2**20
    except (OSError, KeyError):
        return None


def hf_config(cfg_dict: dict):
    from transformers import Qwen2Config

    return Qwen2Config(**{k: v for k, v in cfg_dict.items() if k not in ("architectures", "model_type")})


def benchmark_model_config(tiny: bool, num_layers: int | None, port: str) -> dict:
    """A one-process world (megatron's parallel state and RNG) and the HF config dict to benchmark:
    the 1.5B shape, or the tiny test model for CPU smoke runs; `num_layers` overrides the depth."""
    from megatron_redi.platform.distributed import ParallelConfig, init_distributed, init_model_parallel, set_seed

    os.environ.setdefault("MASTER_PORT", port)
    init_distributed()
    init_model_parallel(ParallelConfig())
    set_seed(1234)
    if tiny:
        from megatron_redi.data.tiny_assets import TINY_QWEN2_CONFIG

        cfg = dict(TINY_QWEN2_CONFIG, vocab_size=384)
    else:
        cfg = dict(SHAPE_1P5B)
    if num_layers:
        cfg["num_hidden_layers"] = num_layers
    return cfg


def hf_initial_state(cfg_dict: dict, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One random Qwen2 initialisation (HF's own init, on CPU) that both contenders start from, so their
    first-step losses must agree: the check that they compute the same thing."""
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    conf = hf_config(cfg_dict)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # init is slow on the host at 1.5B
        model = Qwen2ForCausalLM(conf)
    # kept on the host: on the GPU it would count in both contenders' memory
    return {k: v.to("cpu", dtype) for k, v in model.state_dict().items()}


def _timed(step, steps: int, warmup: int) -> tuple[float, float | None, float | None]:
    """Best step time over `steps` after `warmup` steps, memory held after warm-up (model, grads, optimizer
    state) and the peak during the timed steps."""
    for _ in range(warmup):
        step()
    static = _memory_mark()
    times = []
    for _ in range(steps):
        _sync()
        t0 = time.perf_counter()
        step()
        _sync()
        times.append(time.perf_counter() - t0)
    return min(times), static, _memory_peak()


def bench_ours(cfg_dict, hf_state, total, steps, warmup, bf16, recompute, chunk=1024, profile=False,
               recompute_modules=None) -> dict:
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_redi.conversion.convert import copy_hf_weights
    from megatron_redi.data.batch import Example, pack
    from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape
    from megatron_redi.model.provider import build_model
    from megatron_redi.objectives.losses import ObjectiveConfig
    from megatron_redi.objectives.objective import build_objective
    from megatron_redi.platform.distributed import ParallelConfig
    from megatron_redi.training.config import OptimizerArgs
    from megatron_redi.training.forward_step import StepInput, make_forward_step
    from megatron_redi.training.optimizer import build_optimizer
    from megatron_redi.training.setup import build_ddp_model

    shape = Qwen2Shape.from_hf(cfg_dict)
    granularity = "full" if recompute else ("selective" if recompute_modules else None)
    build = ModelBuildConfig(bf16=bf16, fast_init=True, logprob_chunk_size=chunk, recompute_granularity=granularity,
                             recompute_modules=tuple(recompute_modules or ()))
    ddp = build_ddp_model(lambda pre_process, post_process: build_model(shape, build), ParallelConfig())
    copy_hf_weights(ddp.module, hf_state, shape)
    opt, sched = build_optimizer(OptimizerArgs(lr=1e-6), [ddp], 10, bf16=bf16)
    p, c, r = _pair(total, shape.vocab_size)
    mb = pack([Example(p, [c, r])])
    objective = build_objective(ObjectiveConfig("redi"))
    fwd_bwd = get_forward_backward_func()
    forward_step = make_forward_step(objective)  # the trainer's own forward step
    losses = []

    def train_step():
        out = fwd_bwd(forward_step_func=forward_step, data_iterator=iter([StepInput(mb, 1.0)]), model=[ddp],
                      num_microbatches=1, seq_length=mb.tokens.shape[1], micro_batch_size=1, forward_only=False)
        if not losses:
            losses.append(float(out[0]["loss"]))
        opt.step()
        sched.step(1)
        ddp.zero_grad_buffer()
        opt.zero_grad()

    t, static, peak = _timed(train_step, steps, warmup)
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as tprofile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        with tprofile(activities=acts) as prof:
            train_step()
            _sync()
        key = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=25), flush=True)
    return {"step_s": t, "static_gb": static, "peak_gb": peak, "first_loss": losses[0],
            "docs": [len(p) + len(c), len(p) + len(r)]}


def bench_baseline(cfg_dict, hf_state, total, steps, warmup, bf16) -> dict:
    from transformers import Qwen2ForCausalLM

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if bf16 else torch.float32
    conf = hf_config(cfg_dict)
    with torch.device(dev):
        model = Qwen2ForCausalLM._from_config(conf, attn_implementation="sdpa", torch_dtype=dtype)
    model.load_state_dict(hf_state, strict=False)  # a tied checkpoint may omit lm_head.weight
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=1e-4)
    p, c, r = _pair(total, conf.vocab_size)
    seqs = [p + c, p + r]
    L = max(map(len, seqs))
    ids = torch.zeros(2, L, dtype=torch.long)
    att = torch.zeros(2, L, dtype=torch.long)
    mask = torch.zeros(2, L)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        att[i, : len(s)] = 1
        mask[i, len(p) : len(s)] = 1
    ids, att, mask = ids.to(dev), att.to(dev), mask.to(dev)
    losses = []

    def step():
        logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1) * mask[:, 1:]
        sums, lens = lp.sum(-1), mask[:, 1:].sum(-1)
        loss = -sums[0] / lens[0] + 0.8 * sums[1] / lens[1]
        loss.backward()
        if not losses:
            losses.append(float(loss))
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    try:
        t, static, peak = _timed(step, steps, warmup)
        res = {"step_s": t, "static_gb": static, "peak_gb": peak, "first_loss": losses[0]}
    except torch.OutOfMemoryError:
        res = {"step_s": "OOM", "peak_gb": _memory_peak(), "first_loss": losses[0] if losses else None}
    return res


def _gb(x) -> str:
    return f"{x:.1f}" if isinstance(x, float) else "-"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-lengths", default="4096,8192,16384")
    ap.add_argument("--tiny", action="store_true", help="tiny model (CPU smoke run)")
    ap.add_argument("--num-layers", type=int, default=None, help="override the depth (memory per layer)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (>= 1: creates Adam's state)")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="bf16 on CPU too (the default there is fp32)")
    ap.add_argument("--recompute", action="store_true", help="full activation recompute (ours)")
    ap.add_argument("--recompute-modules", nargs="+", choices=["core_attn", "layernorm", "mlp"], default=None,
                    help="selective recompute (ours), as the trainer's flag")
    ap.add_argument("--logprob-chunk-size", type=int, default=1024)
    ap.add_argument("--profile", action="store_true", help="print the top kernels of one step of ours")
    ap.add_argument("--output", default=None)
    a = ap.parse_args(argv)
    if a.warmup < 1 or a.steps < 1:
        ap.error("--warmup and --steps must be >= 1")

    from megatron_redi.model.config import Qwen2Shape
    from megatron_redi.training.throughput import model_flops, peak_tflops

    cfg = benchmark_model_config(a.tiny, a.num_layers, "29555")
    bf16 = torch.cuda.is_available() or a.bf16
    hf_state = hf_initial_state(cfg, torch.bfloat16 if bf16 else torch.float32)
    peak = peak_tflops()
    shape = Qwen2Shape.from_hf(cfg)
    rows = []
    for total in [int(x) for x in a.seq_lengths.split(",")]:
        ours = bench_ours(cfg, hf_state, total, a.steps, a.warmup, bf16, a.recompute, a.logprob_chunk_size,
                          a.profile, a.recompute_modules)
        t = ours["step_s"]
        flops = model_flops(shape, ours["docs"])
        row = {"tokens": total, "layers": shape.num_hidden_layers, "ours_step_s": t,
               "ours_tokens_per_s": total / t, "ours_tflops": flops / t / 1e12,
               "ours_mfu": (flops / t / 1e12 / peak) if peak else None, "ours_static_gb": ours["static_gb"],
               "ours_peak_gb": ours["peak_gb"], "ours_first_loss": ours["first_loss"]}
        if not a.no_baseline:
            base = bench_baseline(cfg, hf_state, total, a.steps, a.warmup, bf16)
            bt = base["step_s"]
            row.update(baseline_step_s=bt, baseline_static_gb=base.get("static_gb"),
                       baseline_peak_gb=base["peak_gb"], baseline_first_loss=base["first_loss"])
            if bt != "OOM":
                row.update(baseline_tokens_per_s=total / bt, baseline_tflops=flops / bt / 1e12, speedup=bt / t)
        rows.append(row)
        print(json.dumps(row), flush=True)
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"\ndevice: {dev}, dtype: {'bf16' if bf16 else 'fp32'}, layers: {shape.num_hidden_layers}, "
          f"peak dense bf16: {peak} TFLOP/s; memory: held after warm-up / peak of a step, GB "
          f"({'allocated' if torch.cuda.is_available() else 'resident set'})")
    print(f"{'tokens':>7} {'ours tok/s':>11} {'TFLOP/s':>8} {'MFU':>6} {'held':>6} {'peak':>6} {'loss':>9} | "
          f"{'base tok/s':>11} {'held':>6} {'peak':>6} {'loss':>9} {'speedup':>8}")
    for r in rows:
        mfu = f"{r['ours_mfu']:.1%}" if r.get("ours_mfu") else "-"
        bt = r.get("baseline_tokens_per_s")
        btxt = f"{bt:.0f}" if bt else str(r.get("baseline_step_s", "-"))
        bl = r.get("baseline_first_loss")
        sp = f"{r['speedup']:.2f}x" if r.get("speedup") else "-"
        print(f"{r['tokens']:>7} {r['ours_tokens_per_s']:>11.0f} {r['ours_tflops']:>8.1f} {mfu:>6} "
              f"{_gb(r['ours_static_gb']):>6} {_gb(r['ours_peak_gb']):>6} {r['ours_first_loss']:>9.5f} | "
              f"{btxt:>11} {_gb(r.get('baseline_static_gb')):>6} {_gb(r.get('baseline_peak_gb')):>6} "
              f"{(f'{bl:.5f}' if bl is not None else '-'):>9} {sp:>8}")
    if a.output:
        with open(a.output, "w") as f:
            json.dump({"device": dev, "dtype": "bf16" if bf16 else "fp32", "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
