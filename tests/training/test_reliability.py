"""Never train on garbage, never hang, never lose a checkpoint: each case is a real run that fails in
the way a user's would, on every rank, with a message naming the cause."""

from __future__ import annotations

import pytest

from megatron_redi.checkpointing.layout import complete_checkpoints, latest_iteration
from tests.helpers_dist import ROOT, SAMPLE, TINY, kill_all, launch_trainer, torchrun, wait_for

pytestmark = pytest.mark.slow  # launches processes (torchrun / tools); `-m 'not slow'` skips them


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("d") / "pairs.jsonl"
    out.write_text("\n".join((SAMPLE / "pairs.jsonl").read_text().splitlines()[:32]) + "\n")
    return out


def _args(data, *extra):
    return ["--model-config", str(TINY), "--tokenizer-model", str(TINY), "--data-path", str(data),
            "--global-batch-size", "8", "--micro-batch-size", "2", "--train-iters", "6", "--lr", "1e-3",
            "--seq-length", "512", "--no-progress", *extra]


def _both_ranks_say(p, text):
    assert p.returncode != 0
    for r in (0, 1):
        assert f"[rank {r}] error: " in p.stderr and text in p.stderr, p.stderr[-3000:]


def test_non_finite_loss_stops_every_rank_and_is_never_saved(tmp_path, data):
    ck = tmp_path / "ck"
    p = torchrun(ROOT / "pretrain_redi.py", _args(data, "--lr", "1e9", "--lr-warmup-fraction", "0", "--save",
                                                  str(ck), "--save-interval", "1"), nproc=2, check=False)
    _both_ranks_say(p, "iteration 2: non-finite loss and grad norm")
    assert complete_checkpoints(ck) == [1] and latest_iteration(ck) == 1


def test_frozen_peer_ends_the_run_within_the_distributed_timeout(tmp_path, data):
    """SIGSTOP one rank mid-run: the other leaves its collective after --distributed-timeout-minutes
    (6 s here), names the timeout and exits; nothing waits for the 10-minute default."""
    import signal
    import time

    import psutil

    metrics, log = tmp_path / "m.jsonl", tmp_path / "log.txt"
    p = launch_trainer(_args(data, "--train-iters", "100000", "--metrics-file", str(metrics),
                      "--distributed-timeout-minutes", "0.1"), log)
    try:
        assert wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 2)
        workers = psutil.Process(p.pid).children()
        workers[-1].send_signal(signal.SIGSTOP)
        t0 = time.time()
        assert wait_for(lambda: not workers[0].is_running() or workers[0].status() == psutil.STATUS_ZOMBIE,
                         timeout=90), "the live rank kept waiting for its frozen peer"
        assert time.time() - t0 < 90
        text = log.read_text()
        assert "[rank 0] error" in text or "[rank 1] error" in text, text[-3000:]
    finally:
        kill_all(p)


def test_a_second_run_on_the_same_save_folder_stops_at_once(tmp_path, data):
    """Run A holds --save; run B with the same folder stops on every rank naming A's process; A goes on
    and, stopped by SIGTERM, leaves its own checkpoints intact."""
    import signal

    import psutil

    from tests.helpers_dist import read_jsonl

    ck, metrics, log = tmp_path / "ck", tmp_path / "m.jsonl", tmp_path / "a.txt"
    a = launch_trainer(_args(data, "--train-iters", "100000", "--metrics-file", str(metrics), "--save", str(ck),
                      "--save-interval", "5"), log)
    try:
        assert wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 1)
        b = torchrun(ROOT / "pretrain_redi.py", _args(data, "--save", str(ck)), nproc=2, check=False)
        _both_ranks_say(b, f"--save {ck} is in use by another run (pid ")
        assert a.poll() is None  # A is unaffected
        psutil.Process(a.pid).children()[-1].send_signal(signal.SIGTERM)
        assert a.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        kill_all(a)
    done = complete_checkpoints(ck)
    assert done and done[-1] == len(read_jsonl(metrics)) and latest_iteration(ck) == done[-1]


