"""Training rows: SFT `{"messages": [...]}` and pairs `{"prompt", "chosen", "rejected"}` (TRL style).

Every problem found is reported with the file and 1-based row, so bad data fails before any rank
enters a collective.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

Message = dict[str, str]


class DataError(ValueError):
    """A malformed input row; the message names the file and row."""


def _as_messages(value, role: str, where: str, field: str) -> list[Message]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and value and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    ):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise DataError(f"{where}: field {field!r} must be a string or a non-empty list of "
                    f"{{'role': str, 'content': str}} messages, got {type(value).__name__}")


def parse_sft_row(row: dict, where: str) -> tuple[list[Message], list[Message]]:
    """-> (prompt messages, [assistant message])."""
    if "messages" in row:
        msgs = _as_messages(row["messages"], "user", where, "messages")
        if msgs[-1]["role"] != "assistant":
            raise DataError(f"{where}: the last message must be the assistant's, got role "
                            f"{msgs[-1]['role']!r}")
        if len(msgs) < 2:
            raise DataError(f"{where}: 'messages' needs at least a user and an assistant turn")
        if not msgs[-1]["content"]:
            raise DataError(f"{where}: empty assistant message")
        return msgs[:-1], msgs[-1:]
    if "prompt" in row and "completion" in row:
        return (_as_messages(row["prompt"], "user", where, "prompt"),
                _as_messages(row["completion"], "assistant", where, "completion"))
    raise DataError(f"{where}: an SFT row needs 'messages' (or 'prompt' and 'completion'); "
                    f"found keys {sorted(row)}")


def parse_pair_row(row: dict, where: str, need_reference: bool = False) -> dict:
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
    if missing:
        raise DataError(f"{where}: a pair row needs 'prompt', 'chosen' and 'rejected'; missing {missing}")
    out = {
        "prompt": _as_messages(row["prompt"], "user", where, "prompt"),
        "chosen": _as_messages(row["chosen"], "assistant", where, "chosen"),
        "rejected": _as_messages(row["rejected"], "assistant", where, "rejected"),
    }
    for k in ("chosen", "rejected"):
        if not out[k][-1]["content"]:
            raise DataError(f"{where}: empty {k!r} completion")
    if need_reference or "ref_chosen_logp" in row:
        for k in ("ref_chosen_logp", "ref_rejected_logp"):
            if not isinstance(row.get(k), int | float):
                raise DataError(f"{where}: --loss-type dpo needs numeric {k!r} (from tools/score_reference.py)")
        out["ref_chosen_logp"] = float(row["ref_chosen_logp"])
        out["ref_rejected_logp"] = float(row["ref_rejected_logp"])
    return out


def iter_rows(path: str | Path) -> Iterator[tuple[dict, str]]:
    """Yield (row, "file:row N") from JSONL, Parquet or an HF `save_to_disk` folder."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--data-path: {p} does not exist")
    if p.is_dir() or p.suffix in (".parquet", ".arrow"):
        import datasets

        ds = datasets.load_from_disk(str(p)) if p.is_dir() else datasets.load_dataset(
            "parquet", data_files=str(p), split="train")
        for i, row in enumerate(ds):
            yield row, f"{p}: row {i + 1}"
        return
    with open(p, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p}: row {i + 1}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{p}: row {i + 1}: expected a JSON object")
            yield row, f"{p}: row {i + 1}"
