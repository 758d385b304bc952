"""The tokenizer must never emit an id the model has no embedding row for."""

from __future__ import annotations

from pathlib import Path

from megatron_redi.data.tokenize import open_tokenizer
from megatron_redi.model.config import Qwen2Shape


def tokenizer_max_id(tokenizer_dir: str | Path, flag: str = "--tokenizer-model") -> tuple[int, int]:
    """(largest id the tokenizer can emit, special tokens included; its vocabulary size)."""
    tok = open_tokenizer(tokenizer_dir, flag)
    ids = [len(tok) - 1, *(i for i in tok.all_special_ids if i is not None)]
    return max(ids), len(tok)


def check_vocab_fits(tokenizer_dir: str | Path, shape: Qwen2Shape, flag: str = "--tokenizer-model") -> None:
    """ValueError naming both files when the tokenizer can emit an id >= the model's vocab_size (an
    IndexError or silent NaNs in training; an embedding smaller than the tokenizer on export)."""
    top, size = tokenizer_max_id(tokenizer_dir, flag)
    if top >= shape.vocab_size:
        raise ValueError(f"{flag} {tokenizer_dir} can emit token id {top} ({size} tokens, specials included), "
                         f"but the model config {shape.source} has vocab_size {shape.vocab_size}: use the "
                         f"tokenizer that belongs to this model, or a config whose vocab_size exceeds {top}")