def test_a_truncated_latest_checkpoint_falls_back_naming_the_file(tmp_path, data):
    """Saves at 2, 4, 6; iter 6's data file is cut in half: --load names that file, resumes from 4 and
    continues the uninterrupted curve; with every checkpoint cut, the error names them all."""
    from tests.helpers_dist import read_jsonl

    ck = tmp_path / "ck"
    full = _args(data, "--metrics-file", str(tmp_path / "full.jsonl"), "--save", str(ck), "--save-interval", "2")
    p = torchrun(ROOT / "pretrain_redi.py", full, nproc=2)
    assert all(f"saved iteration {i} to {ck / f'iter_{i:07d}'}" in p.stdout for i in (2, 4, 6)), p.stdout[-2000:]
    victim = ck / "iter_0000006" / "__0_0.distcp"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    # the converter and the scorer read --save folders the same way: the unreadable one named, 4 used
    p = torchrun(ROOT / "tools" / "convert_checkpoint.py", ["mcore-to-hf", "--load", str(ck), "--output",
                                                            str(tmp_path / "hf"), "--no-progress"], nproc=1)
    assert f"skipping an unreadable checkpoint: {victim}: truncated" in p.stderr, p.stderr[-2000:]
    p = torchrun(ROOT / "pretrain_redi.py", _args(data, "--metrics-file", str(tmp_path / "resumed.jsonl"), "--load",
                                                  str(ck)), nproc=2)
    assert f"skipping an unreadable checkpoint: {victim}: truncated" in p.stdout, p.stdout[-3000:]
    assert f"resumed from {ck / 'iter_0000004'} at iteration 4" in p.stdout
    got = read_jsonl(tmp_path / "resumed.jsonl")
    want = read_jsonl(tmp_path / "full.jsonl")[4:]
    assert [(r["iteration"], r["loss"]) for r in got] == [(r["iteration"], r["loss"]) for r in want]
    for it in (2, 4):
        f = ck / f"iter_{it:07d}" / "__0_0.distcp"
        f.write_bytes(f.read_bytes()[:100])
    p = torchrun(ROOT / "pretrain_redi.py", _args(data, "--load", str(ck)), nproc=2, check=False)
    _both_ranks_say(p, f"--load {ck}: no readable checkpoint")
    assert str(ck / "iter_0000002" / "__0_0.distcp") in p.stderr


def test_a_save_that_cannot_be_written_gives_one_message_on_every_rank(tmp_path, data):
    """Files limited to 1 MB (RLIMIT_FSIZE: what a full disk does to a writer): each rank exits with a
    message naming the save folder and its free space; no partial checkpoint folder is left."""
    import resource
    import signal
    import subprocess
    import sys

    from tests.helpers_dist import env, free_port

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    ck = tmp_path / "ck"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={free_port()}",
           str(ROOT / "pretrain_redi.py"), *_args(data, "--save", str(ck), "--save-interval", "2")]
    p = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300, preexec_fn=limit)
    _both_ranks_say(p, f"saving iteration 2 to {ck} failed (")
    assert "GiB free there" in p.stderr
    assert complete_checkpoints(ck) == [] and not list(ck.glob("iter_*"))


def test_resume_refuses_changed_run_settings_unless_named(tmp_path, data):
    """Saved at 3, resumed with another seed, global batch and lr, and with appended data: one error on
    every rank listing each difference; naming them (and Megatron's scheduler flag) resumes."""
    ck = tmp_path / "ck"
    torchrun(ROOT / "pretrain_redi.py", _args(data, "--save", str(ck), "--exit-interval", "3"), nproc=2)
    more = tmp_path / "more.jsonl"
    more.write_text(data.read_text() + (SAMPLE / "pairs.jsonl").read_text().splitlines()[40] + "\n")
    changed = ["--load", str(ck), "--seed", "7", "--global-batch-size", "4", "--lr", "2e-3"]
    p = torchrun(ROOT / "pretrain_redi.py", _args(more, *changed), nproc=2, check=False)
    _both_ranks_say(p, "was saved by a run with other settings")
    for part in ("seed: checkpoint 42, now 7", "global_batch_size: checkpoint 8, now 4", "lr: checkpoint 0.001",
                 "num_examples: checkpoint 32, now 33", "data_sha: checkpoint"):
        assert part in p.stderr, (part, p.stderr[-3000:])
    assert "--override-checkpoint-settings data_sha global_batch_size lr num_examples seed" in p.stderr
    # naming a schedule setting (lr) lets the new schedule win, as Megatron's --override-opt_param-scheduler
    ok = [*changed, "--override-checkpoint-settings", "seed", "global_batch_size", "data_sha", "num_examples", "lr"]
    p = torchrun(ROOT / "pretrain_redi.py", _args(more, *ok), nproc=2)
    assert "resuming with changed settings, as asked" in p.stdout and "at iteration 3" in p.stdout


def test_load_of_a_missing_folder_is_an_error_and_an_empty_one_starts_fresh(tmp_path, data):
    p = torchrun(ROOT / "pretrain_redi.py", _args(data, "--load", str(tmp_path / "typo")), nproc=1, check=False)
    assert p.returncode == 2 and f"--load {tmp_path / 'typo'} does not exist" in p.stderr
    (tmp_path / "empty").mkdir()
    p = torchrun(ROOT / "pretrain_redi.py", _args(data, "--load", str(tmp_path / "empty"), "--train-iters", "1"),
                 nproc=1)
    assert f"--load {tmp_path / 'empty'} holds no checkpoint yet: starting a new run" in p.stdout
    # megatron-core's import-time notices about TE / Apex are not repeated on every rank
    assert "not installed" not in p.stderr and "Warning" not in p.stderr, p.stderr[-2000:]
