"""Can a checkpoint folder be loaded? Checked before loading, so a truncated file is named and an older
checkpoint used, instead of a reader's traceback mid-load (trainer, scorer and converter alike)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from megatron_redi.checkpointing.layout import META, complete_checkpoints, iter_dir, latest_iteration


def unreadable_reason(path: Path) -> str | None:
    """Why a complete-looking checkpoint folder cannot be loaded (naming the file), or None. Checks
    what a kill, a full disk or a bad copy breaks: our metadata, the dist-checkpoint index, every
    data file's size against the byte ranges the index points to, and the pickled common state."""
    from torch.distributed.checkpoint import FileSystemReader

    if (path / META).exists():  # training checkpoints carry it; converted ones do not
        try:
            json.loads((path / META).read_text())
        except (OSError, ValueError) as e:
            return f"{path / META}: {e}"
    try:
        storage = FileSystemReader(str(path)).read_metadata().storage_data
    except Exception as e:  # any failure to unpickle the index: report it with its path
        return f"{path / '.metadata'}: unreadable ({type(e).__name__}: {e})"
    need: dict[str, int] = {}
    for info in storage.values():
        need[info.relative_path] = max(need.get(info.relative_path, 0), info.offset + info.length)
    for name, size in sorted(need.items()):
        f = path / name
        have = f.stat().st_size if f.is_file() else None
        if have is None or have < size:
            return f"{f}: {'missing' if have is None else f'truncated ({have} of at least {size} bytes)'}"
    if (path / "common.pt").is_file():
        try:
            torch.load(path / "common.pt", map_location="cpu", weights_only=False)
        except Exception as e:
            return f"{path / 'common.pt'}: unreadable ({type(e).__name__}: {e})"
    return None


def newest_readable_iteration(root: str | Path) -> tuple[int | None, list[str]]:
    """(newest complete iteration of a --save folder that passes `unreadable_reason`, the reasons of the
    newer ones skipped); the `latest` marker's iteration is tried first."""
    done = complete_checkpoints(root)
    latest = latest_iteration(root)
    skipped = []
    for it in ([latest] if latest is not None else []) + [i for i in reversed(done) if i != latest]:
        reason = unreadable_reason(iter_dir(Path(root), it))
        if reason is None:
            return it, skipped
        skipped.append(reason)
    return None, skipped


def newest_readable_model_dir(root: str | Path) -> tuple[Path | None, list[str]]:
    """The folder to load model weights from: a converted checkpoint (`root` holds metadata.json) if
    readable, else the newest readable iteration of a training --save folder; with the reasons of the
    unreadable ones skipped."""
    root = Path(root)
    if (root / "metadata.json").is_file():
        reason = unreadable_reason(root)
        return (root, []) if reason is None else (None, [reason])
    it, skipped = newest_readable_iteration(root)
    return (iter_dir(root, it) if it is not None else None), skipped
