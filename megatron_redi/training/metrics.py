"""Metric sums reduced over data-parallel ranks; console line, JSONL record and TensorBoard scalars."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.distributed as dist


def reduce_metrics(losses: list[dict], device: torch.device) -> dict:
    """Sum the per-micro-batch metric sums of one step and all-reduce over DP (values are already
    divided by the global unit count). {} off the last pipeline stage."""
    from megatron.core import parallel_state as ps

    if not ps.is_pipeline_last_stage() or not losses:
        return {}
    keys = sorted(losses[0])
    vec = torch.stack([sum(d[k].float() for d in losses) for k in keys]).to(device)
    dist.all_reduce(vec, group=ps.get_data_parallel_group())
    return {k: float(v) for k, v in zip(keys, vec.tolist())}


class MetricAverager:
    """Means of the objective's metrics over the iterations since the last log line (Megatron averages
    its losses over --log-interval the same way)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def mean(self) -> dict[str, float]:
        """The window's means; then start a new window."""
        out = {k: v / self.count for k, v in self.sums.items()} if self.count else {}
        self.sums, self.count = {}, 0
        return out


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
                  "rewards/margins", "rewards/accuracies",
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
