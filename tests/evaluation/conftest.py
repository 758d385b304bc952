"""Shared fixtures: a tiny random Qwen2 model built from the bundled config and tokenizer (no downloads)."""

from pathlib import Path

import pytest
from eval_checks import TINY


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    out = tmp_path_factory.mktemp("tiny_qwen2_model")
    torch.manual_seed(1234)
    Qwen2ForCausalLM(Qwen2Config.from_pretrained(TINY)).save_pretrained(out)
    AutoTokenizer.from_pretrained(TINY).save_pretrained(out)
    return out


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    # The suite runs two pytest workers on two cores: more torch threads only contend (10x slower).
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
