"""Tokenised training units on disk: one flat int32 token file plus an index, memory-mapped.

Memory stays bounded whatever the data size (tokens are never Python lists until a micro-batch
needs them), and a second run with the same inputs and settings opens the cache at once.

Layout of a cache entry (a folder named by the cache key, written to a temporary folder and renamed):
  tokens.bin   int32 tokens of every prompt and completion, back to back
  units.npy    int64 [N, 6]: prompt (start, len), completion 0 (start, len), completion 1 (start, len | -1)
  refs.npy     float64 [N, 2] reference log-probs (DPO data only)
  stats.json   counts: rows, tokens, truncations
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from megatron_redi.data.batch import Example


class TokenizedDataset:
    """Indexable like a list of `Example`; per-unit sizes come from the index without touching tokens."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.units = np.load(self.path / "units.npy", mmap_mode="r")
        n_tok = (self.path / "tokens.bin").stat().st_size // 4
        self.tokens = np.memmap(self.path / "tokens.bin", dtype=np.int32, mode="r", shape=(n_tok,)) \
            if n_tok else np.zeros(0, dtype=np.int32)
        refs = self.path / "refs.npy"
        self.refs = np.load(refs) if refs.exists() else None
        self.stats = json.loads((self.path / "stats.json").read_text())

    def __len__(self) -> int:
        return int(self.units.shape[0])

    def _span(self, start: int, length: int) -> list[int]:
        return self.tokens[start : start + length].tolist()

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        u = self.units[i]
        comps = [self._span(u[2], u[3])]
        if u[5] >= 0:
            comps.append(self._span(u[4], u[5]))
        refs = tuple(float(x) for x in self.refs[i]) if self.refs is not None else None
        return Example(self._span(u[0], u[1]), comps, refs)

    def doc_lengths(self, i: int) -> list[int]:
        """Token count of each document (prompt + completion) of unit i."""
        u = self.units[i]
        return [int(u[1] + u[3])] + ([int(u[1] + u[5])] if u[5] >= 0 else [])

    def num_tokens(self, i: int) -> int:
        return sum(self.doc_lengths(i))

    def completion_tokens(self, i: int) -> int:
        u = self.units[i]
        return int(u[3] + max(u[5], 0))


class TokenizedWriter:
    """Streams units into a fresh folder (the caller renames it into place, see `data.dataset`)."""

    def __init__(self, folder: str | Path, with_refs: bool):
        self.tmp = Path(folder)
        self.tmp.mkdir(parents=True)
        self.f = open(self.tmp / "tokens.bin", "wb")
        self.pos = 0
        self.units: list[tuple[int, ...]] = []
        self.refs: list[tuple[float, float]] | None = [] if with_refs else None

    def _put(self, ids) -> tuple[int, int]:
        arr = np.asarray(ids, dtype=np.int32)
        self.f.write(arr.tobytes())
        start = self.pos
        self.pos += arr.size
        return start, int(arr.size)

    def add(self, prompt, completions, refs=None) -> None:
        p = self._put(prompt)
        c0 = self._put(completions[0])
        c1 = self._put(completions[1]) if len(completions) > 1 else (0, -1)
        self.units.append((*p, *c0, *c1))
        if self.refs is not None:
            self.refs.append(refs)

    def close(self, stats: dict) -> None:
        """Write the index and stats; `stats.json` comes last, so its presence marks a complete entry."""
        self.f.close()
        np.save(self.tmp / "units.npy", np.asarray(self.units, dtype=np.int64).reshape(-1, 6))
        if self.refs is not None:
            np.save(self.tmp / "refs.npy", np.asarray(self.refs, dtype=np.float64).reshape(-1, 2))
        (self.tmp / "stats.json").write_text(json.dumps(stats, indent=1))

    def abort(self) -> None:
        self.f.close()
