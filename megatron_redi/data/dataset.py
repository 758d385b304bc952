"""From files to tokenised, cached training units and then to packed micro-batches.

Tokenisation runs in worker processes in batches (the Rust tokenizer does the heavy lifting) and is
cached on disk under a key made of the data files' content hash, the tokenizer files, the chat
template and every length setting, so a changed input or setting never reuses a stale cache.
"""

from __future__ import annotations

import hashlib
import math
import os
import uuid
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from megatron_redi.data.batch import Example, MicroBatch, pack
from megatron_redi.data.errors import DataError
from megatron_redi.data.indexed import TokenizedDataset, TokenizedWriter
from megatron_redi.data.schema import iter_rows, parse_pair_row, parse_sft_row
from megatron_redi.data.tokenize import ChatEncoder, TokenizeConfig, load_tokenizer

CACHE_FORMAT = 1


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


def cache_key(cfg: DataConfig) -> str:
    """Content of every data file, the tokenizer files (template included) and all settings."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((CACHE_FORMAT, cfg.paired, cfg.need_reference, cfg.tokenize.max_prompt_length,
                   cfg.tokenize.seq_length, cfg.tokenize.system_prompt)).encode())
    for p in cfg.data_path:
        if not Path(p).exists():
            raise FileNotFoundError(f"--data-path: {p} does not exist")
        _hash_path(h, Path(p))
    tok_dir = Path(cfg.tokenizer_model)
    if not tok_dir.is_dir():
        raise FileNotFoundError(f"--tokenizer-model: {tok_dir} is not a directory holding an HF tokenizer")
    for f in sorted(tok_dir.iterdir()):
        if f.is_file() and (f.suffix in (".json", ".jinja", ".txt", ".model", ".tiktoken") or f.name == "merges"):
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


def _encode_chunk(rows: list[tuple[dict, str]]):
    """Parse and tokenise a chunk of rows in one batched tokenizer call. Returns units and stats, or
    the first DataError's message (raised by the parent so it names the file and row)."""
    enc, cfg = _ENC, _CFG
    assert enc is not None and cfg is not None
    parsed, texts = [], []
    try:
        for row, where in rows:
            try:
                if cfg.paired:
                    r = parse_pair_row(row, where, cfg.need_reference)
                    prompt, comps = r["prompt"], [r["chosen"], r["rejected"]]
                    refs = (r["ref_chosen_logp"], r["ref_rejected_logp"]) if "ref_chosen_logp" in r else None
                else:
                    prompt, c = parse_sft_row(row, where)
                    comps, refs = [c], None
                p_text, c_texts = enc.texts(prompt, comps)
            except DataError as e:
                msg = str(e)
                return ("error", msg if msg.startswith(where) else f"{where}: {msg}")
            parsed.append((len(texts), len(c_texts), refs))
            texts += [p_text, *c_texts]
        ids = _batch_ids(enc.tok, texts) if texts else []
        out = []
        eos = enc.tok.eos_token_id
        before = (enc.stats.prompts_truncated, enc.stats.sequences_truncated)
        for start, n_comp, refs in parsed:
            prompt = enc.truncate_prompt(ids[start])
            fitted = [enc.fit(prompt, ids[start + 1 + j] + [eos]) for j in range(n_comp)]
            keep = min(len(p) for p, _ in fitted)  # one shared prompt per pair
            # int32 arrays: pickling them back to the parent is ~50x cheaper than lists of ints
            out.append((np.asarray(prompt[len(prompt) - keep:], dtype=np.int32),
                        [np.asarray(c, dtype=np.int32) for _, c in fitted], refs))
        stats = (enc.stats.prompts_truncated - before[0], enc.stats.sequences_truncated - before[1])
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


def tokenize_to_cache(cfg: DataConfig, target: Path, progress: bool = True) -> TokenizedDataset:
    """Tokenise every row into `target` (atomically). Raises DataError naming the file and row."""
    workers = cfg.workers or min(os.cpu_count() or 1, 8)
    writer = TokenizedWriter(target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}"), cfg.need_reference)
    stats = {"examples": 0, "tokens": 0, "prompts_truncated": 0, "sequences_truncated": 0}
    bar = tqdm(desc="tokenize", unit="rows", disable=not progress, leave=False)

    def consume(result):
        if result[0] == "error":
            raise DataError(result[1])
        _, units, (pt, st) = result
        for prompt, comps, refs in units:
            writer.add(prompt, comps, refs)
            stats["examples"] += 1
            stats["tokens"] += sum(len(prompt) + len(c) for c in comps)
        stats["prompts_truncated"] += pt
        stats["sequences_truncated"] += st
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
    finally:
        bar.close()
    ds = writer.close(stats)
    try:
        os.replace(ds.path, target)  # another process may have won the race: keep theirs
    except OSError:
        import shutil

        shutil.rmtree(ds.path, ignore_errors=True)
    return TokenizedDataset(target)


def build_dataset(cfg: DataConfig, progress: bool = True) -> TokenizedDataset:
    """Open the cached tokenisation of `cfg`, building it if needed. Under torch.distributed one rank
    per node builds while the others wait; an error on any rank is raised on every rank."""
    if not cfg.data_path:
        raise ValueError("--data-path: give at least one JSONL/Parquet file or save_to_disk folder")
    load_tokenizer(cfg.tokenizer_model)  # validates folder, template and EOS on every rank
    target = Path(cfg.cache_dir or default_cache_dir()) / cache_key(cfg)
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    builder = not distributed or os.environ.get("LOCAL_RANK", "0") == "0"
    error, hit = None, (target / "stats.json").is_file()
    if builder and not hit:
        target.parent.mkdir(parents=True, exist_ok=True)
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
    return ds


def load_examples(cfg: DataConfig, progress: bool = True) -> tuple[TokenizedDataset, dict]:
    ds = build_dataset(cfg, progress)
    return ds, dict(ds.stats)


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
