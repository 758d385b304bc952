"""Memory of one REDI training step at full size, counted on the meta device (no GPU, no compute).

Not a test. Builds ours (megatron, as the trainer builds it) and the `transformers` baseline of
tools/benchmark_train.py at the real shape on the meta device, runs the forward of one packed pair of
the given length, and counts what autograd keeps for backward (each storage once, weights excluded).
That part is exact for this code and any device. Added to it:
- what a step holds regardless of length, from the parameter count: ours bf16 weights + fp32 gradient
  buffer + fp32 master weights + fp32 Adam moments (2+4+4+8 bytes per parameter); the baseline bf16
  weights, gradients and Adam moments (2+2+4);
- ours: the LM-head and hidden gradients the single-pass log-prob kernel holds from forward to backward.
Attention is counted as flash/cuDNN keep it (no probability matrix). Not counted: temporaries of
backward. So the totals are lower bounds of a step's peak. Checked against peaks measured on an H200
(docs/benchmarks/train_h200.json, model code before the memory-lean norm and SwiGLU, counted here with
that code): ours peaked 3.2 GiB above its bound at 4k, 8k and 16k tokens; the baseline 4, 10 and 24 GiB
above, growing with length, because its backward materialises the gradient of the full logits.

    python tools/benchmark_memory.py --seq-lengths 4096,8192,16384
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.benchmark_train import _pair, benchmark_model_config, hf_config  # noqa: E402

GiB = 2**30


class SavedBytes:
    """Counts the storages autograd saves for backward inside the `with` block. Attention is counted as
    flash/cuDNN keep it (q, k, v, the output and a fp32 log-sum-exp per query row) whichever kernel runs:
    on the meta device PyTorch's math backend would keep the full probability matrix."""

    def __init__(self, params):
        self.skip = {p.untyped_storage()._cdata for p in params}
        self.kept: dict = {}
        self._held: list[torch.Tensor] = []
        self._sdpa_depth = 0

    def _keep(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        if st._cdata not in self.skip:
            self.kept[st._cdata] = st.nbytes()
            self._held.append(t)  # a freed storage's address could be reused and miscounted

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        if not self._sdpa_depth:
            self._keep(t)
        return t

    def _sdpa(self, q, k, v, *args, **kwargs):
        self._sdpa_depth += 1
        try:
            out = self._real_sdpa(q, k, v, *args, **kwargs)
        finally:
            self._sdpa_depth -= 1
        if not self._sdpa_depth and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
            for t in (q, k, v, out):
                self._keep(t)
            self.kept["lse", out.untyped_storage()._cdata] = q.shape[:-1].numel() * 4
        return out

    def __enter__(self):
        self._real_sdpa = F.scaled_dot_product_attention
        F.scaled_dot_product_attention = self._sdpa
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        F.scaled_dot_product_attention = self._real_sdpa
        self._held.clear()

    @property
    def total(self) -> int:
        return sum(self.kept.values())


def ours_saved(cfg: dict, total: int, recompute_modules: list[str] | None = None) -> tuple[int, int]:
    """(bytes saved for backward, number of parameters) for one packed pair through our model."""
    from megatron_redi.data.batch import Example, pack
    from megatron_redi.model.config import ModelBuildConfig, Qwen2Shape
    from megatron_redi.model.provider import build_model

    shape = Qwen2Shape.from_hf(cfg)
    with torch.device("meta"):
        model = build_model(shape, ModelBuildConfig(
            bf16=True, transformer_impl="local", recompute_granularity="selective" if recompute_modules else None,
            recompute_modules=tuple(recompute_modules or ())))
    # the rotary table is made on the host from the config, not from the inputs
    rope = model.rotary_pos_emb.forward
    model.rotary_pos_emb.forward = lambda *a, **k: rope(*a, **k).to("meta")
    p, c, r = _pair(total, shape.vocab_size)
    mb = pack([Example(p, [c, r])])
    meta = lambda t: t.to("meta")
    with SavedBytes(model.parameters()) as sb:
        # segment ids stay on the host: attention reads document boundaries from them
        model(meta(mb.tokens), meta(mb.position_ids), mb.segment_ids, labels=meta(mb.labels))
    head = shape.padded_vocab_size(1) * shape.hidden_size * 4 + mb.tokens.numel() * shape.hidden_size * 2
    return sb.total + head, sum(q.numel() for q in model.parameters())


def baseline_saved(cfg: dict, total: int) -> tuple[int, int]:
    from transformers import Qwen2ForCausalLM

    conf = hf_config(cfg)
    with torch.device("meta"):
        model = Qwen2ForCausalLM._from_config(conf, attn_implementation="sdpa", dtype=torch.bfloat16)
    p, c, r = _pair(total, conf.vocab_size)
    n = len(p) + len(c)
    ids = torch.zeros(2, n, dtype=torch.long, device="meta")
    mask = torch.ones(2, n - 1, device="meta")
    with SavedBytes(model.parameters()) as sb:  # benchmark_train's baseline step, up to the loss
        logits = model(input_ids=ids).logits[:, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1) * mask
        (-lp[0].sum() / n + 0.8 * lp[1].sum() / n).sum()
    return sb.total, sum(q.numel() for q in model.parameters())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-lengths", default="4096,8192,16384")
    ap.add_argument("--tiny", action="store_true", help="the tiny test model instead of the 1.5B shape")
    ap.add_argument("--num-layers", type=int, default=None, help="override the depth")
    ap.add_argument("--recompute-modules", nargs="+", choices=["core_attn", "layernorm", "mlp"], default=None,
                    help="ours with the trainer's selective recompute of these modules")
    ap.add_argument("--output", default=None)
    a = ap.parse_args(argv)

    cfg = benchmark_model_config(a.tiny, a.num_layers, "29556")
    rows = []
    for total in [int(x) for x in a.seq_lengths.split(",")]:
        act, n = ours_saved(cfg, total, a.recompute_modules)
        bact, bn = baseline_saved(cfg, total)
        row = {"tokens": total, "layers": cfg["num_hidden_layers"], "ours_activations_gib": act / GiB,
               "ours_held_gib": n * (2 + 4 + 4 + 8) / GiB, "baseline_activations_gib": bact / GiB,
               "baseline_held_gib": bn * (2 + 2 + 4) / GiB, "params": n}
        row["ours_total_gib"] = row["ours_activations_gib"] + row["ours_held_gib"]
        row["baseline_total_gib"] = row["baseline_activations_gib"] + row["baseline_held_gib"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\nGiB, bf16, {cfg['num_hidden_layers']} layers; act = saved for backward; held = weights, grads, "
          f"optimizer state; total = their sum, a lower bound of the step's peak")
    print(f"{'tokens':>7} {'ours act':>9} {'held':>6} {'total':>6} | {'base act':>9} {'held':>6} {'total':>6}")
    for r in rows:
        print(f"{r['tokens']:>7} {r['ours_activations_gib']:>9.1f} {r['ours_held_gib']:>6.1f} "
              f"{r['ours_total_gib']:>6.1f} | {r['baseline_activations_gib']:>9.1f} {r['baseline_held_gib']:>6.1f} "
              f"{r['baseline_total_gib']:>6.1f}")
    if a.output:
        Path(a.output).write_text(json.dumps({"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
