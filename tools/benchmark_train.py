"""Throughput of one REDI training step: megatron-redi vs two transformers baselines.

Not a test. On one GPU (bf16) at 1.5B shape:
    python tools/benchmark_train.py --seq-lengths 4096,8192,16384 --output bench.json
On CPU at a tiny size (exercised by CI):
    python tools/benchmark_train.py --tiny --seq-lengths 256 --steps 1

Contenders, all from the same initial weights (first-step losses printed side by side; they agree up
to the dtype's rounding):
* ours: megatron-core GPTModel (local spec + SDPA attention, or TE when installed; `--liger-kernels`
  for Liger's RMSNorm / SwiGLU), megatron DDP and optimizer, chunked vocab-parallel log-probs, every
  micro-batch one padding-free packed row.
* base: `transformers` Qwen2ForCausalLM (sdpa attention), each pair a padded batch of 2, REDI loss from
  full logits, torch AdamW (foreach).
* liger: the paper's stack, the same plus `liger_kernel.transformers.apply_liger_kernel_to_qwen2` (rope,
  rms_norm, swiglu) and fused AdamW. Needs CUDA and liger-kernel; skipped, with the reason, elsewhere.

Workloads: (1) one pair of each `--seq-lengths` total (prompt 1/32 of it, two traces of equal length);
(2) `--mix-pairs` pairs whose traces differ in length, as one global batch: ours packs them with the
trainer's packer (first-fit-decreasing into micro-batches of `--mix-budget` tokens), the baselines take
one padded pair per micro-batch; both accumulate gradients over the batch and step once. Reported as
useful (non-pad) tokens per second. The length distribution (see `mix_pairs`): prompts uniform in
[max_prompt / 8, max_prompt], traces log-uniform in [max_trace / 19, max_trace] (1k-19k tokens at full
size: the paper keeps responses <= 19,000 tokens, most far shorter), the rejected trace the longer of
the pair two times in three (incorrect traces run longer: they loop, hedge, or stop at the cap).

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


def mix_pairs(n: int, max_trace: int, max_prompt: int, vocab: int, seed: int = 0):
    """`n` (prompt, chosen, rejected) token lists of the realistic workload (module docstring)."""
    g = torch.Generator().manual_seed(seed)
    u = lambda: float(torch.rand((), generator=g))
    lo = max(max_trace // 19, 1)
    trace = lambda: int(round(lo * (max_trace / lo) ** u()))
    draw = lambda k: torch.randint(0, vocab, (k,), generator=g).tolist()
    out = []
    for _ in range(n):
        p = int(max(max_prompt // 8, 1) + u() * (max_prompt - max(max_prompt // 8, 1)))
        a, b = sorted((trace(), trace()))
        c, r = (a, b) if u() < 2 / 3 else (b, a)  # rejected the longer one two times in three
        out.append((draw(p), draw(c), draw(r)))
    return out


def _docs(pairs) -> list[int]:
    return [len(p) + len(t) for p, c, r in pairs for t in (c, r)]


def bench_ours(cfg_dict, hf_state, pairs, steps, warmup, bf16, recompute, chunk=0, profile=False,
               recompute_modules=None, budget=None, liger_kernels=()) -> dict:
    """One optimizer step over `pairs` as one global batch, packed by the trainer's packer into
    micro-batches of at most `budget` tokens (None: all in one)."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_redi.conversion.convert import copy_hf_weights
    from megatron_redi.data.batch import Example
    from megatron_redi.data.dataset import make_packed_micro_batches
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
                             recompute_modules=tuple(recompute_modules or ()), liger_kernels=tuple(liger_kernels))
    ddp = build_ddp_model(lambda pre_process, post_process: build_model(shape, build), ParallelConfig())
    copy_hf_weights(ddp.module, hf_state, shape)
    opt, sched = build_optimizer(OptimizerArgs(lr=1e-6), [ddp], 10, bf16=bf16)
    examples = [Example(p, [c, r]) for p, c, r in pairs]
    docs = _docs(pairs)
    mbs, efficiency = make_packed_micro_batches(examples, budget or sum(docs), 1)
    objective = build_objective(ObjectiveConfig("redi"))
    fwd_bwd = get_forward_backward_func()
    forward_step = make_forward_step(objective)  # the trainer's own forward step
    losses = []

    def train_step():
        data = iter([StepInput(mb, float(len(pairs))) for mb in mbs])
        out = fwd_bwd(forward_step_func=forward_step, data_iterator=data, model=[ddp], num_microbatches=len(mbs),
                      seq_length=max(mb.tokens.shape[1] for mb in mbs), micro_batch_size=1, forward_only=False)
        if not losses:
            losses.append(sum(float(o["loss"]) for o in out))
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
    return {"step_s": t, "static_gb": static, "peak_gb": peak, "first_loss": losses[0], "docs": docs,
            "micro_batches": len(mbs), "packing_efficiency": efficiency}


