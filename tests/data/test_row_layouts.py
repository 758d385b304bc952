"""Every pair and SFT layout TRL accepts, checked against TRL itself; errors that say what to do; the skip and
truncation policies; a cache that cleans up after itself."""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_redi.data import dataset as dataset_mod
from megatron_redi.data.dataset import DataConfig, build_dataset, cache_key, tokenize_to_cache
from megatron_redi.data.errors import DataError
from megatron_redi.data.schema import parse_pair_row
from megatron_redi.data.tokenize import ChatEncoder, TokenizeConfig, load_tokenizer, prefix_error
from tests.helpers_dist import TINY
from tests.qwen_helpers import qwen25_dir

SYS = {"role": "system", "content": "You are a careful mathematician."}
U1, R1 = {"role": "user", "content": "What is 2+3?"}, {"role": "assistant", "content": "It is 5."}
U2 = {"role": "user", "content": "And 2+3+4? Think step by step."}
A1, A2 = "2+3 = 5, and 5+4 = \\boxed{9}.", "2+3 = 6, and 6+4 = \\boxed{10}."


def _asst(text):
    return [{"role": "assistant", "content": text}]


def _layouts(prompt: list[dict]) -> dict[str, dict]:
    """The same content in every pair layout (TRL's names)."""
    c, r = prompt + _asst(A1), prompt + _asst(A2)
    out = {
        "explicit_messages": {"prompt": prompt, "chosen": _asst(A1), "rejected": _asst(A2)},
        "implicit_prompt": {"chosen": c, "rejected": r},
        "prompt_repeated_in_conversations": {"prompt": prompt, "chosen": c, "rejected": r},
        "extra_columns": {"id": "x1", "score_chosen": 9.0, "source": "s", "prompt": prompt,
                          "chosen": _asst(A1), "rejected": _asst(A2)},
    }
    if len(prompt) == 1:  # a single user turn can also be given as strings
        out["explicit_strings"] = {"prompt": prompt[0]["content"], "chosen": A1, "rejected": A2}
        out["string_prompt_repeated_in_conversations"] = {"prompt": prompt[0]["content"], "chosen": c, "rejected": r}
    return out


PROMPTS = {"single_turn": [U1 | {"content": U2["content"]}], "system_multi_turn": [SYS, U1, R1, U2]}


def _trl_reference(row: dict, tok) -> tuple[dict, list[int], list[int], list[int]]:
    """TRL's own pipeline: `maybe_extract_prompt`, `apply_chat_template` (texts), and the DPO trainer's
    tokenisation (prompt and prompt+completion through the template, split at the common token prefix).
    Layout translation: TRL treats all-string rows as plain text (no chat template), so they are given to it
    as the equivalent messages; TRL leaves a messages prompt that is repeated in the conversations in place
    (it would be doubled), so that row is given to it without the prompt (its implicit-prompt layout)."""
    from trl.data_utils import _tokenize, apply_chat_template, common_prefix_length, maybe_extract_prompt

    ex = {k: row[k] for k in ("prompt", "chosen", "rejected") if k in row}
    if all(isinstance(v, str) for v in ex.values()):
        ex = {"prompt": [{"role": "user", "content": ex["prompt"]}], "chosen": _asst(ex["chosen"]),
              "rejected": _asst(ex["rejected"])}
    elif isinstance(ex.get("prompt"), list) and ex["chosen"][0]["role"] != "assistant":
        ex.pop("prompt")
    ex = maybe_extract_prompt(ex)
    texts = apply_chat_template(ex, tok)
    p = _tokenize(tok, ex["prompt"], add_generation_prompt=True)["input_ids"]
    pc = _tokenize(tok, ex["prompt"] + ex["chosen"])["input_ids"]
    pr = _tokenize(tok, ex["prompt"] + ex["rejected"])["input_ids"]
    n = min(common_prefix_length(p, pc), common_prefix_length(p, pr))
    eos = tok.eos_token_id  # REDI.md: every completion ends with EOS after the template's <|im_end|>\n
    return texts, p[:n], pc[n:] + [eos], pr[n:] + [eos]


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _cfg(tmp_path, data, paired=True, tok=TINY, **tk):
    return DataConfig([str(data)], str(tok), paired=paired, tokenize=TokenizeConfig(**{"seq_length": 4096, **tk}),
                      cache_dir=str(tmp_path / "cache"), workers=1)


