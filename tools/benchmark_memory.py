"""Project the peak memory of one REDI step at full depth and long sequences from small runs.

Not a test. Runs tools/benchmark_train.py at 1 and 2 layers and two sequence lengths (each in its own
process), then fits, separately for ours and for the `transformers` baseline,
    held(L)    = h0 + h1*L                    (weights, gradients, optimizer state)
    step(L, T) = a + b*L + c*T + d*L*T        (what one training step adds on top: activations, buffers)
exactly through the four measured points, and evaluates them at the model's real depth. Every layer is
the same and activations grow linearly in tokens, so the fit is exact up to allocator noise; it answers
"does a 16k-token pair fit an 80 GB GPU" on a machine that cannot hold the model.

On CPU memory is the resident set (malloc told to return every block of 64 KiB or more to the system
at free, so freed memory does not linger); on GPU it is torch's allocated bytes.
    python tools/benchmark_memory.py --bf16 --measure-tokens 1024,2048 --project-tokens 4096,8192,16384
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FULL_LAYERS = 28  # Qwen2.5-1.5B, the shape benchmark_train uses


def measure(layers: int, tokens: list[int], bf16: bool, baseline: bool) -> list[dict]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, str(ROOT / "tools" / "benchmark_train.py"), "--num-layers", str(layers),
               "--seq-lengths", ",".join(map(str, tokens)), "--steps", "1", "--warmup", "1", "--output", str(out)]
        cmd += ["--bf16"] if bf16 else []
        cmd += [] if baseline else ["--no-baseline"]
        print(f"[memory] {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())["rows"]


def fit(points: dict[tuple[int, int], float]) -> tuple[float, float, float, float]:
    """a + b*L + c*T + d*L*T through four points on a 2x2 grid of (L, T)."""
    (l1, l2), (t1, t2) = sorted({k[0] for k in points}), sorted({k[1] for k in points})
    f = points
    d = (f[l2, t2] - f[l2, t1] - f[l1, t2] + f[l1, t1]) / ((l2 - l1) * (t2 - t1))
    b = (f[l2, t1] - f[l1, t1]) / (l2 - l1) - d * t1
    c = (f[l1, t2] - f[l1, t1]) / (t2 - t1) - d * l1
    a = f[l1, t1] - b * l1 - c * t1 - d * l1 * t1
    return a, b, c, d


def project(rows_by_layers: dict[int, list[dict]], who: str, layers: int, tokens: list[int]) -> list[dict]:
    held, step = {}, {}
    for L, rows in rows_by_layers.items():
        for r in rows:
            if r.get(f"{who}_static_gb") is None:
                return []
            held[L, r["tokens"]] = r[f"{who}_static_gb"]
            step[L, r["tokens"]] = r[f"{who}_peak_gb"] - r[f"{who}_static_gb"]
    a, b, c, d = fit(step)
    ha, hb, hc, hd = fit(held)  # c, d ~ 0: what is held does not depend on the tokens
    out = []
    for T in tokens:
        h = ha + hb * layers + hc * T + hd * layers * T
        s = a + b * layers + c * T + d * layers * T
        out.append({"who": who, "tokens": T, "layers": layers, "held_gb": h, "step_gb": s, "peak_gb": h + s,
                    "per_layer_per_1k_tokens_gb": (d * 1000), "held_per_layer_gb": hb})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--measure-tokens", default="1024,2048")
    ap.add_argument("--project-tokens", default="4096,8192,16384")
    ap.add_argument("--layers", type=int, default=FULL_LAYERS, help="depth to project to")
    ap.add_argument("--bf16", action="store_true", help="bf16 on CPU (GPU runs are always bf16)")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--device-memory-gb", type=float, default=80.0, help="what 'fits' is judged against")
    ap.add_argument("--output", default=None)
    a = ap.parse_args(argv)
    measured = [int(x) for x in a.measure_tokens.split(",")]
    if len(measured) != 2:
        ap.error("--measure-tokens takes exactly two lengths")
    rows = {L: measure(L, measured, a.bf16, not a.no_baseline) for L in (1, 2)}
    proj = [p for who in ("ours", "baseline") for p in project(rows, who, a.layers, [int(x) for x in
                                                                                    a.project_tokens.split(",")])]
    print(f"projected to {a.layers} layers from 1-2 layers at {measured} tokens; GB; fits = peak <= "
          f"{a.device_memory_gb:g}")
    print(f"{'who':>9} {'tokens':>7} {'held':>7} {'step':>7} {'peak':>7} {'fits':>5} {'act/layer/1k tok':>17}")
    for p in proj:
        print(f"{p['who']:>9} {p['tokens']:>7} {p['held_gb']:>7.1f} {p['step_gb']:>7.1f} {p['peak_gb']:>7.1f} "
              f"{'yes' if p['peak_gb'] <= a.device_memory_gb else 'NO':>5} {p['per_layer_per_1k_tokens_gb']:>17.3f}")
    if a.output:
        Path(a.output).write_text(json.dumps({"measured": rows, "projected": proj}, indent=1) + "\n")


if __name__ == "__main__":
    main()