class _LigerPatched:
    """apply_liger_kernel_to_qwen2 (rope, rms_norm, swiglu) rebinds names in transformers' Qwen2 module
    for the whole process; this restores them on exit, so the plain baseline stays plain."""

    def __enter__(self):
        from liger_kernel.transformers import apply_liger_kernel_to_qwen2
        from transformers.models.qwen2 import modeling_qwen2

        self.mod, self.saved = modeling_qwen2, dict(vars(modeling_qwen2))
        self.forward = modeling_qwen2.Qwen2ForCausalLM.forward
        apply_liger_kernel_to_qwen2(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                    fused_linear_cross_entropy=False)
        return self

    def __exit__(self, *exc):
        for k in set(vars(self.mod)) - set(self.saved):
            delattr(self.mod, k)
        for k, v in self.saved.items():
            setattr(self.mod, k, v)
        self.mod.Qwen2ForCausalLM.forward = self.forward
        return False


def bench_baseline(cfg_dict, hf_state, pairs, steps, warmup, bf16, liger=False) -> dict:
    """transformers Qwen2ForCausalLM, one padded batch of 2 per pair, gradients accumulated over
    `pairs`, one AdamW step. `liger`: the paper's stack (Liger kernels + fused AdamW)."""
    import contextlib

    from transformers import Qwen2ForCausalLM

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if bf16 else torch.float32
    conf = hf_config(cfg_dict)
    with (_LigerPatched() if liger else contextlib.nullcontext()):
        return _run_baseline(Qwen2ForCausalLM, conf, dev, dtype, hf_state, pairs, steps, warmup, liger)


def _run_baseline(model_cls, conf, dev, dtype, hf_state, pairs, steps, warmup, fused_adam) -> dict:
    with torch.device(dev):
        model = model_cls._from_config(conf, attn_implementation="sdpa", torch_dtype=dtype)
    model.load_state_dict(hf_state, strict=False)  # a tied checkpoint may omit lm_head.weight
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=1e-4,
                            **({"fused": True} if fused_adam else {}))
    batches, padded = [], 0
    for p, c, r in pairs:
        seqs = [p + c, p + r]
        L = max(map(len, seqs))
        padded += 2 * L
        ids = torch.zeros(2, L, dtype=torch.long)
        att = torch.zeros(2, L, dtype=torch.long)
        mask = torch.zeros(2, L)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            att[i, : len(s)] = 1
            mask[i, len(p) : len(s)] = 1
        batches.append((ids.to(dev), att.to(dev), mask.to(dev)))
    losses = []

    def step():
        total = 0.0
        for ids, att, mask in batches:
            logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
            lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1) * mask[:, 1:]
            sums, lens = lp.sum(-1), mask[:, 1:].sum(-1)
            loss = (-sums[0] / lens[0] + 0.8 * sums[1] / lens[1]) / len(batches)
            loss.backward()
            total += float(loss.detach())
            del logits, lp, loss
        if not losses:
            losses.append(total)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    pad_fraction = 1 - sum(_docs(pairs)) / padded
    try:
        t, static, peak = _timed(step, steps, warmup)
        res = {"step_s": t, "static_gb": static, "peak_gb": peak, "first_loss": losses[0]}
    except torch.OutOfMemoryError:
        res = {"step_s": "OOM", "peak_gb": _memory_peak(), "first_loss": losses[0] if losses else None}
    res["pad_fraction"] = pad_fraction
    return res


def _gb(x) -> str:
    return f"{x:.1f}" if isinstance(x, float) else "-"


def _contenders(a) -> list[str]:
    """The baselines to run, and why the Liger one is skipped where it cannot run."""
    from megatron_redi.model.liger import liger_unavailable_reason

    names = [] if a.no_baseline else ["baseline"]
    if not a.no_baseline and not a.no_liger_baseline:
        reason = liger_unavailable_reason()
        if reason:
            print(f"liger baseline (transformers + Liger kernels + fused AdamW): skipped: {reason}", flush=True)
            a.liger_skipped = reason
        else:
            names.append("liger")
    return names


