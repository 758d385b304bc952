"""RMSNorm for the local spec: megatron's torch norm wrapper refuses sequence parallelism."""

from __future__ import annotations

import torch

from megatron_redi.model.fused import fused_rms_norm


class RMSNorm(torch.nn.Module):
    """Qwen2's RMSNorm (fp32 statistics). Under sequence parallelism each TP rank normalises its own
    sequence shard, so the weight gradient is partial: tagging it `sequence_parallel` makes
    megatron's finalize step all-reduce it over the TP group."""

    def __init__(self, config, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(hidden_size, dtype=config.params_dtype))
        self.weight.sequence_parallel = bool(config.sequence_parallel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_rms_norm(x, self.weight, self.eps)