@pytest.mark.parametrize("tokenizer", ["tiny", "qwen25"])
def test_every_pair_layout_matches_trl_and_gives_the_same_examples(tmp_path, tokenizer):
    tok_dir = TINY if tokenizer == "tiny" else qwen25_dir()
    tok = load_tokenizer(tok_dir)
    enc = ChatEncoder(tok, TokenizeConfig())
    for kind, prompt in PROMPTS.items():
        layouts = _layouts(prompt)
        ds = build_dataset(_cfg(tmp_path / kind, _write(tmp_path / f"{kind}.jsonl", list(layouts.values())),
                                tok=tok_dir), progress=False)
        assert len(ds) == len(layouts)
        for i, (name, row) in enumerate(layouts.items()):
            texts, p_ids, c_ids, r_ids = _trl_reference(row, tok)
            parsed = parse_pair_row(row, name)
            assert parsed["prompt"] == prompt, (kind, name)
            p_text, (c_text, r_text) = enc.texts(parsed["prompt"], [parsed["chosen"], parsed["rejected"]])
            assert (p_text, c_text, r_text) == (texts["prompt"], texts["chosen"], texts["rejected"]), (kind, name)
            assert (ds[i].prompt, ds[i].completions) == (p_ids, [c_ids, r_ids]), (kind, name)
        assert all(ds[i] == ds[0] for i in range(len(ds)))  # every layout of one content: the same example


def test_trl_extract_prompt_semantics_for_longer_shared_conversations():
    """Conversations that share turns after the given prompt: those turns join the prompt, as TRL puts them."""
    from trl.data_utils import extract_prompt

    c, r = [U1, R1, U2, *_asst(A1)], [U1, R1, U2, *_asst(A2)]
    want = extract_prompt({"chosen": c, "rejected": r})
    for row in ({"prompt": U1["content"], "chosen": c, "rejected": r}, {"prompt": [U1], "chosen": c, "rejected": r},
                {"chosen": c, "rejected": r}):
        got = parse_pair_row(row, "f: row 1")
        assert {k: got[k] for k in want} == want
    # chosen == rejected: TRL keeps all but the last message as the prompt, and so do we
    same = parse_pair_row({"chosen": c, "rejected": c}, "f: row 1")
    assert {k: same[k] for k in want} == extract_prompt({"chosen": c, "rejected": c})


def test_sft_layouts_give_the_same_examples_and_all_assistant_turns(tmp_path):
    full = [SYS, U1, R1, U2, *_asst(A1)]
    rows = [{"messages": full}, {"prompt": full[:-1], "completion": _asst(A1)},
            {"prompt": full[:-1], "completion": full}, {"messages": [U2, *_asst(A1)], "extra": 1},
            {"prompt": U2["content"], "completion": A1}]
    ds = build_dataset(_cfg(tmp_path, _write(tmp_path / "sft.jsonl", rows), paired=False), progress=False)
    assert len(ds) == 5 and ds[0] == ds[1] == ds[2] and ds[3] == ds[4] and ds[0] != ds[3]
    tok = load_tokenizer(TINY)

    def ref(prompt, reply):  # independent: the template rendered twice, the prompt sliced off as text
        p = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        f = tok.apply_chat_template(prompt + [reply], tokenize=False)
        assert f.startswith(p)
        return tok(p, add_special_tokens=False)["input_ids"], [tok(f[len(p):], add_special_tokens=False)["input_ids"]
                                                                 + [tok.eos_token_id]]

    assert (ds[0].prompt, ds[0].completions) == ref(full[:-1], full[-1])
    every = build_dataset(_cfg(tmp_path / "all", _write(tmp_path / "one.jsonl", rows[:1]), paired=False,
                               all_assistant_turns=True), progress=False)
    assert len(every) == 2  # R1 and A1, each after the conversation before it
    assert [(e.prompt, e.completions) for e in every] == [ref(full[:2], R1), ref(full[:4], full[4])]