def _compare(row: dict, prefix: str, base: dict, useful_tokens: int, flops: float) -> None:
    bt = base["step_s"]
    row.update({f"{prefix}_step_s": bt, f"{prefix}_static_gb": base.get("static_gb"),
                f"{prefix}_peak_gb": base["peak_gb"], f"{prefix}_first_loss": base["first_loss"],
                f"{prefix}_pad_fraction": base["pad_fraction"]})
    if bt != "OOM":
        row.update({f"{prefix}_tokens_per_s": useful_tokens / bt, f"{prefix}_tflops": flops / bt / 1e12,
                    ("speedup" if prefix == "baseline" else f"speedup_vs_{prefix}"): bt / row["ours_step_s"]})


def _measure(a, cfg, hf_state, pairs, bf16, peak, shape, budget, names) -> dict:
    from megatron_redi.training.throughput import model_flops

    ours = bench_ours(cfg, hf_state, pairs, a.steps, a.warmup, bf16, a.recompute, a.logprob_chunk_size,
                      a.profile, a.recompute_modules, budget, a.liger_kernels or ())
    t = ours["step_s"]
    useful = sum(ours["docs"])
    flops = model_flops(shape, ours["docs"])
    row = {"tokens": useful, "pairs": len(pairs), "layers": shape.num_hidden_layers, "ours_step_s": t,
           "ours_tokens_per_s": useful / t, "ours_tflops": flops / t / 1e12,
           "ours_mfu": (flops / t / 1e12 / peak) if peak else None, "ours_static_gb": ours["static_gb"],
           "ours_peak_gb": ours["peak_gb"], "ours_first_loss": ours["first_loss"],
           "ours_micro_batches": ours["micro_batches"], "ours_packing_efficiency": ours["packing_efficiency"]}
    for name in names:
        _compare(row, name, bench_baseline(cfg, hf_state, pairs, a.steps, a.warmup, bf16, liger=name == "liger"),
                 useful, flops)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print(json.dumps(row), flush=True)
    return row


