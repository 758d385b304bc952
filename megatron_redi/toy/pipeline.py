"""The toy reproduction, run for real: teacher -> builder -> SFT -> Stage 2 (every method, every seed) ->
HF export -> held-out evaluation -> results.

Every step is the project's own command line (``pretrain_redi.py`` under torchrun, ``tools/*.py``), run as
a subprocess with its log in ``OUT/logs/``. A step whose output exists is skipped, so an interrupted run
picks up where it stopped; a failed step stops the run and names its log.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from megatron_redi.toy.config import METHODS, ToyConfig
from megatron_redi.toy.errors import tally
from megatron_redi.toy.teacher import iter_problems, teacher_row, write_teacher_data

ROOT = Path(__file__).resolve().parents[2]
# Settings that make two runs' Stage 1 (and its evaluation) the same; Stage 2 settings may differ.
STAGE1_FIELDS = ("teacher", "model", "train_problems", "heldout_problems", "data_seed", "sft_epochs",
                 "sft_global_batch", "sft_lr", "sft_seed", "eval_n", "eval_temperature", "eval_top_p",
                 "eval_max_tokens", "seq_length", "nproc", "parallel_flags")


def settings(cfg: ToyConfig) -> dict:
    """`cfg` as it reads back from OUT/config.json (tuples become lists), for comparing runs."""
    return json.loads(json.dumps(asdict(cfg)))


class StepFailed(RuntimeError):
    """A pipeline step exited non-zero; the message names the step, its command and its log."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Run:
    """One trained model: its name, checkpoint folder, metrics file and (after export) HF folder."""

    name: str
    method: str
    seed: int
    save: Path
    metrics: Path
    hf: Path
    eval_dir: Path
    lr: float


