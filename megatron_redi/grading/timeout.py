"""One SIGALRM time limit around a call, for the graders and the builder's problem grading.

The limit needs the main thread of a process (pool workers run their tasks there); elsewhere (a thread)
or with no positive limit the call simply runs, and the process pool's hard deadline is the backstop.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class ItemTimeout(BaseException):
    """BaseException so that libraries' ``except Exception`` (math-verify's own) cannot swallow the limit."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise ItemTimeout


def run_with_timeout(fn: Callable[[], T], seconds: float | None, on_timeout: T) -> T:
    """``fn()`` under a SIGALRM timer of ``seconds``; ``on_timeout`` if it runs too long.

    Inside ``fn``, an ``except ItemTimeout: raise`` lets the limit through handlers that catch everything.
    """
    if seconds is None or seconds <= 0 or not hasattr(signal, "setitimer"):
        return fn()
    if threading.current_thread() is not threading.main_thread():
        return fn()
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except ItemTimeout:  # also catches an alarm that lands while the timer is being disarmed
        return on_timeout
    finally:
        signal.signal(signal.SIGALRM, previous)
