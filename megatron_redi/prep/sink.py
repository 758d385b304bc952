"""Output: JSONL written incrementally, optionally in a seeded order through on-disk buckets."""

from __future__ import annotations

import json
import os
from pathlib import Path


def dumps(row: dict) -> bytes:
    """One JSON line, UTF-8, non-ASCII kept as is."""
    return (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")


class JsonlSink:
    """Write rows to `path` atomically (a `.partial` file renamed on close).

    Shuffled mode prefixes each line with its 16-hex-digit key and appends it to one of 64 bucket files by
    the key's top bits; `close` sorts each bucket in memory (splitting any bucket bigger than
    `max_bucket_bytes` by the next bits first) and concatenates. Memory is bounded by the bucket size, not by
    the output size, and the order depends only on the keys.
    """

    BITS = 6

    def __init__(self, path: Path, tmp_dir: Path | None, max_bucket_bytes: int = 256 << 20) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.tmp_dir = tmp_dir
        self.max_bucket_bytes = max_bucket_bytes
        self.count = 0
        if tmp_dir is None:
            self._out = open(self.partial, "wb")
            self._buckets: list = []
        else:
            self._out = None
            self._buckets = [open(tmp_dir / f"{self.path.stem}.{b:02x}", "wb") for b in range(1 << self.BITS)]

    def write(self, row: dict, key: int = 0) -> None:
        self.count += 1
        if self._out is not None:
            self._out.write(dumps(row))
        else:
            self._buckets[key >> (64 - self.BITS)].write(b"%016x\t" % key + dumps(row))

    def close(self) -> int:
        """Finish the file; returns the number of rows."""
        if self._out is not None:
            self._out.close()
        else:
            with open(self.partial, "wb") as out:
                for b in self._buckets:
                    b.close()
                    self._drain(Path(b.name), out, depth=1)
        os.replace(self.partial, self.path)
        return self.count

    def _drain(self, bucket: Path, out, depth: int) -> None:
        size = bucket.stat().st_size
        shift = 64 - self.BITS * (depth + 1)
        if size > self.max_bucket_bytes and shift >= 0:
            subs = [bucket.with_name(f"{bucket.name}.{s:02x}") for s in range(1 << self.BITS)]
            handles = [open(s, "wb") for s in subs]
            with open(bucket, "rb") as f:
                for line in f:
                    handles[(int(line[:16], 16) >> shift) & ((1 << self.BITS) - 1)].write(line)
            for h in handles:
                h.close()
            bucket.unlink()
            for s in subs:
                self._drain(s, out, depth + 1)
            return
        with open(bucket, "rb") as f:
            lines = f.readlines()
        bucket.unlink()
        lines.sort()
        for line in lines:
            out.write(line[17:])

    def abort(self) -> None:
        for h in [self._out, *self._buckets]:
            if h is not None:
                h.close()
        self.partial.unlink(missing_ok=True)
