"""Load training rows from files and turn them into tokenised `Example`s and micro-batches."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tqdm import tqdm

from megatron_redi.data.batch import Example, MicroBatch, pack
from megatron_redi.data.schema import DataError, iter_rows, parse_pair_row, parse_sft_row
from megatron_redi.data.tokenize import ChatEncoder, TokenizeConfig, load_tokenizer


@dataclass
class DataConfig:
    data_path: list[str] = field(default_factory=list)
    tokenizer_model: str = ""
    paired: bool = True
    need_reference: bool = False
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)


def load_examples(cfg: DataConfig, progress: bool = True) -> tuple[list[Example], dict]:
    """Parse and tokenise every row; any malformed row raises naming its file and row."""
    if not cfg.data_path:
        raise ValueError("--data-path: give at least one JSONL/Parquet file or save_to_disk folder")
    tok = load_tokenizer(cfg.tokenizer_model)
    enc = ChatEncoder(tok, cfg.tokenize)
    examples: list[Example] = []
    for path in cfg.data_path:
        for row, where in tqdm(iter_rows(path), desc=f"tokenize {path}", disable=not progress,
                               unit="rows", leave=False):
            try:
                if cfg.paired:
                    r = parse_pair_row(row, where, cfg.need_reference)
                    prompt = enc.encode_prompt(r["prompt"])
                    comps = [enc.encode_completion(r["prompt"], r[k]) for k in ("chosen", "rejected")]
                    fitted = [enc.fit(prompt, c) for c in comps]
                    # a pair shares one prompt: use the shorter of the two truncated prompts
                    keep = min(len(p) for p, _ in fitted)
                    prompt = prompt[len(prompt) - keep:]
                    comps = [c for _, c in fitted]
                    refs = (r["ref_chosen_logp"], r["ref_rejected_logp"]) if "ref_chosen_logp" in r else None
                    examples.append(Example(prompt, comps, refs))
                else:
                    p_msgs, c_msgs = parse_sft_row(row, where)
                    prompt, comp = enc.fit(enc.encode_prompt(p_msgs), enc.encode_completion(p_msgs, c_msgs))
                    examples.append(Example(prompt, [comp]))
            except DataError as e:
                msg = str(e)
                raise DataError(msg if msg.startswith(where) else f"{where}: {msg}") from None
    enc.stats.examples = len(examples)
    stats = {"examples": len(examples), "prompts_truncated": enc.stats.prompts_truncated,
             "sequences_truncated": enc.stats.sequences_truncated,
             "tokens": sum(e.num_tokens for e in examples)}
    return examples, stats


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
