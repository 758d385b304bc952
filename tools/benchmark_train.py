"""Throughput of one REDI training step: megatron-redi vs the transformers + plain PyTorch baseline.

Not a test. On one GPU (bf16) at 1.5B shape:
    python tools/benchmark_train.py --seq-lengths 4096,8192,16384 --output bench.json
On CPU at a tiny size (exercised by CI):
    python tools/benchmark_train.py --tiny --seq-lengths 256 --steps 1

Each step trains on one packed (chosen, rejected) pair of the given total length with AdamW. Ours:
megatron-core GPTModel (local spec + SDPA attention, or TE when installed), megatron DDP and optimizer,
chunked vocab-parallel log-probs. Baseline: `transformers` Qwen2ForCausalLM (sdpa attention) on the two
traces as a padded batch of 2, REDI loss from full logits, torch AdamW.
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


def _reset_mem():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb():
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def bench_ours(cfg_dict, total, steps, warmup, bf16, recompute, chunk=1024, profile=False):
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_redi.data.batch import Example, pack
    from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape
    from megatron_redi.model.provider import build_model
    from megatron_redi.objectives.compute import linear_token_weights, micro_batch_loss
    from megatron_redi.objectives.losses import ObjectiveConfig
    from megatron_redi.platform.distributed import device
    from megatron_redi.training.arguments import TrainConfig
    from megatron_redi.training.loop import build_ddp_model
    from megatron_redi.training.optimizer import build_optimizer

    shape = Qwen2Shape.from_hf(cfg_dict)
    build = ModelBuildConfig(bf16=bf16, fast_init=torch.cuda.is_available(),
                             recompute_granularity="full" if recompute else None, logprob_chunk_size=chunk)
    tcfg = TrainConfig(lr=1e-6, bf16=bf16, train_iters=10)
    ddp = build_ddp_model(tcfg, lambda pre_process, post_process: build_model(shape, build))
    model = ddp.module
    opt, sched = build_optimizer(tcfg, [ddp], 10)
    p, c, r = _pair(total, shape.vocab_size)
    mb = pack([Example(p, [c, r])]).to(device())
    obj = ObjectiveConfig("redi")
    fwd_bwd = get_forward_backward_func()

    def fstep(it, m):
        next(it)
        m.module.pending_token_weights = linear_token_weights(mb, obj, 1.0)
        out = m(mb.tokens, mb.position_ids, mb.segment_ids, labels=mb.labels)

        def lf(o):
            loss, met = micro_batch_loss(o, mb, obj, 1.0)
            return loss, torch.tensor(1), met
        return out, lf

    times = []
    _reset_mem()
    for i in range(warmup + steps):
        _sync()
        t0 = time.perf_counter()
        fwd_bwd(forward_step_func=fstep, data_iterator=iter([0]), model=[ddp], num_microbatches=1,
                seq_length=mb.tokens.shape[1], micro_batch_size=1, forward_only=False)
        opt.step()
        sched.step(1)
        ddp.zero_grad_buffer()
        opt.zero_grad()
        _sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak = _peak_gb()
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as tprofile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        with tprofile(activities=acts) as prof:
            fwd_bwd(forward_step_func=fstep, data_iterator=iter([0]), model=[ddp], num_microbatches=1,
                    seq_length=mb.tokens.shape[1], micro_batch_size=1, forward_only=False)
            opt.step()
            _sync()
        key = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=25), flush=True)
    del ddp, model, opt, sched
    _reset_mem()
    return min(times), peak, [len(p) + len(c), len(p) + len(r)]


def bench_baseline(cfg_dict, total, steps, warmup, bf16):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if bf16 else torch.float32
    conf = Qwen2Config(**{k: v for k, v in cfg_dict.items() if k not in ("architectures", "model_type")})
    with torch.device(dev):
        model = Qwen2ForCausalLM._from_config(conf, attn_implementation="sdpa", torch_dtype=dtype)
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

    def step(model, opt):
        logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1) * mask[:, 1:]
        sums, lens = lp.sum(-1), mask[:, 1:].sum(-1)
        loss = -sums[0] / lens[0] + 0.8 * sums[1] / lens[1]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = []
    _reset_mem()
    try:
        for i in range(warmup + steps):
            _sync()
            t0 = time.perf_counter()
            step(model, opt)
            _sync()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        res = (min(times), _peak_gb())
    except torch.OutOfMemoryError:
        res = ("OOM", _peak_gb())
    del model, opt
    _reset_mem()
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-lengths", default="4096,8192,16384")
    ap.add_argument("--tiny", action="store_true", help="tiny model (CPU smoke run)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--recompute", action="store_true")
    ap.add_argument("--logprob-chunk-size", type=int, default=1024)
    ap.add_argument("--profile", action="store_true", help="print the top kernels of one step of ours")
    ap.add_argument("--output", default=None)
    a = ap.parse_args(argv)

    from megatron_redi.model.config import Qwen2Shape
    from megatron_redi.platform.distributed import ParallelConfig, init_distributed, init_model_parallel, set_seed
    from megatron_redi.training.metrics import model_flops, peak_tflops

    os.environ.setdefault("MASTER_PORT", "29555")
    init_distributed()
    init_model_parallel(ParallelConfig())
    set_seed(1234)
    if a.tiny:
        from megatron_redi.data.tiny_assets import TINY_QWEN2_CONFIG

        cfg = dict(TINY_QWEN2_CONFIG, vocab_size=384)
    else:
        cfg = dict(SHAPE_1P5B)
    bf16 = torch.cuda.is_available()
    peak = peak_tflops()
    shape = Qwen2Shape.from_hf(cfg)
    rows = []
    for total in [int(x) for x in a.seq_lengths.split(",")]:
        t, mem, docs = bench_ours(cfg, total, a.steps, a.warmup, bf16, a.recompute, a.logprob_chunk_size,
                                  a.profile)
        flops = model_flops(shape, docs)
        row = {"tokens": total, "ours_step_s": t, "ours_tokens_per_s": total / t,
               "ours_tflops": flops / t / 1e12, "ours_mfu": (flops / t / 1e12 / peak) if peak else None,
               "ours_peak_gb": mem}
        if not a.no_baseline:
            bt, bmem = bench_baseline(cfg, total, a.steps, a.warmup, bf16)
            row.update(baseline_step_s=bt, baseline_peak_gb=bmem)
            if bt != "OOM":
                row.update(baseline_tokens_per_s=total / bt, baseline_tflops=flops / bt / 1e12,
                           speedup=bt / t)
        rows.append(row)
        print(json.dumps(row), flush=True)
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"\ndevice: {dev}, dtype: {'bf16' if bf16 else 'fp32'}, peak dense bf16: {peak} TFLOP/s")
    hdr = (f"{'tokens':>7} {'ours tok/s':>11} {'TFLOP/s':>8} {'MFU':>6} {'mem GB':>7} | "
           f"{'base tok/s':>11} {'mem GB':>7} {'speedup':>8}")
    print(hdr)
    for r in rows:
        mfu = f"{r['ours_mfu']:.1%}" if r.get("ours_mfu") else "-"
        mem = f"{r['ours_peak_gb']:.1f}" if r.get("ours_peak_gb") else "-"
        bt = r.get("baseline_tokens_per_s")
        btxt = f"{bt:.0f}" if bt else str(r.get("baseline_step_s", "-"))
        bm = f"{r['baseline_peak_gb']:.1f}" if r.get("baseline_peak_gb") else "-"
        sp = f"{r['speedup']:.2f}x" if r.get("speedup") else "-"
        print(f"{r['tokens']:>7} {r['ours_tokens_per_s']:>11.0f} {r['ours_tflops']:>8.1f} {mfu:>6} {mem:>7} | "
              f"{btxt:>11} {bm:>7} {sp:>8}")
    if a.output:
        with open(a.output, "w") as f:
            json.dump({"device": dev, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
