"""Tiny local tokenizers: the default one is the bundled asset byte for byte; Qwen2's pre-tokenizer splits
every digit, as Qwen2.5 does (arithmetic tasks need it)."""

import json

from transformers import AutoTokenizer

from megatron_redi.data.tiny_assets import build_tiny_model_dir, build_tiny_tokenizer
from tests.helpers_dist import ROOT


def test_default_rebuild_is_the_bundled_asset(tmp_path):
    build_tiny_tokenizer(tmp_path)
    bundled = ROOT / "megatron_redi/assets/tiny_qwen2/tokenizer.json"
    assert (tmp_path / "tokenizer.json").read_bytes() == bundled.read_bytes()


def test_qwen_pretokenizer_splits_digits_and_config_matches_vocab(tmp_path):
    corpus = ["We add 12345 and 678 column by column."] * 50 + ["system user assistant"]
    build_tiny_model_dir(tmp_path / "q", corpus=corpus, vocab_size=400, qwen_pretokenizer=True, hidden_size=32)
    build_tiny_tokenizer(tmp_path / "plain", vocab_size=400, corpus=corpus)
    q, plain = AutoTokenizer.from_pretrained(tmp_path / "q"), AutoTokenizer.from_pretrained(tmp_path / "plain")
    digits = [t for t in q.tokenize("We add 12345 and 678") if any(c.isdigit() for c in t)]
    assert digits == list("12345678")
    assert any(len([c for c in t if c.isdigit()]) > 1 for t in plain.tokenize("We add 12345 and 678"))
    cfg = json.loads((tmp_path / "q/config.json").read_text())
    assert cfg["vocab_size"] == len(q) and cfg["hidden_size"] == 32
    assert q.decode(q("We add 12345 and 678")["input_ids"]) == "We add 12345 and 678"
