"""Shared fixtures: a one-process gloo world with megatron's parallel state, for in-process tests."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def megatron_world():
    """World of one process (TP=PP=CP=DP=1), created once per test worker."""
    from tests.helpers_dist import free_port

    os.environ["MASTER_PORT"] = str(free_port())
    from megatron_redi.platform.distributed import ParallelConfig, init_distributed, init_model_parallel

    init_distributed()
    init_model_parallel(ParallelConfig())
    yield
