"""Tokens/s, TFLOP/s per GPU and MFU over the iterations between two log lines."""

from __future__ import annotations

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


class ThroughputWindow:
    """Sums over the iterations since the last report: time, tokens, FLOPs, count, packing."""

    def __init__(self, shape: Qwen2Shape, world_size: int, device: torch.device):
        self.shape, self.world, self.device = shape, world_size, device
        self.peak = peak_tflops()
        self._reset()

    def _reset(self) -> None:
        self.seconds, self.tokens, self.flops, self.iterations, self.efficiency = 0.0, 0, 0.0, 0, 0.0

    def add(self, seconds: float, tokens: int, doc_lengths: list[int], packing_efficiency: float) -> None:
        self.seconds += seconds
        self.tokens += tokens
        self.flops += model_flops(self.shape, doc_lengths)
        self.iterations += 1
        self.efficiency += packing_efficiency

    def report(self) -> dict:
        """The window's figures (and, on CUDA, TFLOP/s per GPU, MFU and peak memory); then restart."""
        rec = {"tokens_per_sec": self.tokens / self.seconds, "iteration_time": self.seconds / self.iterations,
               "packing_efficiency": self.efficiency / self.iterations}
        if self.device.type == "cuda":
            tflops = self.flops / self.seconds / self.world / 1e12
            rec["tflops_per_gpu"] = tflops
            rec["mfu"] = tflops / self.peak if self.peak else None
            rec["max_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        self._reset()
        return rec
