"""From files to tokenised, cached training units and then to packed micro-batches.

Tokenisation runs in worker processes in batches (the Rust tokenizer does the heavy lifting) and is
cached on disk under a key made of the data files' content hash, the tokenizer files, the chat
template, every tokenisation setting and the source of the modules that make the tokens (`CODE_FILES`), so a
changed input, setting or tokenisation code never reuses a stale cache.

A cache entry is written into `<key>.<host>-<pid>-<rand>.tmp` and renamed into place; a failed run removes its
folder, and a later run removes those of dead processes (or older than a day), so nothing half-written is ever
stepped around. Two runs building the same entry at once both succeed (the second rename loses and is dropped).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import socket
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from megatron_redi.data.batch import Example, MicroBatch, pack
from megatron_redi.data.errors import DataError
from megatron_redi.data.indexed import TokenizedDataset, TokenizedWriter
from megatron_redi.data.schema import iter_rows, parse_pair_row, parse_sft_units
from megatron_redi.data.tokenize import ChatEncoder, TokenizeConfig, load_tokenizer

CACHE_FORMAT = 2
# The modules whose code decides the tokens of a cache entry; their source is part of the cache key.
CODE_FILES = ("dataset.py", "tokenize.py", "schema.py", "readers.py", "chat_template.py", "indexed.py", "errors.py")
STALE_TMP_SECONDS = 24 * 3600
EXAMPLE_ROWS = 5  # rows named in a warning


@dataclass
class DataConfig:
    data_path: list[str] = field(default_factory=list)
    tokenizer_model: str = ""
    paired: bool = True
    need_reference: bool = False
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    cache_dir: str | None = None
    workers: int = 0  # 0 = automatic
    chunk_rows: int = 256


def default_cache_dir() -> Path:
    return Path(os.environ.get("REDI_CACHE_DIR", Path.home() / ".cache" / "megatron_redi" / "data"))


def _hash_path(h, p: Path) -> None:
    files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    for f in files:
        h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)


def content_fingerprint(paths: list[str] | str) -> str:
    """Hash of the bytes (and relative names) of data files or folders: what a resumed run must see again."""
    h = hashlib.blake2b(digest_size=16)
    for p in [paths] if isinstance(paths, str) else paths:
        _hash_path(h, Path(p))
    return h.hexdigest()


def code_hash() -> str:
    """Hash of the source of the modules that turn rows into tokens (`CODE_FILES`)."""
    h = hashlib.blake2b(digest_size=16)
    here = Path(__file__).resolve().parent
    for name in CODE_FILES:
        h.update(name.encode())
        h.update((here / name).read_bytes())
    return h.hexdigest()


def fingerprints(cfg: DataConfig) -> dict[str, str]:
    """`data_sha` (every data file's bytes) and `tokenizer_sha` (its defining files): read once per start,
    used by the cache key and recorded in the dataset's stats (checkpoints compare them on --load)."""
    for p in cfg.data_path:
        if not Path(p).exists():
            raise FileNotFoundError(f"--data-path: {p} does not exist")
    return {"data_sha": content_fingerprint(cfg.data_path), "tokenizer_sha": tokenizer_fingerprint(cfg.tokenizer_model)}


def cache_key(cfg: DataConfig, prints: dict[str, str] | None = None) -> str:
    """Content of every data file, the tokenizer files (template included), all tokenisation settings and
    the tokenisation code. `prints`: `fingerprints(cfg)` when already computed."""
    prints = prints or fingerprints(cfg)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((CACHE_FORMAT, code_hash(), cfg.paired, cfg.need_reference,
                   sorted(asdict(cfg.tokenize).items()), prints["data_sha"], prints["tokenizer_sha"])).encode())
    return h.hexdigest()


