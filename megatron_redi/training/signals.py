"""SIGTERM/SIGINT -> finish the current step, save, exit 0 (SLURM preemption, `scontrol requeue`)."""

from __future__ import annotations

import signal

import torch
import torch.distributed as dist


class ExitSignalHandler:
    def __init__(self, signals=(signal.SIGTERM, signal.SIGUSR1)):
        self.received = False
        self._prev = {}
        for s in signals:
            self._prev[s] = signal.signal(s, self._handle)

    def _handle(self, signum, frame):
        self.received = True

    def any_rank_received(self) -> bool:
        """True on every rank as soon as one rank got the signal (one tiny all-reduce per step)."""
        flag = torch.tensor([1 if self.received else 0], dtype=torch.int32,
                            device="cuda" if torch.cuda.is_available() else "cpu")
        if dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def restore(self) -> None:
        for s, h in self._prev.items():
            signal.signal(s, h)