@pytest.mark.parametrize("row,match", [
    ({"prompt": "What is 2+3?", "chosen": [{"role": "user", "content": "What is 2+4?"}, *_asst(A1)],
      "rejected": [U1, *_asst(A2)]},
     r"row 2: 'prompt' and 'chosen' disagree.*message 0: user content differs at character 10: "
     r"'What is 2\+3\?' vs 'What is 2\+4\?'"),
    ({"prompt": "Q", "chosen": [{"role": "gpt", "content": A1}], "rejected": A2},
     r"row 2: chosen\[0\] has role 'gpt', which the chat template does not know.*use 'assistant'"),
    ({"prompt": "Q", "chosen": [{"from": "gpt", "value": A1}], "rejected": A2}, r"row 2: chosen\[0\].*ShareGPT"),
    ({"chosen": [U1, *_asst(A1)], "rejected": [U2, *_asst(A2)]}, r"row 2: no 'prompt'.*share no leading message"),
    ({"chosen": A1, "rejected": A2}, r"row 2: without 'prompt'.*add a 'prompt' field"),
    ({"prompt": "Q", "chosen": A1}, r"row 2: a pair row needs 'chosen' and 'rejected'.*missing \['rejected'\]"),
])
def test_bad_pair_rows_name_file_row_and_what_to_do(tmp_path, row, match):
    good = {"prompt": "Q", "chosen": A1, "rejected": A2}
    data = _write(tmp_path / "p.jsonl", [good, row])
    with pytest.raises(DataError, match=f"{data}: " + match):
        build_dataset(_cfg(tmp_path, data), progress=False)
    assert not list((tmp_path / "cache").iterdir())  # a failed run leaves nothing in the cache


def test_template_prefix_error_shows_where_and_why():
    tok = load_tokenizer(TINY)
    # a template that renders earlier turns differently once a reply follows (like templates that drop reasoning)
    tok.chat_template = tok.chat_template.replace("message['content']", "(message['content'] if loop.last or "
                                                  "add_generation_prompt else message['content'][:3])")
    enc = ChatEncoder(tok, TokenizeConfig())
    prompt = [U1, R1, U2]
    p = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    f = tok.apply_chat_template(prompt + _asst(A1), tokenize=False)
    at = len(os.path.commonprefix([p, f]))
    with pytest.raises(DataError, match=f"first differ at character {at}: .*rewrites earlier turns"):
        enc.texts(prompt, [_asst(A1)])
    assert "duplicated prompt" in str(prefix_error("a", "b", [U1, U1, *_asst(A1)]))
    assert "duplicated prompt" not in str(prefix_error("a", "b", [U1, *_asst(A1)]))


