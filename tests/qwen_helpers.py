"""A real Qwen2.5 tokenizer for tests, built once per test process from dashscope's published BPE ranks."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import pytest


@functools.cache
def qwen25_dir() -> Path:
    """Folder of the Qwen2.5 tokenizer (built in ~3 s); skips the test when dashscope is not installed."""
    from megatron_redi.data.qwen_tokenizer import build_qwen25_tokenizer, qwen_ranks_path

    try:
        qwen_ranks_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return build_qwen25_tokenizer(Path(tempfile.mkdtemp(prefix="qwen25-tok-")))
