"""Training rows: SFT `{"messages": [...]}` and pairs `{"prompt", "chosen", "rejected"}` (TRL style).

Every problem found is reported with the file and 1-based row, so bad data fails before any rank
enters a collective.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from megatron_redi.data.errors import DataError
from megatron_redi.data.readers import is_save_to_disk, read_rows, resolve_inputs

Message = dict[str, str]


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
    """Yield (row, "file: row N") from JSONL, Parquet, an Arrow file or an HF `save_to_disk` folder (its
    "train" split for a DatasetDict) or a folder of such files. N is the 1-based line of a JSON-lines file,
    else the 1-based row of the file (of the whole dataset for a `save_to_disk` folder); a file with another
    suffix is read as JSON lines."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--data-path: {p} does not exist")
    one = p.is_file() or is_save_to_disk(p)  # rows are named after `path` itself, not its Arrow shards
    for n, raw in enumerate(read_rows(resolve_inputs([p], default_kind="jsonl")), start=1):
        number = raw.line if raw.line is not None else (n if one else raw.row + 1)
        where = f"{p if one else raw.path}: row {number}"
        if raw.error is not None:
            raise DataError(f"{where}: invalid JSON ({raw.error})")
        if not isinstance(raw.data, dict):
            raise DataError(f"{where}: expected a JSON object")
        yield raw.data, where