def _table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"{'tokens':>7} {'pairs':>5} {'ours tok/s':>11} {'TFLOP/s':>8} {'MFU':>6} {'held':>6} {'peak':>6} "
          f"{'loss':>9} | {'base tok/s':>11} {'peak':>6} {'loss':>9} {'ratio':>6} | {'liger tok/s':>11} "
          f"{'peak':>6} {'loss':>9} {'ratio':>6}")
    for r in rows:
        mfu = f"{r['ours_mfu']:.1%}" if r.get("ours_mfu") else "-"
        cells = []
        for prefix, ratio in (("baseline", "speedup"), ("liger", "speedup_vs_liger")):
            bt = r.get(f"{prefix}_tokens_per_s")
            bl = r.get(f"{prefix}_first_loss")
            cells.append(f"{(f'{bt:.0f}' if bt else str(r.get(f'{prefix}_step_s', '-'))):>11} "
                         f"{_gb(r.get(f'{prefix}_peak_gb')):>6} {(f'{bl:.5f}' if bl is not None else '-'):>9} "
                         f"{(f'{r[ratio]:.2f}x' if r.get(ratio) else '-'):>6}")
        print(f"{r['tokens']:>7} {r['pairs']:>5} {r['ours_tokens_per_s']:>11.0f} {r['ours_tflops']:>8.1f} {mfu:>6} "
              f"{_gb(r['ours_static_gb']):>6} {_gb(r['ours_peak_gb']):>6} {r['ours_first_loss']:>9.5f} | "
              + " | ".join(cells))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-lengths", default="4096,8192,16384", help="one pair of each total length ('' : none)")
    ap.add_argument("--tiny", action="store_true", help="tiny model (CPU smoke run)")
    ap.add_argument("--num-layers", type=int, default=None, help="override the depth (memory per layer)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (>= 1: creates Adam's state)")
    ap.add_argument("--no-baseline", action="store_true", help="ours only")
    ap.add_argument("--no-liger-baseline", action="store_true", help="skip the transformers + Liger baseline")
    ap.add_argument("--bf16", action="store_true", help="bf16 on CPU too (the default there is fp32)")
    ap.add_argument("--recompute", action="store_true", help="full activation recompute (ours)")
    ap.add_argument("--recompute-modules", nargs="+", choices=["core_attn", "layernorm", "mlp"], default=None,
                    help="selective recompute (ours), as the trainer's flag")
    ap.add_argument("--logprob-chunk-size", type=int, default=0, help="as the trainer's flag (0: automatic)")
    ap.add_argument("--liger-kernels", nargs="+", choices=["rms_norm", "swiglu"], default=None,
                    help="ours with Liger's RMSNorm / SwiGLU, as the trainer's flag (CUDA + liger-kernel)")
    ap.add_argument("--mix-pairs", type=int, default=None,
                    help="pairs of the realistic workload (0: skip; default 16, 6 with --tiny)")
    ap.add_argument("--mix-max-trace", type=int, default=None, help="longest trace (19000; 96 with --tiny)")
    ap.add_argument("--mix-max-prompt", type=int, default=None, help="longest prompt (800; 16 with --tiny)")
    ap.add_argument("--mix-budget", type=int, default=None,
                    help="ours: tokens per packed micro-batch (40960; 384 with --tiny), as --micro-batch-tokens")
    ap.add_argument("--profile", action="store_true", help="print the top kernels of one step of ours")
    ap.add_argument("--output", default=None)
    a = ap.parse_args(argv)
    if a.warmup < 1 or a.steps < 1:
        ap.error("--warmup and --steps must be >= 1")
    full = dict(pairs=16, trace=19000, prompt=800, budget=40960)
    tiny = dict(pairs=6, trace=96, prompt=16, budget=384)
    d = tiny if a.tiny else full
    mix_n = d["pairs"] if a.mix_pairs is None else a.mix_pairs
    mix_trace, mix_prompt = a.mix_max_trace or d["trace"], a.mix_max_prompt or d["prompt"]
    mix_budget = a.mix_budget or d["budget"]

    from megatron_redi.model.config import Qwen2Shape
    from megatron_redi.training.throughput import peak_tflops

    cfg = benchmark_model_config(a.tiny, a.num_layers, "29555")
    bf16 = torch.cuda.is_available() or a.bf16
    a.liger_skipped = None
    names = _contenders(a)
    hf_state = hf_initial_state(cfg, torch.bfloat16 if bf16 else torch.float32)
    peak = peak_tflops()
    shape = Qwen2Shape.from_hf(cfg)
    rows = []
    for total in [int(x) for x in a.seq_lengths.split(",") if x.strip()]:
        rows.append(_measure(a, cfg, hf_state, [_pair(total, shape.vocab_size)], bf16, peak, shape, None, names))
    mix = None
    if mix_n:
        pairs = mix_pairs(mix_n, mix_trace, mix_prompt, shape.vocab_size)
        mix = _measure(a, cfg, hf_state, pairs, bf16, peak, shape, mix_budget, names)
        mix.update(distribution={"max_trace": mix_trace, "min_trace": max(mix_trace // 19, 1),
                                 "max_prompt": mix_prompt, "trace": "log-uniform", "rejected_longer": "2/3",
                                 "budget": mix_budget, "pair_tokens": [len(p) * 2 + len(c) + len(r)
                                                                       for p, c, r in pairs]})
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"\ndevice: {dev}, dtype: {'bf16' if bf16 else 'fp32'}, layers: {shape.num_hidden_layers}, "
          f"peak dense bf16: {peak} TFLOP/s; ours: liger kernels {a.liger_kernels or 'none'}, log-prob chunk "
          f"{a.logprob_chunk_size or 'auto'}; memory: held after warm-up / peak of a step, GB "
          f"({'allocated' if torch.cuda.is_available() else 'resident set'}); tok/s: useful (non-pad) tokens; "
          f"ratio: ours / that baseline" + (f"; liger baseline skipped: {a.liger_skipped}" if a.liger_skipped else ""))
    if rows:
        _table("one pair per step (prompt 1/32, equal traces):", rows)
    if mix:
        _table(f"realistic mix: {mix['pairs']} pairs, traces log-uniform {mix['distribution']['min_trace']}-"
               f"{mix_trace}, rejected longer 2/3; ours packed into {mix['ours_micro_batches']} micro-batches of "
               f"<= {mix_budget} tokens (efficiency {mix['ours_packing_efficiency']:.0%}), baselines one padded "
               f"pair each ({mix.get('baseline_pad_fraction', mix.get('liger_pad_fraction', 0)) or 0:.0%} pad):",
               [mix])
    if a.output:
        with open(a.output, "w") as f:
            json.dump({"device": dev, "dtype": "bf16" if bf16 else "fp32", "liger_kernels": a.liger_kernels,
                       "liger_baseline_skipped": a.liger_skipped, "rows": rows, "mix": mix}, f, indent=1)


if __name__ == "__main__":
    main()
