"""The Qwen2.5 tokenizer built from dashscope's BPE ranks reproduces token ids published for Qwen2/Qwen2.5."""

from __future__ import annotations

import pytest

from megatron_redi.data.tokenize import load_tokenizer
from tests.qwen_helpers import qwen25_dir

# Encodings of Qwen2 / Qwen2.5 tokenizers published in public repositories' tests and probes.
PUBLISHED = {
    "Hello world": [9707, 1879],
    "Hello\nworld": [9707, 198, 14615],
    "Hello, world! 123": [9707, 11, 1879, 0, 220, 16, 17, 18],
    "2+2=?": [17, 10, 17, 19884],
    "What is the capital of France?": [3838, 374, 279, 6722, 315, 9625, 30],
    "你好世界": [108386, 99489],
    "def foo(): return 42": [750, 15229, 4555, 470, 220, 19, 17],
    "🚀": [145836],
    "assistant\n": [77091, 198],
    "Qwen3-ASR: test 123!": [48, 16948, 18, 12, 1911, 49, 25, 1273, 220, 16, 17, 18, 0],
}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(qwen25_dir())


@pytest.mark.parametrize("text", list(PUBLISHED))
def test_published_encodings(tok, text):
    assert tok(text, add_special_tokens=False)["input_ids"] == PUBLISHED[text]
    assert tok.decode(PUBLISHED[text]) == text


def test_special_tokens_and_chat_template(tok):
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|file_sep|>"]) == \
        [151643, 151644, 151645, 151664]
    assert len(tok) == 151665 and tok.eos_token_id == 151643
    ids = tok.apply_chat_template([{"role": "user", "content": "Hello world"}], tokenize=True,
                                  add_generation_prompt=True, return_dict=True)["input_ids"]
    # ... <|im_start|>user\nHello world<|im_end|>\n<|im_start|>assistant\n
    assert ids[-10:] == [151644, 872, 198, 9707, 1879, 151645, 198, 151644, 77091, 198]
    assert tok.decode(ids).startswith("<|im_start|>system\nPlease reason step by step")


def test_pre_tokenizer_splits_with_qwen2_regex(tok):
    """Words are split by Qwen2's published pattern before BPE (no token spans two pieces)."""
    import regex

    from megatron_redi.data.qwen_tokenizer import QWEN2_PATTERN

    text = "x   y\n\n  It's 2024: \\frac{1}{2}\t done!!\n"
    pieces = regex.findall(QWEN2_PATTERN, text)
    assert "".join(pieces) == text and len(pieces) > 10
    ids = []
    for piece in pieces:
        ids += tok(piece, add_special_tokens=False)["input_ids"]
    assert tok(text, add_special_tokens=False)["input_ids"] == ids
