"""Seeded epochs, sharded over data-parallel ranks, resumable from `consumed_samples`.

The global order is a concatenation of per-epoch permutations (seed + epoch), so sample k of the run
is the same whatever the DP size, and a run resumed at `consumed_samples` sees exactly what the
uninterrupted run would have.
"""

from __future__ import annotations

import numpy as np


class GlobalBatchSampler:
    def __init__(self, num_samples: int, global_batch_size: int, dp_rank: int, dp_size: int,
                 seed: int, shuffle: bool = True):
        if num_samples < 1:
            raise ValueError("the dataset is empty")
        if global_batch_size % dp_size:
            raise ValueError(f"--global-batch-size {global_batch_size} is not divisible by the data-parallel "
                             f"size {dp_size}")
        self.n, self.gbs, self.rank, self.dp = num_samples, global_batch_size, dp_rank, dp_size
        self.seed, self.shuffle = seed, shuffle
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: (np.random.default_rng(self.seed + epoch).permutation(self.n)
                                   if self.shuffle else np.arange(self.n))}
        return self._perms[epoch]

    def global_indices(self, consumed_samples: int) -> list[int]:
        out = []
        for k in range(consumed_samples, consumed_samples + self.gbs):
            out.append(int(self._perm(k // self.n)[k % self.n]))
        return out

    def local_indices(self, consumed_samples: int) -> list[int]:
        """This DP rank's contiguous share of the global batch starting at `consumed_samples`."""
        g = self.global_indices(consumed_samples)
        per = self.gbs // self.dp
        return g[self.rank * per : (self.rank + 1) * per]

    def epoch_of(self, consumed_samples: int) -> float:
        return consumed_samples / self.n
