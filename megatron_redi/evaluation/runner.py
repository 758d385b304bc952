"""Orchestration: benchmarks -> prompts -> generation -> grading -> records -> reports.

Output directory layout::

    OUT/manifest.json            versions, sampling, seed, prompts, grader, model weight hash
    OUT/samples/<bench>.jsonl    one record per sample (the source of every reported number)
    OUT/summary.json, summary.md, accuracy_vs_length.png
    OUT/grader_audit.jsonl       samples where the two graders disagree (with --grader-audit)

Resume works in fixed chunks of problems (chunk c = problems [c*size, (c+1)*size)): a chunk's records
are appended only once it is generated and graded, so after an interruption every complete chunk is
kept and the rest is generated again with the same seeds. A run whose generation settings differ from
the manifest's refuses to mix its samples in.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from megatron_redi.grading.graders import GradeRequest
from megatron_redi.grading.pool import GradingPool, shared_pool

from .backends import (
    GenRequest,
    create_backend,
    derive_seed,
    load_tokenizer,
    resolve_backend_name,
    stop_token_ids,
)
from .benchmarks import Benchmark, Problem, gold_strings, load, resolve
from .config import EvalConfig, GradingConfig
from .errors import BenchmarkError, EvalError
from .prompts import render
from .report import (
    build_summary,
    hash_model_weights,
    package_versions,
    plot_accuracy_vs_length,
    sha256_file,
    summarize_benchmark,
    summary_markdown,
    write_json,
)

SAMPLES_DIR = "samples"
MANIFEST = "manifest.json"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
PLOT = "accuracy_vs_length.png"
AUDIT = "grader_audit.jsonl"


class LineProgress:
    """Progress for a log file: a plain line at every 25% and at the end, never ``\\r`` or escape codes."""

    def __init__(self, total: int, desc: str, stream=None, **_ignored) -> None:
        self.total, self.desc, self.n, self._next = total, desc, 0, 0.25
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.total and self.n / self.total >= self._next and self.n < self.total:
            while self.n / self.total >= self._next:
                self._next += 0.25
            self._line()

    def _line(self) -> None:
        print(f"{self.desc}: {self.n}/{self.total} ({time.monotonic() - self.t0:.1f} s)", file=self.stream,
              flush=True)

    def close(self) -> None:
        if self.total:
            self._line()
            self.total = 0


class _NoProgress:
    def update(self, k: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _tqdm(total: int, desc: str, disable: bool = False, **kw):
    """A tqdm bar on a terminal; plain lines (:class:`LineProgress`) when stderr is a file or a pipe."""
    if disable:
        return _NoProgress()
    if not sys.stderr.isatty():
        return LineProgress(total, desc)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, **kw)


def describe_run(resolved: dict, sampling) -> str:
    """The console's first line about generation: backend, device, model, dtype, sampling."""
    parts = [f"{k}={resolved[k]}" for k in ("backend", "device", "dtype") if k in resolved]
    parallel = [f"{k}={resolved[k]}" for k in ("tensor_parallel_size", "data_parallel_size", "batch_size",
                                                "max_model_len") if resolved.get(k) is not None]
    s = sampling
    return (f"generation: {' '.join(parts)} model={resolved.get('model')}"
            + (f" ({' '.join(parallel)})" if parallel else "")
            + f"\nsampling: n={s.n} temperature={s.temperature} top_p={s.top_p} max_tokens={s.max_tokens} "
              f"seed={s.seed}" + (" (greedy)" if s.temperature == 0 else ""))


# ----------------------------------------------------------------------------------- record files
def _read(path: Path) -> tuple[list[dict], bool]:
    """(records, whether a torn last line was dropped)."""
    if not path.exists():
        return [], False
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if i == len(lines):
                print(f"warning: {path}, line {i}: incomplete last line dropped", file=sys.stderr)
                return out, True
            raise EvalError(f"{path}, line {i}: not valid JSON ({exc.msg})") from exc
    return out, False


def read_records(path: Path) -> list[dict]:
    """Records of a samples file. A torn last line (a write cut short) is dropped; any other bad
    line is an error naming the line."""
    return _read(path)[0]


def _dump(rec: dict) -> str:
    return json.dumps(rec, ensure_ascii=False)


