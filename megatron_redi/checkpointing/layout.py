"""Names and discovery of checkpoint folders; no torch, no megatron.

A training `--save DIR`:
  DIR/iter_0000010/                       one complete checkpoint (renamed into place once fully written)
  DIR/iter_0000020.tmp-*/                 an interrupted save: ignored, cleaned up by the next save
  DIR/latest_checkpointed_iteration.txt   updated last, via an atomic rename
  DIR/hf_config.json, DIR/hf_assets/      the HF config and tokenizer files, so export needs nothing else
A converted HF model (`conversion/`) is one dist-checkpoint folder with the same side files.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

MARKER = "latest_checkpointed_iteration.txt"
META = "redi_meta.json"
HF_CONFIG = "hf_config.json"
ASSETS_DIR = "hf_assets"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.model",
                   "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
                   "chat_template.json")


def iter_dir(root: Path, it: int) -> Path:
    return root / f"iter_{it:07d}"


def complete_checkpoints(root: str | Path) -> list[int]:
    """Iterations of the complete checkpoints under a --save folder, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith("iter_") and "." not in p.name and (p / META).is_file():
            out.append(int(p.name[5:]))
    return sorted(out)


def latest_iteration(root: str | Path) -> int | None:
    """The marker's iteration if that checkpoint is complete, else the newest complete one."""
    root = Path(root)
    done = complete_checkpoints(root)
    marker = root / MARKER
    if marker.is_file():
        try:
            it = int(marker.read_text().strip())
            if it in done:
                return it
        except ValueError:
            pass
    return done[-1] if done else None


def has_checkpoint(root: str | Path) -> bool:
    return latest_iteration(root) is not None


def model_checkpoint_dir(root: str | Path) -> Path | None:
    """The folder holding a dist checkpoint: `root` itself (a converted HF model) or the newest complete
    iteration of a training --save folder; None if there is neither."""
    root = Path(root)
    it = latest_iteration(root)
    ckpt = iter_dir(root, it) if it is not None else root
    return ckpt if (ckpt / "metadata.json").is_file() else None


def copy_assets(srcs: Iterable[Path], dst: Path) -> list[str]:
    """Copy tokenizer and generation-config files from the first folder that has a tokenizer."""
    for src in srcs:
        names = [n for n in (*TOKENIZER_FILES, "generation_config.json") if (src / n).is_file()]
        if any(n in names for n in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
            dst.mkdir(parents=True, exist_ok=True)
            for n in names:
                shutil.copyfile(src / n, dst / n)
            return names
    return []