def _tokenizer_files(tokenizer_model: str) -> list[Path]:
    """The files that define a tokenizer (vocabulary, merges, config, chat template), never weights."""
    tok_dir = Path(tokenizer_model)
    if not tok_dir.is_dir():
        raise FileNotFoundError(f"--tokenizer-model: {tok_dir} is not a directory holding an HF tokenizer")
    return [f for f in sorted(tok_dir.iterdir())
            if f.is_file() and (f.suffix in (".json", ".jinja", ".txt", ".model", ".tiktoken") or f.name == "merges")]


def tokenizer_fingerprint(tokenizer_model: str) -> str:
    """Hash of the tokenizer's defining files (see `_tokenizer_files`)."""
    h = hashlib.blake2b(digest_size=16)
    for f in _tokenizer_files(tokenizer_model):
        _hash_path(h, f)
    return h.hexdigest()


# ---- worker side ---------------------------------------------------------------------------------
_ENC: ChatEncoder | None = None
_CFG: DataConfig | None = None


def _init_worker(cfg: DataConfig) -> None:
    global _ENC, _CFG
    _CFG = cfg
    _ENC = ChatEncoder(load_tokenizer(cfg.tokenizer_model), cfg.tokenize)


def _batch_ids(tok, texts: list[str]) -> list[list[int]]:
    """Token ids of many texts in one Rust call; `encode_batch_fast` skips offsets (~1.7x faster)."""
    backend = getattr(tok, "backend_tokenizer", None)
    fast = getattr(backend, "encode_batch_fast", None)
    if fast is not None:
        return [e.ids for e in fast(texts, add_special_tokens=False)]
    return tok(texts, add_special_tokens=False)["input_ids"]


def _new_stats() -> dict:
    return {"prompts_truncated": 0, "sequences_truncated": 0, "skipped_too_long": 0,
            "skipped_identical_pairs": 0, "too_long_rows": [], "identical_pair_rows": []}


def _count(stats: dict, key: str, rows_key: str, where: str) -> None:
    stats[key] += 1
    if len(stats[rows_key]) < EXAMPLE_ROWS:
        stats[rows_key].append(where)


def _encode_chunk(rows: list[tuple[dict, str]]):
    """Parse and tokenise a chunk of rows in one batched tokenizer call. Returns units and stats, or
    the first DataError's message (raised by the parent so it names the file and row)."""
    enc, cfg = _ENC, _CFG
    assert enc is not None and cfg is not None
    stats = _new_stats()
    parsed, texts = [], []
    try:
        for row, where in rows:
            try:
                if cfg.paired:
                    r = parse_pair_row(row, where, cfg.need_reference)
                    units = [(r["prompt"], [r["chosen"], r["rejected"]])]
                    refs = (r["ref_chosen_logp"], r["ref_rejected_logp"]) if "ref_chosen_logp" in r else None
                else:
                    units = [(p, [c]) for p, c in parse_sft_units(row, where, cfg.tokenize.all_assistant_turns)]
                    refs = None
                for prompt, comps in units:
                    p_text, c_texts = enc.texts(prompt, comps)
                    if cfg.paired and c_texts[0] == c_texts[1] and not cfg.tokenize.keep_identical_pairs:
                        _count(stats, "skipped_identical_pairs", "identical_pair_rows", where)
                        continue
                    parsed.append((len(texts), len(c_texts), refs, where))
                    texts += [p_text, *c_texts]
            except DataError as e:
                msg = str(e)
                return ("error", msg if msg.startswith(where) else f"{where}: {msg}")
        ids = _batch_ids(enc.tok, texts) if texts else []
        out = []
        eos = enc.tok.eos_token_id
        before = (enc.stats.prompts_truncated, enc.stats.sequences_truncated)
        for start, n_comp, refs, where in parsed:
            prompt = enc.truncate_prompt(ids[start])
            fitted = [enc.fit(prompt, ids[start + 1 + j] + [eos]) for j in range(n_comp)]
            if any(c is None for c in fitted):  # a pair is skipped whole: one side alone is no pair
                _count(stats, "skipped_too_long", "too_long_rows", where)
                continue
            # int32 arrays: pickling them back to the parent is ~50x cheaper than lists of ints
            out.append((np.asarray(prompt, dtype=np.int32), [np.asarray(c, dtype=np.int32) for c in fitted], refs))
        stats["prompts_truncated"] = enc.stats.prompts_truncated - before[0]
        stats["sequences_truncated"] = enc.stats.sequences_truncated - before[1]
        return ("ok", out, stats)
    except DataError as e:
        return ("error", str(e))


