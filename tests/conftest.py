"""Shared fixtures: a one-process gloo world with megatron's parallel state, for in-process tests."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests never read or fill the user's tokenisation cache (~/.cache/megatron_redi/data): each test process
# gets its own, inherited by the subprocesses it starts (tests/helpers_dist.env copies os.environ).
os.environ["REDI_CACHE_DIR"] = tempfile.mkdtemp(prefix="redi-test-cache-")
atexit.register(shutil.rmtree, os.environ["REDI_CACHE_DIR"], True)


@pytest.fixture(scope="session")
def megatron_world():
    """World of one process (TP=PP=CP=DP=1), created once per test worker."""
    from tests.helpers_dist import free_port

    os.environ["MASTER_PORT"] = str(free_port())
    from megatron_redi.platform.distributed import ParallelConfig, init_distributed, init_model_parallel

    init_distributed()
    init_model_parallel(ParallelConfig())
    yield
