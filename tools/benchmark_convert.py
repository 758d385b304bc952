"""Time and peak memory of tools/convert_checkpoint.py, both ways, on a random Qwen2 checkpoint.

    python tools/benchmark_convert.py [--workdir /tmp/redi_convert_bench] [--dtype bf16] [--keep]

The default shape is Qwen2.5-1.5B's (hidden 1536, 28 layers, 12 heads, 2 KV heads, FFN 8960, vocab
151,936, tied). The random HF checkpoint is written tensor by tensor with safetensors (transformers' model
init would take minutes). Each conversion runs as its own process, as a user runs it; reported are wall
time, the converter's peak RSS (getrusage of that child) and the peak PSS summed over its process tree
(sampled every 0.2 s; counts the checkpoint writer's forked children without double-counting shared
pages). Finally the exported tensors are compared with the originals, bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONVERT = ROOT / "tools" / "convert_checkpoint.py"
TINY = ROOT / "megatron_redi" / "assets" / "tiny_qwen2"
QWEN25_1P5B = dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                   intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True)


def hf_config(shape: dict, dtype: str) -> dict:
    return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
            "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
            "use_sliding_window": False, "sliding_window": 32768, "max_window_layers": 28,
            "attention_dropout": 0.0, "initializer_range": 0.02, "bos_token_id": 151643,
            "eos_token_id": 151643, "torch_dtype": dtype, "use_cache": True, **shape}


def tensor_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    h, f, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = h // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    out = {"model.embed_tokens.weight": (v, h)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out.update({p + "input_layernorm.weight": (h,), p + "self_attn.q_proj.weight": (q, h),
                    p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.weight": (kv, h),
                    p + "self_attn.k_proj.bias": (kv,), p + "self_attn.v_proj.weight": (kv, h),
                    p + "self_attn.v_proj.bias": (kv,), p + "self_attn.o_proj.weight": (h, q),
                    p + "post_attention_layernorm.weight": (h,), p + "mlp.gate_proj.weight": (f, h),
                    p + "mlp.up_proj.weight": (f, h), p + "mlp.down_proj.weight": (h, f)})
    out["model.norm.weight"] = (h,)
    if not c["tie_word_embeddings"]:
        out["lm_head.weight"] = (v, h)
    return out


def write_random_hf(out: Path, shape: dict, dtype: torch.dtype, shard_bytes: int) -> int:
    """Random weights, shard by shard (one shard in memory at a time); returns the total bytes."""
    from safetensors.torch import save_file

    name = {torch.bfloat16: "bfloat16", torch.float32: "float32"}[dtype]
    cfg = hf_config(shape, name)
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    for f in TINY.iterdir():  # any tokenizer will do for conversion
        if f.name.startswith("tokenizer"):
            shutil.copy(f, out / f.name)
    shapes = tensor_shapes(cfg)
    gen = torch.Generator().manual_seed(0)
    groups: list[list[str]] = [[]]
    size = 0
    for n, s in shapes.items():
        nb = torch.Size(s).numel() * dtype.itemsize
        if groups[-1] and size + nb > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(n)
        size += nb
    files = [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    weight_map, total = {}, 0
    for fname, names in zip(files, groups):
        tensors = {}
        for n in names:
            t = torch.empty(shapes[n], dtype=torch.float32)
            t.normal_(1.0 if "norm" in n else 0.0, 0.02, generator=gen)
            tensors[n] = t.to(dtype)
            total += tensors[n].numel() * dtype.itemsize
            weight_map[n] = fname
        save_file(tensors, str(out / fname), metadata={"format": "pt"})
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return total


def _tree_pss_kib(pid: int) -> int:
    """PSS of a process and its descendants (shared pages split between sharers)."""
    import psutil

    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            for line in Path(f"/proc/{p.pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return total


def run_measured(cmd: list[str]) -> dict:
    """Wall time, peak RSS of the process itself and sampled peak PSS of its process tree."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_pss_kib(proc.pid))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed ({proc.returncode}):\n{output[-4000:]}")
    return {"wall_s": round(wall, 1), "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),
            "peak_tree_pss_gib": round(peak[0] / 2**20, 2),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1)}


def compare(a: Path, b: Path) -> int:
    """Bit-exact comparison of every tensor of two HF folders, one tensor at a time; returns the count."""
    from safetensors import safe_open

    def where(d: Path) -> dict[str, Path]:
        idx = d / "model.safetensors.index.json"
        if idx.is_file():
            return {n: d / f for n, f in json.loads(idx.read_text())["weight_map"].items()}
        with safe_open(str(d / "model.safetensors"), "pt") as f:
            return {n: d / "model.safetensors" for n in f.keys()}

    wa, wb = where(a), where(b)
    if sorted(wa) != sorted(wb):
        raise SystemExit(f"tensor names differ: {sorted(set(wa) ^ set(wb))[:5]}")
    for n in wa:
        with safe_open(str(wa[n]), "pt") as fa, safe_open(str(wb[n]), "pt") as fb:
            x, y = fa.get_tensor(n), fb.get_tensor(n)
            if x.dtype != y.dtype or not torch.equal(x, y):
                raise SystemExit(f"{n} differs after the round trip")
    return len(wa)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="/tmp/redi_convert_bench")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--shard-size-gb", type=float, default=2.0, help="shard size of the random HF input")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    work = Path(args.workdir)
    if work.exists():
        shutil.rmtree(work)
    hf, mc, back = work / "hf", work / "mcore", work / "hf_back"
    t0 = time.perf_counter()
    total = write_random_hf(hf, QWEN25_1P5B, dtype, int(args.shard_size_gb * 1e9))
    gen_s = time.perf_counter() - t0
    params = total // dtype.itemsize
    print(f"random HF checkpoint: {params / 1e9:.3f} B params, {total / 2**30:.2f} GiB {args.dtype}, "
          f"{len(list(hf.glob('*.safetensors')))} shards, written in {gen_s:.1f} s", flush=True)
    py = sys.executable
    res = {"params": params, "checkpoint_gib": round(total / 2**30, 2), "dtype": args.dtype}
    res["hf_to_mcore"] = run_measured([py, str(CONVERT), "hf-to-mcore", "--hf-dir", str(hf),
                                       "--output", str(mc), "--no-progress"])
    print(f"hf-to-mcore: {res['hf_to_mcore']}", flush=True)
    res["mcore_to_hf"] = run_measured([py, str(CONVERT), "mcore-to-hf", "--load", str(mc),
                                       "--output", str(back), "--no-progress"])
    print(f"mcore-to-hf: {res['mcore_to_hf']}", flush=True)
    res["identical_tensors"] = compare(hf, back)
    print(f"round trip: {res['identical_tensors']} tensors bit-identical")
    for k in ("hf_to_mcore", "mcore_to_hf"):
        res[k]["peak_rss_x_model"] = round(res[k]["peak_rss_gib"] / res["checkpoint_gib"], 2)
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
