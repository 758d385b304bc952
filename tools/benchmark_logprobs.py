"""Peak memory and time of per-token log-probs + REDI loss (forward and backward): chunked kernel vs
naive full logits. Not a test.

    python tools/benchmark_logprobs.py --seq 8192 --hidden 1536 --vocab 151936            # CPU, fp32
    python tools/benchmark_logprobs.py --device cuda                                         # GPU, bf16

Each variant runs in its own subprocess so its peak memory is its own: on CPU the growth of the
process's peak RSS over what it held after creating the inputs, on GPU the growth of
torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _peak_bytes(dev) -> int:
    import torch

    if dev == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_variant(variant: str, seq: int, hidden: int, vocab: int, dev: str, chunk: int, repeats: int) -> dict:
    import torch

    from megatron_redi.data.batch import Example, pack
    from megatron_redi.objectives.logprobs import vocab_parallel_logprobs
    from megatron_redi.objectives.losses import ObjectiveConfig
    from megatron_redi.objectives.objective import build_objective
    from megatron_redi.platform.distributed import ParallelConfig, init_distributed, init_model_parallel

    os.environ.setdefault("MASTER_PORT", "29561")
    init_distributed()
    init_model_parallel(ParallelConfig())
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    g = torch.Generator().manual_seed(0)
    prompt = 256
    half = seq // 2 - prompt
    ids = torch.randint(0, vocab, (seq,), generator=g).tolist()
    mb = pack([Example(ids[:prompt], [ids[prompt : prompt + half], ids[prompt + half : prompt + 2 * half]])])
    mb = mb.to(dev)
    s = mb.tokens.shape[1]
    # built in place: a transient copy here would raise the baseline peak and hide real growth later
    hid = torch.randn(s, 1, hidden, generator=g).mul_(0.5).to(dev, dtype).requires_grad_(True)
    w = torch.randn(vocab, hidden, generator=g).mul_(0.02).to(dev, dtype).requires_grad_(True)
    obj = build_objective(ObjectiveConfig("redi"))
    if dev == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = _peak_bytes(dev) if dev == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times, loss_val = [], None
    for _ in range(repeats):
        hid.grad = w.grad = None
        t0 = time.perf_counter()
        if variant == "chunked":
            tw = obj.token_weights(mb, 1.0)
            lp = vocab_parallel_logprobs(hid, w, mb.labels.t(), true_vocab_size=vocab, chunk_size=chunk,
                                         token_weights=tw.t())
            loss, _ = obj.loss(lp.t(), mb, 1.0)
        else:
            logits = (hid[:, 0] @ w.t()).float()
            lp = torch.log_softmax(logits, -1).gather(-1, mb.labels[0, :, None]).squeeze(-1)[None]
            loss, _ = obj.loss(lp, mb, 1.0)
        loss.backward()
        if dev == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        loss_val = float(loss)
        del loss, lp
    peak = _peak_bytes(dev)
    return {"variant": variant, "time_s": min(times), "extra_peak_gb": (peak - base) / 2**30, "loss": loss_val,
            "grad_w_norm": float(w.grad.float().norm())}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq", type=int, default=8192)
    ap.add_argument("--hidden", type=int, default=1536)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--variant", choices=["chunked", "naive"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--output", default=None)
    a = ap.parse_args(argv)
    if a.variant:
        print(json.dumps(run_variant(a.variant, a.seq, a.hidden, a.vocab, a.device, a.chunk, a.repeats)))
        return
    results = {}
    for v in ("chunked", "naive"):
        cmd = [sys.executable, __file__, "--variant", v, "--seq", str(a.seq), "--hidden", str(a.hidden),
               "--vocab", str(a.vocab), "--device", a.device, "--chunk", str(a.chunk), "--repeats", str(a.repeats)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            results[v] = {"variant": v, "error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
        else:
            results[v] = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(results[v]), flush=True)
    c, n = results["chunked"], results["naive"]
    print(f"\nseq {a.seq}, hidden {a.hidden}, vocab {a.vocab}, device {a.device}, chunk {a.chunk}")
    print(f"{'variant':>8} {'time s':>8} {'extra peak GB':>14} {'loss':>10}")
    for r in (c, n):
        if "error" in r:
            print(f"{r['variant']:>8} failed: {r['error']}")
        else:
            print(f"{r['variant']:>8} {r['time_s']:>8.2f} {r['extra_peak_gb']:>14.2f} {r['loss']:>10.5f}")
    if "error" not in c and "error" not in n:
        print(f"memory ratio chunked/naive = {c['extra_peak_gb'] / n['extra_peak_gb']:.3f}  (target <= 0.125); "
              f"time ratio = {c['time_s'] / n['time_s']:.2f}  (target <= 1.2)")
    if a.output:
        with open(a.output, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