def write_records(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(_dump(rec) + "\n")
    os.replace(tmp, path)


def append_records(path: Path, records: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(_dump(r) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------------------------------- grading
def grade_records(records: list[dict], gcfg: GradingConfig, pool: GradingPool,
                  progress: Callable[[int], None] | None = None) -> None:
    """(Re)grade records in place from their ``response``, ``gold`` and ``gold_mode``."""
    reqs = [GradeRequest(r["response"], tuple(r["gold"]), r.get("gold_mode", "any"), gcfg.graders,
                         gcfg.extraction, gcfg.require_think) for r in records]
    results = pool.grade(reqs, gcfg.timeout_s, progress)
    for rec, res in zip(records, results):
        v = res.verdicts[gcfg.grader]
        rec["extracted_answer"] = v.extracted
        rec["correct"] = bool(v.correct)
        rec["grader"] = gcfg.grader
        rec["grading_timed_out"] = res.timed_out
        rec["grading_error"] = res.error
        if gcfg.audit:
            rec["audit"] = {g: {"extracted_answer": res.verdicts[g].extracted,
                                "correct": bool(res.verdicts[g].correct)} for g in gcfg.graders[1:]}
        else:
            rec.pop("audit", None)


def _pool_for(gcfg: GradingConfig) -> GradingPool:
    return shared_pool(gcfg.workers)


# ----------------------------------------------------------------------------------------- resume
def complete_problems(records: list[dict], n: int) -> dict[int, list[dict]]:
    """problem index -> its n records (sorted by sample index); problems missing samples are left out
    and a duplicated sample keeps its last record."""
    by_problem: dict[int, dict[int, dict]] = defaultdict(dict)
    for rec in records:
        by_problem[int(rec["problem_index"])][int(rec["sample_index"])] = rec
    return {p: [s[j] for j in range(n)] for p, s in by_problem.items() if sorted(s) == list(range(n))}


def plan_chunks(bench: Benchmark, done: set[int], chunk_size: int) -> list[list[Problem]]:
    """Chunks (fixed boundaries over problem indices) that still have a problem without samples."""
    chunks: dict[int, list[Problem]] = defaultdict(list)
    for p in bench.problems:
        chunks[p.index // chunk_size].append(p)
    return [probs for _, probs in sorted(chunks.items()) if any(p.index not in done for p in probs)]


def default_chunk_size(backend: str, cfg: EvalConfig) -> int:
    if backend == "vllm":
        return 256  # vLLM batches a whole chunk; small chunks would idle GPUs on each chunk's tail
    return max(1, (4 * cfg.backend.batch_size) // cfg.sampling.n)


def _generation_key(cfg: EvalConfig, backend: str, chunk_size: int, weights_sha: str | None) -> dict:
    key = {
        "model_weights_sha256": weights_sha or str(Path(cfg.model).resolve()),
        "sampling": vars(cfg.sampling).copy(),
        "prompt": vars(cfg.prompt).copy(),
        "backend": backend,
    }
    if backend == "hf":  # the HF backend's samples depend on how rows are batched (see backends.py)
        key["hf"] = {"chunk_size": chunk_size, "batch_size": cfg.backend.batch_size,
                     "dtype": cfg.backend.dtype}
    return key


# -------------------------------------------------------------------------------------------- run
def check_model_dir(model: str) -> Path:
    path = Path(model).expanduser()
    if not path.is_dir():
        raise EvalError(f"--model: directory not found: {model}")
    if not (path / "config.json").is_file():
        raise EvalError(f"--model: {model} has no config.json (not a Hugging Face model directory)")
    return path


def _check_resume(manifest_path: Path, key: dict, benches: list[Benchmark]) -> None:
    try:
        old = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EvalError(f"{manifest_path}: unreadable ({exc}); use --overwrite") from exc
    old_key = old.get("generation_key", {})
    diff = sorted(k for k in set(old_key) | set(key) if old_key.get(k) != key.get(k))
    if diff:
        raise EvalError(
            f"{manifest_path.parent} holds samples generated with other settings (differs in: "
            f"{', '.join(diff)}); use --overwrite to discard them or choose another --output-dir"
        )
    for b in benches:
        prev = old.get("benchmarks", {}).get(b.key)
        if prev and prev.get("sha256") != b.sha256:
            raise EvalError(f"benchmark file {b.spec.path} changed since the samples in "
                            f"{manifest_path.parent} were generated; use --overwrite")


def run(cfg: EvalConfig, log: Callable[[str], None] = print, command: list[str] | None = None,
        backend=None) -> dict:
    """Evaluate ``cfg.model`` on ``cfg.benchmarks``; returns the summary (also written to disk).

    ``backend``: an already built backend of ``cfg.backend.name`` to use (and leave open), e.g. to run
    several evaluations on one loaded vLLM engine; by default one is built when needed and closed."""
    cfg.validate()
    model_dir = check_model_dir(cfg.model)
    specs = [resolve(b, cfg.fields) for b in cfg.benchmarks]
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        raise BenchmarkError(f"--benchmarks: a benchmark is listed twice ({', '.join(keys)})")
    benches = [load(s, cfg.limit) for s in specs]

    out = Path(cfg.output_dir)
    samples_dir = out / SAMPLES_DIR
    manifest_path = out / MANIFEST
    backend_name = backend.name if backend is not None else resolve_backend_name(cfg.backend.name)
    chunk_size = cfg.chunk_size or default_chunk_size(backend_name, cfg)
    weights = hash_model_weights(model_dir) if cfg.hash_weights else {"sha256": None, "files": {}}
    key = _generation_key(cfg, backend_name, chunk_size, weights["sha256"])
    if cfg.overwrite and out.exists():
        for p in list(samples_dir.glob("*.jsonl")) + [out / f for f in (MANIFEST, SUMMARY_JSON, SUMMARY_MD,
                                                                       PLOT, AUDIT)]:
            if p.exists():
                p.unlink()
    elif manifest_path.exists():
        _check_resume(manifest_path, key, benches)
    samples_dir.mkdir(parents=True, exist_ok=True)
    if cfg.sampling.temperature == 0 and cfg.sampling.n > 1:
        log(f"warning: temperature 0 is greedy decoding: the {cfg.sampling.n} samples per problem will "
            "be (nearly) identical")

    tokenizer = load_tokenizer(str(model_dir))
    stop_ids = stop_token_ids(tokenizer, str(model_dir))
    manifest = {
        "status": "running",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command if command is not None else sys.argv,
        "model": str(model_dir.resolve()),
        "model_weights": weights,
        "model_config_sha256": sha256_file(model_dir / "config.json"),
        "versions": package_versions(),
        "sampling": vars(cfg.sampling).copy(),
        "seed": cfg.sampling.seed,
        "prompt": vars(cfg.prompt).copy(),
        "stop_token_ids": stop_ids,
        "grading": cfg.grading.describe(),
        "backend": {**vars(cfg.backend), "name": backend_name, "requested": cfg.backend.name,
                    "chunk_size": chunk_size},
        "generation_key": key,
        "benchmarks": {},
    }
    if manifest_path.exists():  # keep benchmarks recorded by earlier (compatible) runs
        manifest["benchmarks"] = json.loads(manifest_path.read_text()).get("benchmarks", {})
    for b in benches:
        manifest["benchmarks"][b.key] = {"name": b.spec.name, "variant": b.spec.variant,
                                         "display": b.spec.display, "file": str(b.spec.path),
                                         "sha256": b.sha256, "rows": b.rows,
                                         "evaluated_problems": len(b.problems), "list_mode": b.spec.list_mode}
    write_json(manifest_path, manifest)

    pool = _pool_for(cfg.grading)
    owned = backend is None
    announced = False
    n = cfg.sampling.n
    t0 = time.monotonic()
    try:
        for bench in benches:
            path = samples_dir / f"{bench.key}.jsonl"
            existing, torn = _read(path)
            done = complete_problems(existing, n)
            todo = plan_chunks(bench, set(done), chunk_size)
            redo = {p.index for chunk in todo for p in chunk}
            kept = [r for p in sorted(done) if p not in redo for r in done[p]]
            if torn or len(kept) != len(existing):
                write_records(path, kept)
            if not todo:
                log(f"{bench.key}: all {len(bench.problems)} problems already in {path}")
                continue
            if backend is None:
                log(f"loading the {backend_name} backend for {model_dir} ...")
                backend = create_backend(cfg.backend, str(model_dir), tokenizer, stop_ids, cfg.sampling.seed)
            if not announced:
                manifest["backend"]["resolved"] = backend.describe()
                log(describe_run(manifest["backend"]["resolved"], cfg.sampling))
                announced = True
            total = sum(len(c) for c in todo) * n
            gen_bar = _tqdm(total=total, desc=f"{bench.key} generate", disable=not cfg.progress,
                            unit="sample", dynamic_ncols=True)
            grade_bar = _tqdm(total=total, desc=f"{bench.key} grade", disable=not cfg.progress,
                              unit="sample", dynamic_ncols=True)
            try:
                for chunk in todo:
                    _run_chunk(bench, chunk, cfg, tokenizer, backend, pool, path, gen_bar.update,
                               grade_bar.update)
            finally:
                gen_bar.close()
                grade_bar.close()
    finally:
        if backend is not None and owned:
            backend.close()
    manifest["status"] = "complete"
    manifest["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    manifest["generation_seconds_this_session"] = round(time.monotonic() - t0, 3)
    write_json(manifest_path, manifest)
    selected = {b.key: {p.index for p in b.problems} for b in benches}
    records = {b.key: [r for r in read_records(samples_dir / f"{b.key}.jsonl")
                       if int(r["problem_index"]) in selected[b.key]] for b in benches}
    return write_reports(out, records, manifest, plot=cfg.plot, log=log)


def _run_chunk(bench: Benchmark, chunk: list[Problem], cfg: EvalConfig, tokenizer, backend,
               pool: GradingPool, path: Path, gen_progress, grade_progress) -> None:
    prompts = [render(tokenizer, p.problem, cfg.prompt) for p in chunk]
    ids = [tuple(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in prompts]
    seeds = [derive_seed(cfg.sampling.seed, bench.key, p.index) for p in chunk]
    gens = backend.generate([GenRequest(i, s) for i, s in zip(ids, seeds)], cfg.sampling, gen_progress)
    records = []
    for p, prompt, pid, seed, samples in zip(chunk, prompts, ids, seeds, gens):
        for j, g in enumerate(samples):
            records.append({
                "benchmark": bench.key, "problem_id": p.id, "problem_index": p.index, "sample_index": j,
                "seed": seed, "prompt": prompt, "response": g.text, "extracted_answer": None,
                "correct": False, "gold": list(p.answers), "gold_mode": p.list_mode,
                "num_tokens": g.num_tokens, "prompt_tokens": len(pid), "finish_reason": g.finish_reason,
            })
    grade_records(records, cfg.grading, pool, grade_progress)
    append_records(path, records)


# ---------------------------------------------------------------------------------------- reports
def write_reports(out: Path, records: dict[str, list[dict]], manifest: dict, plot: bool = True,
                  log: Callable[[str], None] = print) -> dict:
    n = int(manifest["sampling"]["n"])
    per_bench, complete_records, audit_rows = {}, {}, []
    for key, recs in records.items():
        done = complete_problems(recs, n)
        if not done:
            log(f"{key}: no complete problems yet, left out of the summary")
            continue
        complete = [r for p in sorted(done) for r in done[p]]
        complete_records[key] = complete
        per_bench[key] = summarize_benchmark(complete, n)
        incomplete = len({r["problem_index"] for r in recs}) - len(done)
        if incomplete:
            per_bench[key]["incomplete_problems_left_out"] = incomplete
        for r in complete:
            for g, v in (r.get("audit") or {}).items():
                if v["correct"] != r["correct"]:
                    audit_rows.append({
                        "benchmark": key, "problem_id": r["problem_id"], "sample_index": r["sample_index"],
                        "gold": r["gold"], r["grader"]: {"extracted_answer": r["extracted_answer"],
                                                         "correct": r["correct"]},
                        g: v,
                    })
    display = {k: v.get("display", k) for k, v in manifest.get("benchmarks", {}).items()}
    variants = {k: v.get("variant") for k, v in manifest.get("benchmarks", {}).items()}
    meta = {
        "model": manifest.get("model"),
        "model_name": Path(manifest.get("model", "model")).name,
        "model_weights_sha256": manifest.get("model_weights", {}).get("sha256"),
        "sampling": manifest["sampling"],
        "prompt": manifest.get("prompt"),
        "grading": manifest.get("grading"),
        "display_names": {k: display.get(k, k) for k in per_bench},
        "variants": {k: variants.get(k) for k in per_bench},
    }
    summary = build_summary(per_bench, meta)
    write_json(out / SUMMARY_JSON, summary)
    md = summary_markdown(summary) if per_bench else "# Evaluation\n\nNo complete problems.\n"
    (out / SUMMARY_MD).write_text(md)
    if any(r.get("audit") for recs in complete_records.values() for r in recs):
        write_records(out / AUDIT, audit_rows)
        log(f"grader audit: {len(audit_rows)} disagreements, listed in {out / AUDIT}")
    if plot and complete_records:
        warning = plot_accuracy_vs_length(complete_records, out / PLOT)
        if warning:
            log(f"{out / PLOT}: {warning}")
    log(md)
    return summary


# --------------------------------------------------------------------------------------- re-grade
def regrade(out_dir: str, gcfg: GradingConfig, progress: bool = True, plot: bool = True,
            log: Callable[[str], None] = print) -> dict:
    """Grade the saved responses of an earlier run again (no model needed) and rewrite its reports."""
    gcfg.validate()
    out = Path(out_dir)
    manifest_path = out / MANIFEST
    if not manifest_path.is_file():
        raise EvalError(f"--regrade: no {MANIFEST} in {out_dir} (not an eval_math.py output directory)")
    manifest = json.loads(manifest_path.read_text())
    pool = _pool_for(gcfg)
    records = {}
    for key in manifest.get("benchmarks", {}):
        path = out / SAMPLES_DIR / f"{key}.jsonl"
        recs = read_records(path)
        if not recs:
            continue
        bar = _tqdm(total=len(recs), desc=f"{key} regrade", disable=not progress, unit="sample")
        try:
            grade_records(recs, gcfg, pool, bar.update)
        finally:
            bar.close()
        write_records(path, recs)
        records[key] = recs
    if not records:
        raise EvalError(f"--regrade: no sample records under {out / SAMPLES_DIR}")
    manifest["grading"] = gcfg.describe()
    manifest["regraded_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    manifest["versions_at_regrade"] = package_versions()
    write_json(manifest_path, manifest)
    return write_reports(out, records, manifest, plot=plot, log=log)


# ------------------------------------------------------------------------------ external samples
def graded_path(path: Path) -> Path:
    stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.name
    return path.with_name(stem + ".graded.jsonl")


def grade_jsonl(path: str, gcfg: GradingConfig, response_field: str = "response",
                answer_field: str = "answer", list_mode: str = "any", progress: bool = True,
                log: Callable[[str], None] = print) -> dict:
    """Grade generations made elsewhere: adds ``extracted_answer`` and ``correct`` to every line and
    writes ``<name>.graded.jsonl`` next to the input."""
    gcfg.validate()
    src = Path(path)
    if not src.is_file():
        raise EvalError(f"--grade-jsonl: file not found: {path}")
    rows, records = [], []
    for i, line in enumerate(src.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalError(f"{src}, line {i}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise EvalError(f"{src}, line {i}: expected a JSON object")
        if response_field not in row:
            raise EvalError(f"{src}, line {i}: missing field {response_field!r} (set --response-field)")
        if answer_field not in row:
            raise EvalError(f"{src}, line {i}: missing field {answer_field!r} (set --answer-field)")
        if not isinstance(row[response_field], str):
            raise EvalError(f"{src}, line {i}: field {response_field!r} must be a string")
        try:
            gold = gold_strings(row[answer_field], f"{src}, line {i}, field {answer_field!r}")
        except BenchmarkError as exc:
            raise EvalError(str(exc)) from exc
        rows.append(row)
        records.append({"response": row[response_field], "gold": list(gold), "gold_mode": list_mode})
    if not rows:
        raise EvalError(f"--grade-jsonl: {path} has no rows")
    bar = _tqdm(total=len(records), desc=f"{src.name} grade", disable=not progress, unit="sample")
    try:
        grade_records(records, gcfg, _pool_for(gcfg), bar.update)
    finally:
        bar.close()
    dst = graded_path(src)
    graded = []
    for row, rec in zip(rows, records):
        row = dict(row)
        row["extracted_answer"] = rec["extracted_answer"]
        row["correct"] = rec["correct"]
        if rec.get("grading_timed_out"):
            row["grading_timed_out"] = True
        if "audit" in rec:
            row["audit"] = rec["audit"]
        graded.append(row)
    write_records(dst, graded)
    right = sum(r["correct"] for r in graded)
    result = {"accuracy": right / len(graded), "correct": right, "total": len(graded), "output": str(dst)}
    if gcfg.audit:
        result["disagreements"] = sum(any(v["correct"] != r["correct"] for v in r["audit"].values())
                                      for r in graded)
    log(f"accuracy: {100 * result['accuracy']:.2f}% ({right}/{len(graded)}) -> {dst}")
    if gcfg.audit:
        log(f"grader audit: {result['disagreements']} disagreements")
    return result
