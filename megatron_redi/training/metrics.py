"""Console line, JSONL record and TensorBoard scalars per logging step; FLOPs and MFU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from megatron_redi.model.config import Qwen2Shape

# dense BF16 peak (TFLOP/s) by device-name fragment
_PEAKS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0,
          "B200": 2250.0, "GB200": 2500.0}


def peak_tflops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for k, v in _PEAKS.items():
        if k in name:
            return v
    return None


def model_flops(shape: Qwen2Shape, doc_lengths: list[int]) -> float:
    """Training FLOPs (forward + backward = 3x forward) of documents of the given token lengths."""
    h, L = shape.hidden_size, shape.num_hidden_layers
    kv = shape.num_key_value_heads * (h // shape.num_attention_heads)
    per_layer = h * (h + 2 * kv) + h * h + 3 * h * shape.intermediate_size  # qkv, proj, swiglu mlp
    dense = L * per_layer + shape.vocab_size * h  # + LM head
    total = 0.0
    for n in doc_lengths:
        total += 6.0 * n * dense + 6.0 * L * h * n * n  # causal attention: QK^T and AV, half the square
    return total


class MetricsLogger:
    def __init__(self, metrics_file: str | None, tensorboard_dir: str | None, enabled: bool):
        self.enabled = enabled
        self.file = None
        self.tb = None
        if not enabled:
            return
        if metrics_file:
            Path(metrics_file).parent.mkdir(parents=True, exist_ok=True)
            self.file = open(metrics_file, "a", buffering=1)
        if tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(tensorboard_dir)

    def log(self, record: dict, write_line) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        if self.file:
            self.file.write(json.dumps(clean) + "\n")
        if self.tb:
            for k, v in record.items():
                if k != "iteration" and isinstance(v, int | float):
                    self.tb.add_scalar(f"train/{k}", v, record["iteration"])
        parts = [f"iter {record['iteration']}"]
        for k in ("loss", "lr", "grad_norm", "chosen_logp", "rejected_logp", "margin", "pair_accuracy",
                  "tokens_per_sec", "tflops_per_gpu", "mfu"):
            if record.get(k) is not None:
                v = record[k]
                parts.append(f"{k} {v:.3e}" if k in ("lr",) else f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}")
        write_line(" | ".join(parts))

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb:
            self.tb.close()