def test_non_utf8_bytes_name_file_and_row(tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_bytes(json.dumps({"prompt": "Q", "chosen": A1, "rejected": A2}).encode() + b"\n"
                     + b'{"prompt": "Q\xff", "chosen": "a", "rejected": "b"}\n')
    with pytest.raises(DataError, match=f"{data}: row 2: .*utf-8"):
        build_dataset(_cfg(tmp_path, data), progress=False)


def test_identical_pairs_are_skipped_counted_and_named_unless_kept(tmp_path, capsys):
    rows = [{"prompt": "Q1", "chosen": A1, "rejected": A2}, {"prompt": "Q2", "chosen": A1, "rejected": A1},
            {"prompt": "Q3", "chosen": A2, "rejected": A1},
            {"prompt": "Q4", "chosen": A1, "rejected": _asst(A1)}]  # identical once templated
    data = _write(tmp_path / "p.jsonl", rows)
    ds = build_dataset(_cfg(tmp_path, data), progress=False)
    assert len(ds) == 2 and ds.stats["skipped_identical_pairs"] == 2
    assert ds.stats["identical_pair_rows"] == [f"{data}: row 2", f"{data}: row 4"]
    err = capsys.readouterr().err
    assert f"skipped 2 pairs whose chosen equals rejected (first: {data}: row 2; {data}: row 4)" in err
    assert "--keep-identical-pairs" in err
    kept = build_dataset(_cfg(tmp_path, data, keep_identical_pairs=True), progress=False)
    assert len(kept) == 4 and kept[1].completions[0] == kept[1].completions[1]


def test_over_long_examples_are_skipped_by_default_or_truncated_keeping_prompt(tmp_path, capsys):
    tok = load_tokenizer(TINY)
    rows = [{"prompt": f"Q{i}", "chosen": "step " * n, "rejected": "wrong " * m}
            for i, (n, m) in enumerate([(5, 5), (200, 5), (5, 200), (12, 8)])]
    data = _write(tmp_path / "p.jsonl", rows)

    def length(row, key):  # independent count: the whole templated conversation + EOS
        msgs = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row[key]}]
        return len(tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"]) + 1

    seq = 160
    fits = [max(length(r, "chosen"), length(r, "rejected")) <= seq for r in rows]
    assert fits == [True, False, False, True]
    ds = build_dataset(_cfg(tmp_path, data, seq_length=seq), progress=False)
    assert len(ds) == 2 and ds.stats["skipped_too_long"] == 2
    assert ds.stats["too_long_rows"] == [f"{data}: row 2", f"{data}: row 3"]
    assert "skipped 2 examples longer than --seq-length 160" in capsys.readouterr().err
    full = build_dataset(_cfg(tmp_path, data), progress=False)
    cut = build_dataset(_cfg(tmp_path, data, seq_length=seq, truncate_long_examples=True), progress=False)
    assert len(cut) == 4 and cut.stats["sequences_truncated"] == 2
    for a, b in zip(full, cut):
        assert b.prompt == a.prompt  # the prompt is never cut to fit
        for ca, cb in zip(a.completions, b.completions):
            assert cb == ca[: seq - len(a.prompt)]  # keep_start
    with pytest.raises(DataError, match="no example is left to train on: skipped 4 examples longer than"):
        build_dataset(_cfg(tmp_path, data, seq_length=20, truncate_long_examples=True), progress=False)


# ---- the cache -----------------------------------------------------------------------------------
def _rows(n=12):
    return [{"prompt": f"Q{i}", "chosen": A1, "rejected": A2} for i in range(n)]


def test_cache_key_covers_the_tokenisation_code(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, _write(tmp_path / "p.jsonl", _rows()))
    key = cache_key(cfg)
    monkeypatch.setattr(dataset_mod, "code_hash", lambda: "changed")
    assert cache_key(cfg) != key
    # every module of ours that the tokenising path imports (transitively) is hashed
    data_dir = Path(dataset_mod.__file__).parent
    seen, todo = set(), ["dataset.py"]
    while todo:
        name = todo.pop()
        seen.add(name)
        for node in ast.walk(ast.parse((data_dir / name).read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("megatron_redi.data."):
                dep = node.module.rsplit(".", 1)[1] + ".py"
                if dep not in seen:
                    todo.append(dep)
    assert seen - {"batch.py"} <= set(dataset_mod.CODE_FILES)  # batch.py: packing only, not tokens
    assert seen >= {"tokenize.py", "schema.py", "readers.py"}


def test_a_failed_run_leaves_nothing_and_stale_tmp_folders_are_removed(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, _write(tmp_path / "p.jsonl", _rows()))
    cache = tmp_path / "cache"
    calls = []

    def boom(chunk):
        calls.append(1)
        raise KeyboardInterrupt  # an interrupted run, mid-way

    monkeypatch.setattr(dataset_mod, "_encode_chunk", boom)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(cfg, progress=False)
    assert calls and list(cache.iterdir()) == []
    monkeypatch.undo()
    # a killed run's folder (dead pid on this host) goes; a live run's (our parent) stays
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    host = socket.gethostname()
    stale = cache / f"{cache_key(cfg)}.{host}-{dead.pid}-0000aaaa.tmp"
    live = cache / f"{cache_key(cfg)}.{host}-{os.getppid()}-0000bbbb.tmp"
    for d in (stale, live):
        d.mkdir()
        (d / "tokens.bin").write_bytes(b"\0" * 8)
    ds = build_dataset(cfg, progress=False)
    assert len(ds) == 12 and not stale.exists() and live.exists()


def test_two_runs_building_the_same_entry_both_succeed(tmp_path):
    cfg = _cfg(tmp_path, _write(tmp_path / "p.jsonl", _rows(200)))
    target = tmp_path / "cache" / cache_key(cfg)
    target.parent.mkdir(parents=True)
    first = tokenize_to_cache(cfg, target, progress=False)
    second = tokenize_to_cache(cfg, target, progress=False)  # loses the rename: keeps the first's entry
    assert len(first) == len(second) == 200 and list(target.parent.iterdir()) == [target]
    # and truly at once: two processes on a cold cache
    code = ("import sys; from megatron_redi.data.dataset import DataConfig, build_dataset;"
            "from megatron_redi.data.tokenize import TokenizeConfig;"
            f"ds = build_dataset(DataConfig([{str(tmp_path / 'p.jsonl')!r}], {str(TINY)!r}, "
            f"tokenize=TokenizeConfig(seq_length=4096), cache_dir={str(tmp_path / 'c2')!r}, workers=1), "
            "progress=False); print(len(ds), ds[7].prompt == ds[7].prompt)")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o.strip() for o, _ in outs] == ["200 True", "200 True"]
    assert [p.name for p in (tmp_path / "c2").iterdir()] == [target.name]