# ---- parent side ---------------------------------------------------------------------------------
def _chunks(cfg: DataConfig):
    for path in cfg.data_path:
        it = iter_rows(path)
        while True:
            chunk = list(islice(it, cfg.chunk_rows))
            if not chunk:
                break
            yield chunk


def _tmp_name(target: Path) -> Path:
    return target.with_name(f"{target.name}.{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_tmp(cache_dir: Path) -> list[Path]:
    """Remove the `.tmp` folders of tokenisation runs that are gone: a dead process on this host, or any
    older than a day. Returns what was removed."""
    removed = []
    host = socket.gethostname()
    for d in cache_dir.glob("*.tmp"):
        try:
            owner, pid = d.name[:-4].split(".", 1)[1].rsplit("-", 2)[:2]
            dead = owner == host and not _alive(int(pid))
        except (IndexError, ValueError):
            dead = False
        try:
            old = time.time() - d.stat().st_mtime > STALE_TMP_SECONDS
        except OSError:
            continue
        if dead or old:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def tokenize_to_cache(cfg: DataConfig, target: Path, progress: bool = True) -> TokenizedDataset:
    """Tokenise every row into `target` (atomically). Raises DataError naming the file and row; on any
    failure (or KeyboardInterrupt) its temporary folder is removed."""
    workers = cfg.workers or min(os.cpu_count() or 1, 8)
    tmp = _tmp_name(target)
    writer = TokenizedWriter(tmp, cfg.need_reference)
    stats = {"examples": 0, "tokens": 0, **_new_stats()}
    bar = tqdm(desc="tokenize", unit="rows", disable=not progress, leave=False)

    def consume(result):
        if result[0] == "error":
            raise DataError(result[1])
        _, units, st = result
        for prompt, comps, refs in units:
            writer.add(prompt, comps, refs)
            stats["examples"] += 1
            stats["tokens"] += sum(len(prompt) + len(c) for c in comps)
        for k, v in st.items():
            stats[k] = stats[k] + v if isinstance(v, int) else (stats[k] + v)[:EXAMPLE_ROWS]
        bar.update(len(units))

    try:
        if workers <= 1:
            _init_worker(cfg)
            for chunk in _chunks(cfg):
                consume(_encode_chunk(chunk))
        else:
            import multiprocessing as mp

            # spawn: the parent may hold threads (gloo/NCCL) that make fork unsafe
            with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(cfg,)) as pool:
                for result in pool.imap(_encode_chunk, _chunks(cfg)):
                    consume(result)
        writer.close(stats)
        try:
            os.replace(tmp, target)
        except OSError:  # another run finished the same entry first: keep theirs
            if not (target / "stats.json").is_file():
                raise
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return TokenizedDataset(target)


def skip_warnings(stats: dict, seq_length: int) -> list[str]:
    """One line per kind of skipped example, with the count, the first rows and the flag that keeps them."""
    out = []
    if stats.get("skipped_too_long"):
        out.append(f"skipped {stats['skipped_too_long']} examples longer than --seq-length {seq_length} (first: "
                   f"{'; '.join(stats['too_long_rows'])}); raise --seq-length, bound prompts with "
                   f"--max-prompt-length, or pass --truncate-long-examples")
    if stats.get("skipped_identical_pairs"):
        out.append(f"skipped {stats['skipped_identical_pairs']} pairs whose chosen equals rejected (first: "
                   f"{'; '.join(stats['identical_pair_rows'])}); pass --keep-identical-pairs to train on them")
    return out


