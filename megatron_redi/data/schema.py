"""Training rows in every layout TRL accepts, parsed into (prompt messages, completion messages).

Pairs (`--loss-type redi|dpo|simpo`), with TRL's semantics (`trl.data_utils.maybe_extract_prompt`):
  - explicit prompt: `prompt` (a string or messages) with `chosen` / `rejected` as strings or
    assistant-first message lists;
  - implicit prompt: no `prompt`; `chosen` and `rejected` are whole conversations and their longest common
    message prefix is the prompt (at least the last message of each stays a completion);
  - a prompt given AND repeated at the start of the conversations (the layout of the most used public
    preference sets): recognised, never doubled; the conversations must begin with it, else the row is
    refused with the first differing text;
  - system messages and multi-turn prompts; columns other than these (and the reference log-probs) are ignored.
SFT:
  - `messages`: the prompt is every message before the last assistant turn, which is trained on (with
    `all_assistant_turns`, every assistant turn becomes one unit whose prompt is the conversation before it);
  - `prompt` / `completion`: strings or messages (a completion that repeats the prompt is recognised).

Every problem found is reported with the file and 1-based row, so bad data fails before any rank
enters a collective.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from megatron_redi.data.errors import DataError
from megatron_redi.data.readers import is_save_to_disk, read_rows, resolve_inputs

Message = dict[str, str]
ROLES = ("system", "user", "assistant", "tool")
_ROLE_HINT = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}


def _short(text: str, at: int = 0, width: int = 40) -> str:
    """A repr of `text` around position `at`, clipped to about `width` characters."""
    start = max(at - width // 4, 0)
    piece = text[start : start + width]
    return ("..." if start else "") + repr(piece) + ("..." if start + width < len(text) else "")


def _as_messages(value, role: str, where: str, field: str) -> list[Message]:
    """A string becomes one message of `role`; a message list is checked (keys, types, known roles)."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: field {field!r} must be a string or a non-empty list of "
                        f"{{'role': str, 'content': str}} messages, got {type(value).__name__}"
                        + (" (empty list)" if isinstance(value, list) else ""))
    out = []
    for i, m in enumerate(value):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            keys = sorted(m) if isinstance(m, dict) else type(m).__name__
            hint = (" (ShareGPT 'from'/'value' messages: rename them to 'role'/'content')"
                    if isinstance(m, dict) and "from" in m else "")
            raise DataError(f"{where}: {field}[{i}] must be {{'role': str, 'content': str}}, got {keys}{hint}")
        if m["role"] not in ROLES:
            hint = f"; use {_ROLE_HINT[m['role']]!r}" if m["role"] in _ROLE_HINT else ""
            raise DataError(f"{where}: {field}[{i}] has role {m['role']!r}, which the chat template does not "
                            f"know; expected one of {list(ROLES)}{hint}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _first_difference(a: list[Message], b: list[Message]) -> tuple[int, str]:
    """(index of the first differing message, a description of how it differs)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            if x["role"] != y["role"]:
                return i, f"role {x['role']!r} vs {y['role']!r}"
            j = next((k for k, (c, d) in enumerate(zip(x["content"], y["content"])) if c != d),
                     min(len(x["content"]), len(y["content"])))
            return i, (f"{x['role']} content differs at character {j}: "
                       f"{_short(x['content'], j)} vs {_short(y['content'], j)}")
    i = min(len(a), len(b))
    return i, "one ends before the other"


def _completion(prompt: list[Message], value, where: str, field: str) -> list[Message]:
    """The completion messages of `field` given an explicit prompt: a string, an assistant-first list, or a
    whole conversation that repeats the prompt (then the repeated part is removed)."""
    msgs = _as_messages(value, "assistant", where, field)
    if msgs[0]["role"] == "assistant":
        return msgs
    n = len(prompt)
    if msgs[:n] != prompt:
        i, how = _first_difference(prompt, msgs)
        raise DataError(f"{where}: 'prompt' and {field!r} disagree: {field!r} is a whole conversation (it starts "
                        f"with a {msgs[0]['role']!r} turn) but does not begin with the prompt; first difference at "
                        f"message {i}: {how}. Give {field!r} as the assistant reply only, or repeat the prompt "
                        f"exactly")
    return msgs[n:]


def _check_completion(msgs: list[Message], where: str, field: str) -> None:
    if not msgs:
        raise DataError(f"{where}: {field!r} holds no reply after the prompt")
    if msgs[0]["role"] != "assistant":
        raise DataError(f"{where}: the {field!r} completion must start with an assistant turn, got role "
                        f"{msgs[0]['role']!r}")
    if not msgs[-1]["content"]:
        raise DataError(f"{where}: empty {field!r} completion")


def _common_prefix(a: list[Message], b: list[Message]) -> int:
    """TRL's `extract_prompt`: the first differing index; when none differs, all but the last message."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n - 1)


def parse_pair_row(row: dict, where: str, need_reference: bool = False) -> dict:
    """-> {"prompt", "chosen", "rejected"} as message lists (completions without the prompt), plus the
    reference log-probs when present or needed."""
    missing = [k for k in ("chosen", "rejected") if k not in row]
    if missing:
        raise DataError(f"{where}: a pair row needs 'chosen' and 'rejected' (and 'prompt', unless both are whole "
                        f"conversations that share it); missing {missing}; found keys {sorted(row)}")
    if "prompt" in row and row["prompt"] is not None:
        prompt = _as_messages(row["prompt"], "user", where, "prompt")
        chosen = _completion(prompt, row["chosen"], where, "chosen")
        rejected = _completion(prompt, row["rejected"], where, "rejected")
        # Conversations that repeat the prompt may share more turns after it: those belong to the prompt too
        # (as TRL's `extract_prompt` would put them).
        full_c, full_r = prompt + chosen, prompt + rejected
        k = _common_prefix(full_c, full_r)
        if k > len(prompt) and not isinstance(row["chosen"], str) and not isinstance(row["rejected"], str):
            prompt, chosen, rejected = full_c[:k], full_c[k:], full_r[k:]
    else:
        c = _as_messages(row["chosen"], "assistant", where, "chosen")
        r = _as_messages(row["rejected"], "assistant", where, "rejected")
        if isinstance(row["chosen"], str) or isinstance(row["rejected"], str):
            raise DataError(f"{where}: without 'prompt', 'chosen' and 'rejected' must be whole conversations "
                            f"(message lists) that begin with the same prompt; add a 'prompt' field")
        k = _common_prefix(c, r)
        prompt, chosen, rejected = c[:k], c[k:], r[k:]
        if not prompt:
            raise DataError(f"{where}: no 'prompt' and 'chosen' / 'rejected' share no leading message, so the "
                            f"prompt cannot be found; first difference: {_first_difference(c, r)[1]}")
    for name, msgs in (("chosen", chosen), ("rejected", rejected)):
        _check_completion(msgs, where, name)
    out: dict = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    if need_reference or "ref_chosen_logp" in row:
        for k in ("ref_chosen_logp", "ref_rejected_logp"):
            if not isinstance(row.get(k), int | float):
                raise DataError(f"{where}: --loss-type dpo needs numeric {k!r} (from tools/score_reference.py)")
        out["ref_chosen_logp"] = float(row["ref_chosen_logp"])
        out["ref_rejected_logp"] = float(row["ref_rejected_logp"])
    return out


def parse_sft_units(row: dict, where: str, all_assistant_turns: bool = False
                    ) -> list[tuple[list[Message], list[Message]]]:
    """-> [(prompt messages, completion messages)]: one unit, or one per assistant turn."""
    if "messages" in row:
        msgs = _as_messages(row["messages"], "user", where, "messages")
        if msgs[-1]["role"] != "assistant":
            raise DataError(f"{where}: the last message must be the assistant's, got role {msgs[-1]['role']!r}")
        if len(msgs) < 2:
            raise DataError(f"{where}: 'messages' needs at least a user and an assistant turn")
        turns = [i for i, m in enumerate(msgs) if m["role"] == "assistant" and i > 0] if all_assistant_turns \
            else [len(msgs) - 1]
        for i in turns:
            if not msgs[i]["content"]:
                raise DataError(f"{where}: empty assistant message (messages[{i}])")
        return [(msgs[:i], [msgs[i]]) for i in turns]
    if "prompt" in row and "completion" in row:
        prompt = _as_messages(row["prompt"], "user", where, "prompt")
        completion = _completion(prompt, row["completion"], where, "completion")
        _check_completion(completion, where, "completion")
        return [(prompt, completion)]
    raise DataError(f"{where}: an SFT row needs 'messages' (or 'prompt' and 'completion'); "
                    f"found keys {sorted(row)}")


def parse_sft_row(row: dict, where: str) -> tuple[list[Message], list[Message]]:
    """-> (prompt messages, completion messages) of the last assistant turn."""
    return parse_sft_units(row, where)[0]


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
            raise DataError(f"{where}: invalid JSON or not UTF-8 ({raw.error})")
        if not isinstance(raw.data, dict):
            raise DataError(f"{where}: expected a JSON object")
        yield raw.data, where
