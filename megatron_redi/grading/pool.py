"""A small process pool for grading, with per-sample time limits that actually hold.

Why not ``concurrent.futures``: a sample that hangs inside C code (a huge sympy power) ignores
``SIGALRM`` and would block a ``ProcessPoolExecutor`` worker for good. Here each worker streams one
result per sample, the parent watches the time since a worker's last result, and a worker over its
deadline is killed and replaced; that sample is recorded as timed out and the rest of its batch is
handed out again. Workers are started once and reused (``shared_pool``), because a start costs about
a second of imports and warm-up.

Why not ``multiprocessing.Process``: with spawn or forkserver every worker re-runs the caller's
``__main__`` (a script without an ``if __name__ == "__main__"`` guard would start workers recursively,
and one with a model load would load it again per worker), and fork copies a process that may hold
torch / tokenizer threads. Workers here are fresh interpreters (``python -m ..._worker``)
talking over a socket pair.

Requests are :class:`~.graders.GradeRequest` by default; any picklable request works with a task
function ``fn`` and an ``on_failure`` that makes the result of a sample whose worker was lost (the
dataset builder grades whole problems this way, see :mod:`.problem`).
"""

from __future__ import annotations

import atexit
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from .graders import GradeRequest, GradeResult, Verdict, _safe_extract, grade, warm_up

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding megatron_redi/
_READY = -1  # sent once a worker has imported and warmed up; deadlines count from then
_START_DEADLINE_S = 300.0


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def worker_main(conn: Connection) -> None:
    """Worker loop: first message is the parent's ``sys.path`` (so task functions and requests
    unpickle as they do in the parent), then ``(fn, timeout_s, [(index, request), ...])`` batches."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    try:
        paths = conn.recv()
    except (EOFError, OSError):
        return
    sys.path[:0] = [p for p in paths if p not in sys.path]
    warm_up()
    conn.send((_READY, None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        fn, timeout_s, items = msg
        for idx, req in items:
            conn.send((idx, fn(req, timeout_s)))


class _Worker:
    def __init__(self) -> None:
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([_PACKAGE_ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
        fd = child_sock.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"{__package__}._worker", str(fd)],
            pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL, close_fds=True,
        )
        child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.conn.send([p for p in sys.path if p])
        self.items: deque[int] = deque()
        self.ready = False
        self.started = self.last = time.monotonic()

    @property
    def exitcode(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.conn.close()


class GradingPool:
    """Grade many samples on ``workers`` processes (0: in this process, no pool)."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = default_workers() if workers is None else workers
        if self.workers < 0:
            raise ValueError("--grading-workers must be >= 0")
        self._procs: list[_Worker] = []
        self.restarts = 0
        self._failures = 0
        self._on_failure: Callable[[Any, str, bool], Any] = _failed_result

    def _ensure_started(self) -> None:
        while len(self._procs) < self.workers:
            self._procs.append(_Worker())

    def grade(self, requests: Sequence[GradeRequest], timeout_s: float = 10.0,
              progress: Callable[[int], None] | None = None, fn: Callable = grade,
              hard_timeout_s: float | None = None,
              on_failure: Callable[[Any, str, bool], Any] | None = None) -> list[GradeResult]:
        """Results in the order of ``requests``; ``timeout_s`` bounds each sample (all its graders).

        ``hard_timeout_s`` (default ``2 * timeout_s + 10`` per grader) is how long a worker may go
        without returning a result before it is killed. ``fn(request, timeout_s)`` must be a
        module-level function (it is pickled by name). ``on_failure(request, why, timed_out)`` is the
        result of a sample whose worker was killed or died (default: every grader wrong, ``why`` as
        the error); pass it, and ``hard_timeout_s``, for requests that are not ``GradeRequest``.
        """
        if not requests:
            return []
        if self.workers == 0:
            out = []
            for req in requests:
                out.append(fn(req, timeout_s))
                if progress:
                    progress(1)
            return out
        self._ensure_started()
        results: list[GradeResult | None] = [None] * len(requests)
        pending: deque[int] = deque(range(len(requests)))
        batch = max(1, min(64, math.ceil(len(requests) / (4 * self.workers))))
        # The in-worker alarm normally fires first; this deadline only catches hangs in C code.
        deadline = hard_timeout_s or 2 * timeout_s + 10 * len(requests[0].graders)
        self._failures = 0
        self._on_failure = on_failure or _failed_result
        try:
            self._loop(requests, results, pending, batch, deadline, fn, timeout_s, progress)
        except BaseException:
            # Interrupted (Ctrl-C, an error): workers still busy with this call's batches would send
            # stale results into the next call, so they are replaced.
            for i, w in enumerate(self._procs):
                if w.items:
                    w.kill()
                    self._procs[i] = _Worker()
            raise
        return results  # type: ignore[return-value]

    def _loop(self, requests, results, pending, batch, deadline, fn, timeout_s, progress) -> None:
        done = 0
        while done < len(requests):
            now = time.monotonic()
            for w in list(self._procs):
                if not w.items and pending:
                    chunk = [pending.popleft() for _ in range(min(batch, len(pending)))]
                    w.items.extend(chunk)
                    w.last = max(w.last, now)
                    try:
                        w.conn.send((fn, timeout_s, [(i, requests[i]) for i in chunk]))
                    except OSError:  # died before its first task: hand the chunk back
                        w.items.clear()
                        pending.extendleft(reversed(chunk))
                        self._replace(w, "", results, pending, requests, progress)
            busy = {w.conn: w for w in self._procs if w.items}
            for conn in wait(list(busy), timeout=0.5):
                w = busy[conn]
                try:
                    while conn.poll():
                        idx, res = conn.recv()
                        w.last = time.monotonic()
                        if idx == _READY:
                            w.ready = True
                            continue
                        results[idx] = res
                        w.items.remove(idx)
                        done += 1
                        self._failures = 0
                        if progress:
                            progress(1)
                except (EOFError, OSError):
                    done += self._replace(w, f"grading worker died (exit code {w.exitcode})",
                                          results, pending, requests, progress)
            now = time.monotonic()
            for w in list(self._procs):
                if w.items and w.ready and now - w.last > deadline:
                    done += self._replace(w, f"grading worker killed after {deadline:.0f}s without result",
                                          results, pending, requests, progress, timed_out=True)
                elif w.items and not w.ready and now - w.started > _START_DEADLINE_S:
                    done += self._replace(w, f"grading worker not ready after {_START_DEADLINE_S:.0f}s",
                                          results, pending, requests, progress)

    def _replace(self, w: _Worker, why: str, results, pending, requests, progress,
                 timed_out: bool = False) -> int:
        """Kill ``w``: its current sample fails with ``why``, the rest of its batch is re-queued."""
        w.kill()
        self.restarts += 1
        self._failures += 1
        if self._failures > 2 * self.workers + 2:
            self.close()
            raise RuntimeError(f"grading workers keep dying ({why or 'at start-up'})")
        self._procs[self._procs.index(w)] = _Worker()
        if not w.items:
            return 0
        current = w.items.popleft()
        pending.extendleft(reversed(w.items))
        results[current] = self._on_failure(requests[current], why, timed_out)
        if progress:
            progress(1)
        return 1

    def close(self) -> None:
        for w in self._procs:
            try:
                w.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        for w in self._procs:
            try:
                w.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            w.kill()
        self._procs = []

    def __enter__(self) -> GradingPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _failed_result(req: GradeRequest, why: str, timed_out: bool) -> GradeResult:
    """A sample whose worker was lost: every grader wrong, with what extraction finds."""
    res = GradeResult(timed_out=timed_out, error=why)
    for g in req.graders:
        res.verdicts[g] = Verdict(_safe_extract(req, g), False)
    return res


_SHARED: dict[int, GradingPool] = {}


def shared_pool(workers: int | None = None) -> GradingPool:
    """One pool per worker count for the life of the process: runs, re-grades and tests in one
    process pay the worker start-up once."""
    workers = default_workers() if workers is None else workers
    if workers not in _SHARED:
        _SHARED[workers] = GradingPool(workers)
    return _SHARED[workers]


@atexit.register
def _close_shared() -> None:
    for pool in _SHARED.values():
        pool.close()
    _SHARED.clear()