def build_dataset(cfg: DataConfig, progress: bool = True) -> TokenizedDataset:
    """Open the cached tokenisation of `cfg`, building it if needed. Under torch.distributed one rank
    per node builds while the others wait; an error on any rank is raised on every rank."""
    if not cfg.data_path:
        raise ValueError("--data-path: give at least one JSONL/Parquet file or save_to_disk folder")
    load_tokenizer(cfg.tokenizer_model)  # validates folder, template and EOS on every rank
    prints = fingerprints(cfg)
    target = Path(cfg.cache_dir or default_cache_dir()) / cache_key(cfg, prints)
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    builder = not distributed or os.environ.get("LOCAL_RANK", "0") == "0"
    error, hit = None, (target / "stats.json").is_file()
    if builder and not hit:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(target.parent)
        try:
            tokenize_to_cache(cfg, target, progress)
        except (DataError, ValueError, OSError) as e:
            error = str(e)
    if distributed:
        errors = [None] * dist.get_world_size()
        dist.all_gather_object(errors, error)
        error = next((e for e in errors if e), None)
    if error:
        raise DataError(error)
    ds = TokenizedDataset(target)
    ds.stats["cache"] = "hit" if hit else "built"
    ds.stats["cache_path"] = str(target)
    ds.stats.update(prints)
    warnings = skip_warnings(ds.stats, cfg.tokenize.seq_length)
    if not distributed or dist.get_rank() == 0:
        for w in warnings:
            print(f"[megatron-redi] warning: {w}", file=sys.stderr, flush=True)
    if len(ds) == 0:
        raise DataError(f"--data-path {' '.join(map(str, cfg.data_path))}: no example is left to train on"
                        + (": " + "; ".join(warnings) if warnings else " (the files hold no rows)"))
    return ds


def load_examples(cfg: DataConfig, progress: bool = True) -> tuple[TokenizedDataset, dict]:
    """The dataset and its counts (examples, tokens, truncations, skips; the row lists are left out)."""
    ds = build_dataset(cfg, progress)
    return ds, {k: v for k, v in ds.stats.items() if not isinstance(v, list)}


def pad_multiple(tp: int, cp: int, sequence_parallel: bool) -> int:
    """Sequence length multiple needed by the layout: 2*CP chunks, and TP shards under SP."""
    m = 2 * cp if cp > 1 else 1
    if sequence_parallel:
        m = m * tp // math.gcd(m, tp)
    return m


def make_micro_batches(examples: list[Example], micro_batch_size: int, multiple: int,
                       pad_id: int = 0) -> list[MicroBatch]:
    """Consecutive groups of `micro_batch_size` units, each packed into one padding-free row."""
    return [pack(examples[i : i + micro_batch_size], multiple, pad_id)
            for i in range(0, len(examples), micro_batch_size)]


def first_fit_decreasing(sizes: list[int], capacity: int) -> list[list[int]]:
    """Bins of unit indices whose sizes sum to <= capacity (a unit larger than a bin gets its own).
    Deterministic: ties keep input order, so every pipeline stage and rerun builds the same bins."""
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for b, r in enumerate(room):
            if sizes[i] <= r:
                bins[b].append(i)
                room[b] -= sizes[i]
                break
        else:
            bins.append([i])
            room.append(capacity - sizes[i])
    return [sorted(b) for b in bins]


def make_packed_micro_batches(examples: list[Example], capacity: int, multiple: int,
                              pad_id: int = 0) -> tuple[list[MicroBatch], float]:
    """First-fit-decreasing bins of at most `capacity` tokens, each one padding-free micro-batch.
    Returns the micro-batches and the packing efficiency (real tokens / capacity x bins)."""
    sizes = [e.num_tokens for e in examples]
    bins = first_fit_decreasing(sizes, capacity)
    mbs = [pack([examples[i] for i in b], multiple, pad_id) for b in bins]
    slots = sum(max(capacity, sum(sizes[i] for i in b)) for b in bins)
    return mbs, (sum(sizes) / slots if slots else 1.0)
