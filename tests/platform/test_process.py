"""Forked children (megatron's checkpoint writers) die with their parent instead of lingering as orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

CHILD = r"""
import multiprocessing as mp, os, sys, time
from megatron_redi.platform.process import children_die_with_parent
if sys.argv[1] == "on":
    children_die_with_parent()
def sleep():
    time.sleep(120)
p = mp.get_context("fork").Process(target=sleep)
p.start()
print(p.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("mode", ["on", "off"])
def test_forked_child_dies_when_its_parent_is_killed(mode):
    parent = subprocess.Popen([sys.executable, "-c", CHILD, mode], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    t0 = time.time()
    while _alive(child) and time.time() - t0 < 5:
        time.sleep(0.05)
    try:
        # with the hook the orphan is gone at once; without it (megatron's default) it lingers
        assert _alive(child) == (mode == "off")
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