class Pipeline:
    """Runs the steps of one toy reproduction into `out`; `log` prints one line per step."""

    def __init__(self, cfg: ToyConfig, out: str | Path, log: Callable[[str], None] = print) -> None:
        self.cfg, self.out, self.log = cfg, Path(out), log
        self.python = sys.executable
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                    "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
        self.step_no = 0
        self.steps_run = 0  # steps this invocation really ran (the rest were done before)
        self.t0 = time.monotonic()

    # -- plumbing ---------------------------------------------------------------------------------

    def _skipped(self, name: str, *done: Path) -> bool:
        """Count step `name`; True (and say so) when one of its `done` outputs exists already."""
        self.step_no += 1
        if any(p.exists() for p in done):
            self.log(f"[{self.step_no:>2}] {name}: done before, skipped")
            return True
        return False

    def _run(self, name: str, cmd: list[str], done: Path, *also_done: Path) -> None:
        """Run `cmd` unless `done` (or any of `also_done`) exists; its output goes to logs/<name>.log."""
        if self._skipped(name, done, *also_done):
            return
        logs = self.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        start = time.monotonic()
        self.log(f"[{self.step_no:>2}] {name} ...")
        self.steps_run += 1
        with open(log_path, "w") as f:
            f.write(" ".join(cmd) + "\n\n")
            f.flush()
            rc = subprocess.run(cmd, cwd=ROOT, env=self.env, stdout=f, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise StepFailed(f"step {name!r} failed (exit {rc}); log: {log_path}\n" + "\n".join(tail))
        self.log(f"     {name}: {time.monotonic() - start:.0f} s (total {self._elapsed()})")

    def _elapsed(self) -> str:
        s = int(time.monotonic() - self.t0)
        return f"{s // 60}m{s % 60:02d}s"

    def _torchrun(self, script: str) -> list[str]:
        return [self.python, "-m", "torch.distributed.run", "--nproc-per-node", str(self.cfg.nproc),
                "--master-port", str(_free_port()), script]

    # -- steps ------------------------------------------------------------------------------------

    def teacher(self) -> None:
        """Teacher generations (raw.jsonl) and held-out problems (heldout.jsonl)."""
        data = self.out / "data"
        if self._skipped("teacher", data / "heldout.jsonl"):
            return
        self.log(f"[{self.step_no:>2}] teacher: {self.cfg.train_problems} training problems x "
                 f"{self.cfg.teacher.generations} generations, {self.cfg.heldout_problems} held-out problems")
        write_teacher_data(data, train=self.cfg.train_problems, heldout=self.cfg.heldout_problems,
                           seed=self.cfg.data_seed, cfg=self.cfg.teacher)

    def model_dir(self) -> Path:
        """The student's config and tokenizer (a BPE trained on the teacher's text, digits split as in Qwen2)."""
        from megatron_redi.data.chat_template import QWEN25_MATH_SYSTEM_PROMPT
        from megatron_redi.data.tiny_assets import build_tiny_model_dir

        path = self.out / "model"
        if self._skipped("student model", path / "config.json"):
            return path
        import random

        m = self.cfg.model
        rng, corpus = random.Random(12345), [QWEN25_MATH_SYSTEM_PROMPT, "system user assistant"]
        for p in iter_problems(400, seed=12345, cfg=self.cfg.teacher, held_out=False):
            row = teacher_row(p, rng, self.cfg.teacher, seed=12345)
            corpus += [row["problem"], *row["generations"]]
        build_tiny_model_dir(path, corpus=corpus, vocab_size=m.vocab_size, qwen_pretokenizer=True,
                             hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
                             num_hidden_layers=m.num_hidden_layers, num_attention_heads=m.num_attention_heads,
                             num_key_value_heads=m.num_key_value_heads,
                             max_position_embeddings=self.cfg.seq_length)
        self.log(f"[{self.step_no:>2}] student model: {path}")
        return path

    def build_data(self, model: Path) -> Path:
        built = self.out / "built"
        self._run("builder", [self.python, "tools/build_redi_data.py", "--input", str(self.out / "data/raw.jsonl"),
                              "--output-dir", str(built), "--reverify", "--reverify-combine", "replace",
                              "--tokenizer-model", str(model), "--seed", str(self.cfg.data_seed), "--no-progress"],
                  built / "report.json")
        return built

    def _train_flags(self, model: Path) -> list[str]:
        return ["--model-config", str(model), "--tokenizer-model", str(model), "--seq-length",
                str(self.cfg.seq_length), "--packing", "ffd", "--micro-batch-tokens", str(4 * self.cfg.seq_length),
                "--log-interval", "5", "--no-progress", *self.cfg.parallel_flags]

    def sft(self, model: Path, built: Path) -> Run:
        c = self.cfg
        run = self._run_paths("sft", "sft", c.sft_seed, c.sft_lr)
        self._run("stage1_sft", [*self._torchrun("pretrain_redi.py"), *self._train_flags(model),
                                 "--loss-type", "sft", "--data-path", str(built / "sft.jsonl"),
                                 "--global-batch-size", str(c.sft_global_batch), "--train-epochs", str(c.sft_epochs),
                                 "--lr", str(c.sft_lr), "--lr-warmup-fraction", "0.05", "--seed", str(c.sft_seed),
                                 "--save", str(run.save), "--metrics-file", str(run.metrics)],
                  run.save / "latest_checkpointed_iteration.txt")
        return run

    def reference(self, model: Path, built: Path, sft: Run) -> Path:
        """DPO's reference log-probs: the pairs scored once by the frozen SFT model."""
        scored = self.out / "built" / "pairs_scored.jsonl"
        self._run("score_reference", [*self._torchrun("tools/score_reference.py"), "--pretrained-checkpoint",
                                      str(sft.save), "--model-config", str(model), "--tokenizer-model", str(model),
                                      "--data-path", str(built / "pairs.jsonl"), "--seq-length",
                                      str(self.cfg.seq_length), "--output", str(scored), "--no-progress"], scored)
        return scored

    def _run_paths(self, name: str, method: str, seed: int, lr: float) -> Run:
        return Run(name, method, seed, self.out / "checkpoints" / name, self.out / "metrics" / f"{name}.jsonl",
                   self.out / "hf" / name, self.out / "eval" / name, lr)

    def stage2(self, model: Path, built: Path, sft: Run, method: str, seed: int, lr: float, name: str) -> Run:
        c, m = self.cfg, METHODS[method]
        run = self._run_paths(name, method, seed, lr)
        data = self.reference(model, built, sft) if m.needs_reference else built / "pairs.jsonl"
        run.metrics.parent.mkdir(parents=True, exist_ok=True)
        self._run(f"stage2_{name}", [*self._torchrun("pretrain_redi.py"), *self._train_flags(model), *m.flags,
                                     "--data-path", str(data), "--pretrained-checkpoint", str(sft.save),
                                     "--global-batch-size", str(c.stage2_global_batch), "--train-iters",
                                     str(c.stage2_iters), "--lr", str(lr), "--lr-warmup-fraction", "0.1",
                                     "--seed", str(seed), "--save", str(run.save), "--metrics-file", str(run.metrics)],
                  run.save / "latest_checkpointed_iteration.txt", run.hf / "config.json")
        return run

    def export(self, run: Run) -> None:
        self._run(f"export_{run.name}", [self.python, "tools/convert_checkpoint.py", "mcore-to-hf", "--load",
                                         str(run.save), "--output", str(run.hf), "--no-progress"],
                  run.hf / "config.json")

    def evaluate(self, run: Run, seed: int) -> dict:
        """pass@1 of `run` on the held-out problems with sampling seed `seed`; returns the benchmark summary."""
        c = self.cfg
        out = run.eval_dir if seed == run.seed else run.eval_dir.with_name(f"{run.eval_dir.name}_seed{seed}")
        self._run(f"eval_{out.name}", [self.python, "tools/eval_math.py", "--model", str(run.hf), "--benchmarks",
                                       str(self.out / "data/heldout.jsonl"), "--output-dir", str(out), "--n",
                                       str(c.eval_n), "--temperature", str(c.eval_temperature), "--top-p",
                                       str(c.eval_top_p), "--max-tokens", str(c.eval_max_tokens), "--seed", str(seed),
                                       "--backend", "hf", "--device", "cpu", "--dtype", "float32", "--prompt-style",
                                       "plain", "--batch-size", "400", "--grader", "math_verify", "--no-progress",
                                       "--no-plot", "--overwrite"],
                  out / "summary.json")
        summary = json.loads((out / "summary.json").read_text())
        entry = _heldout_entry(summary, out)
        with open(out / "samples" / "heldout.jsonl") as f:
            entry["errors"] = dict(tally([json.loads(line) for line in f]))
        return entry

    # -- the whole run ----------------------------------------------------------------------------

    def check_folder(self) -> None:
        """ValueError when `out` holds a run with other settings (its results would be mixed with ours)."""
        old = self.out / "config.json"
        if old.exists() and json.loads(old.read_text()) != settings(self.cfg):
            raise ValueError(f"{self.out} holds a run with other settings ({old}); give a new --output")

    def run(self) -> dict:
        """Every step; returns the results (also written to OUT/results.json). ValueError: see
        :meth:`check_folder`."""
        c = self.cfg
        self.check_folder()
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(json.dumps(settings(c), indent=2) + "\n")
        self.teacher()
        model = self.model_dir()
        built = self.build_data(model)
        sft = self.sft(model, built)
        self.export(sft)
        results: list[dict] = []
        for seed in c.seeds:
            results.append(self._record(sft, "sft", seed, self.evaluate(sft, seed)))
        runs = {}
        for seed in c.seeds:
            for method in c.methods:
                run = self.stage2(model, built, sft, method, seed, c.stage2_lr, f"{method}_seed{seed}")
                self.export(run)
                results.append(self._record(run, method, seed, self.evaluate(run, seed)))
                runs[run.name] = run
        curves = {name: str(r.metrics) for name, r in runs.items() if r.seed == c.seeds[0]}
        if c.collapse_lr_factor > 0:
            lr = c.stage2_lr * c.collapse_lr_factor
            run = self.stage2(model, built, sft, "redi_sym", c.seeds[0], lr, f"redi_sym_lr{lr:g}_seed{c.seeds[0]}")
            self.export(run)
            results.append(self._record(run, "redi_sym_high_lr", c.seeds[0], self.evaluate(run, c.seeds[0])))
            curves[run.name] = str(run.metrics)
        elapsed = self._elapsed()
        previous = self.out / "results.json"
        if self.steps_run == 0 and previous.exists():  # nothing ran now: keep the time of the run that did
            elapsed = json.loads(previous.read_text()).get("elapsed", elapsed)
        out = {"config": asdict(c), "runs": results, "sft_metrics": str(sft.metrics), "curves": curves,
               "data_report": json.loads((built / "report.json").read_text()), "elapsed": elapsed}
        (self.out / "results.json").write_text(json.dumps(out, indent=2) + "\n")
        return out

    @staticmethod
    def _record(run: Run, method: str, seed: int, entry: dict) -> dict:
        return {"method": method, "seed": seed, "lr": run.lr, "checkpoint": str(run.save), "hf": str(run.hf),
                **entry}

    def clean(self) -> None:
        """Drop the Stage 2 Megatron checkpoints (the SFT checkpoint, the HF exports and everything measured
        stay, so another Stage 2 setting can start from this run's SFT: :meth:`reuse_stage1`)."""
        for path in (self.out / "checkpoints").glob("*"):
            if path.name != "sft":
                shutil.rmtree(path, ignore_errors=True)

    def reuse_stage1(self, other: str | Path) -> None:
        """Start from another run's teacher data, student, SFT checkpoint and SFT evaluations.

        Raises ValueError when that run used other Stage 1 or evaluation settings (its results would not be
        comparable) or has no SFT checkpoint.
        """
        other = Path(other)
        theirs = json.loads((other / "config.json").read_text()) if (other / "config.json").exists() else None
        if theirs is None or not (other / "checkpoints/sft/latest_checkpointed_iteration.txt").exists():
            raise ValueError(f"--reuse-sft {other}: no finished toy run with an SFT checkpoint there")
        mine = settings(self.cfg)
        differ = [k for k in STAGE1_FIELDS if theirs.get(k) != mine[k]]
        if differ:
            raise ValueError(f"--reuse-sft {other}: Stage 1 or evaluation settings differ ({', '.join(differ)})")
        self.out.mkdir(parents=True, exist_ok=True)
        for part in ("data", "model", "built", "checkpoints/sft", "hf/sft", "metrics/sft.jsonl"):
            src, dst = other / part, self.out / part
            if dst.exists():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
        for src in [other / "eval" / "sft", *(other / "eval").glob("sft_seed*")]:  # SFT's own, no Stage 2 run
            if src.exists() and not (self.out / "eval" / src.name).exists():
                shutil.copytree(src, self.out / "eval" / src.name)


def _heldout_entry(summary: dict, out: Path) -> dict:
    """pass@1 and its SEM over the n per-sample-index accuracies, in %, from an eval summary.json."""
    benches = summary.get("benchmarks", {})
    if "heldout" not in benches:
        raise ValueError(f"{out / 'summary.json'}: no 'heldout' benchmark (found {sorted(benches)})")
    b = benches["heldout"]
    return {"pass@1": 100 * b["pass@1"], "sem": 100 * b["sem"], "samples": b["num_samples"], "eval_dir": str(out)}
