"""Children die with their parent: no orphan keeps a dead rank's connections or files busy.

Reason: megatron-core's checkpoint writer forks one process per write bucket
(`FileSystemWriterAsync.write_preloaded_data_multiproc`). A rank killed mid-save left those children
alive as orphans holding its sockets, and its surviving peer hung (seen in 5 of 21 trials). Linux's
PR_SET_PDEATHSIG makes the kernel SIGKILL a forked child when the thread that forked it dies; it is set
here in every child forked from the main thread (a child of a short-lived helper thread would die with
that thread, so those are left alone).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading

_PR_SET_PDEATHSIG = 1
_state = {"installed": False, "from_main": False, "parent": 0}


def _before_fork() -> None:
    _state["from_main"] = threading.current_thread() is threading.main_thread()
    _state["parent"] = os.getpid()


def _in_child() -> None:
    if _state["from_main"]:
        _set_parent_death_signal()
        if os.getppid() != _state["parent"]:  # the parent died before the signal was armed
            os._exit(1)


def _set_parent_death_signal() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: nothing to do
        pass


def children_die_with_parent() -> None:
    """Install the fork hooks once per process (Linux only; elsewhere a no-op)."""
    if _state["installed"] or not sys.platform.startswith("linux"):
        return
    os.register_at_fork(before=_before_fork, after_in_child=_in_child)
    _state["installed"] = True
