"""Helpers to run multi-process (gloo) jobs from tests: free ports, torchrun launches, tiny assets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "megatron_redi" / "assets" / "tiny_qwen2"
SAMPLE = ROOT / "megatron_redi" / "assets" / "sample"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    e = dict(os.environ)
    e.update(PYTHONWARNINGS="ignore", HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
             OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + e.get("PYTHONPATH", ""))
    return e


def torchrun(script: str | Path, args: list[str], nproc: int = 2, timeout: int = 240,
             check: bool = True) -> subprocess.CompletedProcess:
    """Run `script` under torchrun with `nproc` CPU ranks (nproc=1 runs plain python)."""
    if nproc == 1:
        cmd = [sys.executable, str(script), *args]
        e = env()
        e.update(MASTER_PORT=str(free_port()))
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
               f"--master-port={free_port()}", "--master-addr=127.0.0.1", str(script), *args]
        e = env()
    p = subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} failed ({p.returncode}):\nSTDOUT\n{p.stdout[-4000:]}\nSTDERR\n{p.stderr[-6000:]}")
    return p


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def launch_trainer(args: list[str], log: str | Path, nproc: int = 2) -> subprocess.Popen:
    """pretrain_redi.py under torchrun in the background, output to `log` (for kill / signal tests)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--master-port={free_port()}",
           str(ROOT / "pretrain_redi.py"), *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for(cond, timeout: float = 120.0) -> bool:
    """Poll `cond()` every 0.2 s until it holds (True) or `timeout` seconds pass (False)."""
    import time

    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return True
        time.sleep(0.2)
    return False


def kill_all(p: subprocess.Popen) -> None:
    """The launcher and every worker (torchrun gives workers their own sessions; SIGKILL also ends a
    SIGSTOPped one)."""
    import psutil

    try:
        procs = [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    p.wait()
    psutil.wait_procs(procs, timeout=30)
