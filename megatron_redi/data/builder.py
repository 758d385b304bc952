"""Turn raw teacher generations (OpenR1-Math-Raw schema) into the paper's SFT set and REDI pair set.

Rules (REDI.md, "Data"), applied per problem in this order, each switchable through `BuilderConfig`:
  1. the row is well formed (required fields present with the right types),
  2. `problem_is_valid == "yes"`,
  3. `source != "cn_k12"`,
  4. both label lists (`correctness.llama_verification`, `correctness.math_verify_reparsed_answer`) have one
     entry per generation,
  5. no generation is empty,
  6. (optional) no 8-gram overlap with the benchmark problems,
then a generation is correct when BOTH labels are true (a null label counts as false, as in the reference
scripts); SFT = first correct generation, pair = (first correct, first incorrect); optionally pairs whose
prompt or either response is too long in tokens are dropped.

The input is streamed in batches and both outputs are written as they are produced, so memory does not
grow with the input. With `shuffle` (the default, as the reference pipeline shuffled its input with seed 42)
rows go to on-disk buckets keyed by a hash of (seed, position) and each bucket is sorted at the end: the
order is a seeded pseudo-random permutation, identical from run to run, at bounded memory.

This module must not import megatron or torch.distributed; pyarrow, datasets, transformers and math-verify
are imported lazily so that `--reverify` worker processes start fast.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PAPER_COUNTS = {"sft": 77629, "pairs": 53175}
LLAMA, MATH_VERIFY = "llama_verification", "math_verify_reparsed_answer"
LABEL_KEYS = (LLAMA, MATH_VERIFY)
CORRECT_RULES = ("both", "llama", "math_verify", "either")
REVERIFY_COMBINE = ("replace", "and", "or")
INPUT_COLUMNS = ["problem", "answer", "generations", "correctness", "problem_is_valid", "source", "uuid"]

# Grades returned by the regrading workers.
INCORRECT, CORRECT, TIMEOUT, ERROR = 0, 1, -1, -2


class MalformedRowError(ValueError):
    """Raised in strict mode at the first malformed row; names the file and the row so it can be fixed."""

    def __init__(self, path: str, row: int, reason: str, line: int | None = None) -> None:
        where = f"row {row}" + (f" (line {line})" if line is not None else "")
        super().__init__(f"malformed input row: {path}: {where}: {reason}")
        self.path, self.row, self.reason, self.line = path, row, reason, line


@dataclass
class BuilderConfig:
    """Every rule of the paper's data recipe as a field; the defaults reproduce the paper."""

    input: list[str]
    output_dir: str
    split: str = "train"  # split to read from a `save_to_disk` DatasetDict folder
    # Paper rules.
    valid_values: tuple[str, ...] = ("yes",)  # accepted `problem_is_valid` values; empty = keep all
    exclude_sources: tuple[str, ...] = ("cn_k12",)
    require_label_lengths: bool = True  # False: missing labels count as false, extra ones are ignored
    allow_empty_generations: bool = False
    correct_rule: str = "both"  # both | llama | math_verify | either
    # Length filter (needs a tokenizer); 0 or None disables a bound.
    tokenizer_model: str | None = None
    max_prompt_tokens: int | None = 800
    max_response_tokens: int | None = 19000
    length_filter_sft: bool = False  # the paper filters pairs only
    # Regrading with math-verify.
    reverify: bool = False
    reverify_combine: str = "replace"  # replace | and | or  (with the stored-label rule)
    reverify_workers: int = 0  # 0 = one per CPU
    reverify_timeout: float = 10.0  # seconds per generation
    # Decontamination.
    decontaminate: bool = False
    benchmarks: list[str] | None = None  # JSONL files with `problem`; None = the five bundled sets
    ngram_size: int = 8
    # Output and run control.
    seed: int = 42
    shuffle: bool = True
    strict: bool = False
    batch_size: int = 256
    limit: int | None = None  # stop after this many input rows
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.input, (str, Path)):
            self.input = [str(self.input)]
        if self.correct_rule not in CORRECT_RULES:
            raise ValueError(f"correct_rule must be one of {CORRECT_RULES}, got {self.correct_rule!r}")
        if self.reverify_combine not in REVERIFY_COMBINE:
            raise ValueError(f"reverify_combine must be one of {REVERIFY_COMBINE}, got {self.reverify_combine!r}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")

    @property
    def uses_stored_labels(self) -> bool:
        """Stored labels are ignored only when math-verify regrades replace them."""
        return not (self.reverify and self.reverify_combine == "replace")

    @property
    def length_filter_active(self) -> bool:
        return bool(self.tokenizer_model) and bool(self.max_prompt_tokens or self.max_response_tokens)


# ----------------------------------------------------------------------------------------------------------
# Rules: small pure functions, each testable alone.
# ----------------------------------------------------------------------------------------------------------


def _is_label_list(value: Any) -> bool:
    return isinstance(value, list) and all(v is None or isinstance(v, bool) for v in value)


def check_schema(row: Any, *, need_labels: bool = True, need_answer: bool = False) -> str | None:
    """Reason the row cannot be processed (`missing_field:x`, `wrong_type:x`, ...), or None if it can.

    A null value counts as missing. Fields the rules never read (`answer` unless regrading) are not required,
    so rows the paper keeps are never dropped for them.
    """
    if not isinstance(row, dict):
        return "not_an_object"
    for name in ("problem", "problem_is_valid", "source", "uuid"):
        if row.get(name) is None:
            return f"missing_field:{name}"
        if not isinstance(row[name], str):
            return f"wrong_type:{name}"
    gens = row.get("generations")
    if gens is None:
        return "missing_field:generations"
    if not isinstance(gens, list) or not all(g is None or isinstance(g, str) for g in gens):
        return "wrong_type:generations"
    if need_labels:
        corr = row.get("correctness")
        if corr is None:
            return "missing_field:correctness"
        if not isinstance(corr, dict):
            return "wrong_type:correctness"
        for key in LABEL_KEYS:
            if corr.get(key) is None:
                return f"missing_field:correctness.{key}"
            if not _is_label_list(corr[key]):
                return f"wrong_type:correctness.{key}"
    if need_answer:
        if row.get("answer") is None:
            return "missing_field:answer"
        if not isinstance(row["answer"], str):
            return "wrong_type:answer"
    if not row["problem"].strip():
        return "empty_problem"
    if not gens:
        return "no_generations"
    return None


def is_valid_problem(value: str, accepted: Sequence[str]) -> bool:
    """`problem_is_valid` test, case- and space-insensitive as in the reference script; none = keep all."""
    return not accepted or value.strip().lower() in {a.lower() for a in accepted}


def is_allowed_source(source: str, excluded: Sequence[str]) -> bool:
    return source not in excluded


def labels_match(n_generations: int, labels: dict) -> bool:
    """Both label lists have exactly one entry per generation."""
    return all(len(labels[k]) == n_generations for k in LABEL_KEYS)


def has_empty_generation(generations: Sequence[str | None]) -> bool:
    return any(g is None or not g.strip() for g in generations)


def correct_mask(labels: dict, n_generations: int, rule: str = "both") -> list[bool]:
    """Per-generation correctness from the stored labels; null or missing labels count as false."""

    def get(key: str, i: int) -> bool:
        values = labels[key]
        return i < len(values) and values[i] is True

    out = []
    for i in range(n_generations):
        llama, mv = get(LLAMA, i), get(MATH_VERIFY, i)
        out.append({"both": llama and mv, "llama": llama, "math_verify": mv, "either": llama or mv}[rule])
    return out


def combine_labels(stored: Sequence[bool] | None, regraded: Sequence[bool], mode: str) -> list[bool]:
    """Merge math-verify regrades with the stored-label verdicts: replace, and, or."""
    if mode == "replace" or stored is None:
        return list(regraded)
    if mode == "and":
        return [a and b for a, b in zip(stored, regraded)]
    if mode == "or":
        return [a or b for a, b in zip(stored, regraded)]
    raise ValueError(f"unknown combine mode {mode!r}")


def first_correct_incorrect(mask: Sequence[bool]) -> tuple[int | None, int | None]:
    """Indices of the first correct and the first incorrect generation (None when there is none)."""
    correct = next((i for i, ok in enumerate(mask) if ok), None)
    incorrect = next((i for i, ok in enumerate(mask) if not ok), None)
    return correct, incorrect


def sft_record(problem: str, generation: str, uuid: str, source: str) -> dict:
    """One SFT row in the trainer's schema (`messages` = [user, assistant]) plus provenance."""
    return {
        "messages": [{"role": "user", "content": problem}, {"role": "assistant", "content": generation}],
        "uuid": uuid,
        "source": source,
    }


def pair_record(problem: str, chosen: str, rejected: str, uuid: str, source: str) -> dict:
    """One pair row in exactly the schema the trainer reads."""
    return {
        "prompt": [{"role": "user", "content": problem}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "uuid": uuid,
        "source": source,
    }


def shuffle_key(seed: int, file_index: int, row: int) -> int:
    """64-bit order key of an input row: a keyed hash, so the permutation depends on nothing but the seed."""
    digest = hashlib.blake2b(f"{seed}/{file_index}/{row}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


# ----------------------------------------------------------------------------------------------------------
# Input: jsonl (parsed line by line), parquet and save_to_disk folders (pyarrow record batches).
# ----------------------------------------------------------------------------------------------------------


@dataclass
class InputFile:
    path: str
    kind: str  # jsonl | parquet | arrow
    rows: int | None = None


@dataclass
class RawRow:
    """One input row and where it came from; `error` is set when it could not even be decoded."""

    path: str
    file_index: int
    row: int
    data: Any = None
    line: int | None = None
    error: str | None = None


_SUFFIX_KIND = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".arrow": "arrow"}


def resolve_inputs(paths: Iterable[str], split: str = "train") -> list[InputFile]:
    """Expand files and folders into an ordered list of data files, with kind and (when cheap) row count."""
    files: list[InputFile] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"input not found: {p}")
        if p.is_dir() and ((p / "state.json").exists() or (p / "dataset_dict.json").exists()):
            files.extend(_save_to_disk_files(p, split))
        elif p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix in _SUFFIX_KIND and q.is_file())
            if not found:
                raise ValueError(f"no .jsonl/.json/.parquet/.arrow files under {p}")
            files.extend(_input_file(q) for q in found)
        else:
            files.append(_input_file(p))
    return files


def _input_file(p: Path) -> InputFile:
    kind = _SUFFIX_KIND.get(p.suffix)
    if kind is None:
        raise ValueError(f"unsupported input {p}: expected .jsonl, .json (JSON lines), .parquet or a folder")
    rows = None
    if kind == "parquet":
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(str(p)).metadata.num_rows
    return InputFile(str(p), kind, rows)


def _save_to_disk_files(folder: Path, split: str) -> list[InputFile]:
    """Arrow files of a `save_to_disk` folder: `datasets` resolves the layout (Dataset or DatasetDict, split,
    shards) and the row count; the data itself is streamed later by `_record_batches`."""
    import datasets

    ds = datasets.load_from_disk(str(folder))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ValueError(f"split {split!r} not in {folder} (has {list(ds)})")
        ds = ds[split]
    arrow_files = [f["filename"] for f in ds.cache_files]
    if len(arrow_files) == 1:
        return [InputFile(arrow_files[0], "arrow", len(ds))]
    return [InputFile(f, "arrow", None) for f in arrow_files]


def _iter_jsonl(f: InputFile, file_index: int) -> Iterator[RawRow]:
    # Parsed here rather than by `datasets`: one row of the wrong type would make the Arrow JSON reader
    # reject its whole block, and we want to skip (or name, with --strict) exactly that row.
    # Bytes in, json decodes UTF-8 itself: a third faster than a text-mode file on long lines.
    row = 0
    with open(f.path, "rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield RawRow(f.path, file_index, row, json.loads(line), lineno)
            except ValueError as e:  # JSONDecodeError or UnicodeDecodeError
                yield RawRow(f.path, file_index, row, None, lineno, f"invalid_json ({getattr(e, 'msg', e)})")
            row += 1


def _record_batches(f: InputFile, batch_size: int) -> Iterator[Any]:
    """Arrow record batches of at most `batch_size` rows, reading only the columns the rules use.

    pyarrow directly rather than `datasets` streaming: measured on a 50k-row parquet file, the latter's
    scanner pre-buffers column chunks and its peak RSS grew with the file (0.6 GB at 10k rows, 1.3 GB at
    50k); `ParquetFile(pre_buffer=False).iter_batches` stays flat. Arrow IPC files (save_to_disk) are read
    batch by batch from a plain file handle, not memory-mapped, so touched pages do not pile up in RSS.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if f.kind == "parquet":
        pf = pq.ParquetFile(f.path, pre_buffer=False)
        cols = [c for c in INPUT_COLUMNS if c in set(pf.schema_arrow.names)]
        yield from pf.iter_batches(batch_size=batch_size, columns=cols)
        return
    with open(f.path, "rb") as fh:
        try:
            reader = pa.ipc.open_stream(fh)  # the format `save_to_disk` writes
            batches: Iterable[Any] = reader
        except pa.ArrowInvalid:
            fh.seek(0)
            file_reader = pa.ipc.open_file(fh)
            batches = (file_reader.get_batch(i) for i in range(file_reader.num_record_batches))
        for rb in batches:
            rb = rb.select([c for c in INPUT_COLUMNS if c in rb.schema.names])
            for start in range(0, rb.num_rows, batch_size):
                yield rb.slice(start, batch_size)


def _iter_arrow(f: InputFile, file_index: int, batch_size: int) -> Iterator[RawRow]:
    row = 0
    for rb in _record_batches(f, batch_size):
        for data in rb.to_pylist():
            yield RawRow(f.path, file_index, row, data)
            row += 1


def iter_rows(files: Sequence[InputFile], batch_size: int = 256) -> Iterator[RawRow]:
    """All rows of all files, in order, one at a time."""
    for i, f in enumerate(files):
        if f.kind == "jsonl":
            yield from _iter_jsonl(f, i)
        else:
            yield from _iter_arrow(f, i, batch_size)


# ----------------------------------------------------------------------------------------------------------
# Token lengths for the length filter.
# ----------------------------------------------------------------------------------------------------------


class TokenLengths:
    """Token counts as the trainer sees them (REDI.md): prompt = chat-templated system + user turns + the
    generation prompt; response = the templated assistant turn (`{generation}<|im_end|>\\n`) + one EOS.

    The template is rendered once around sentinels and the pieces are reused, so each text is tokenized
    once, in batches, by the fast (Rust) tokenizer without building Python id lists.

    Tokenizing is by far the slowest step of the build, and most texts are far below the bounds. For a
    byte-level BPE (Qwen's kind: NFC or no normalizer, ByteLevel pre-tokenizer) every token covers at least
    one input byte, so an ASCII text (which NFC leaves unchanged) has at most len(text) tokens: when that is
    within the bound the decision is already exact and the text is not tokenized. `tokenized` counts the
    texts that were.
    """

    _USER, _ASSISTANT = "\x00REDI_USER\x00", "\x00REDI_ASSISTANT\x00"

    def __init__(self, model_dir: str) -> None:
        from transformers import AutoTokenizer

        from megatron_redi.data.chat_template import QWEN25_MATH_CHAT_TEMPLATE

        tok = AutoTokenizer.from_pretrained(model_dir)
        if not getattr(tok, "chat_template", None):
            tok.chat_template = QWEN25_MATH_CHAT_TEMPLATE
        user = [{"role": "user", "content": self._USER}]
        prompt = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(user + [{"role": "assistant", "content": self._ASSISTANT}], tokenize=False)
        if prompt.count(self._USER) != 1 or not full.startswith(prompt) or full.count(self._ASSISTANT) != 1:
            raise ValueError(f"chat template of {model_dir} does not render prompt + completion as a prefix pair")
        self.prompt_parts = tuple(prompt.split(self._USER))
        self.completion_parts = tuple(full[len(prompt) :].split(self._ASSISTANT))
        self.eos_extra = 1 if tok.eos_token_id is not None else 0
        self.tokenizer = tok
        backend = getattr(tok, "backend_tokenizer", None)
        self._encode = getattr(backend, "encode_batch_fast", None) or getattr(backend, "encode_batch", None)
        self.byte_bounded = backend is not None and _is_byte_level_bpe(json.loads(backend.to_str()))
        self.tokenized = 0

    def _count(self, texts: list[str], chunk: int = 64) -> list[int]:
        # Chunks of 64: an Encoding of a 20k-token trace holds several arrays, so bound how many live at once.
        out: list[int] = []
        for start in range(0, len(texts), chunk):
            part = texts[start : start + chunk]
            if self._encode is not None:
                out.extend(len(e) for e in self._encode(part, add_special_tokens=False))
            else:
                out.extend(len(x) for x in self.tokenizer(part, add_special_tokens=False)["input_ids"])
        return out

    def prompt_tokens(self, problems: list[str]) -> list[int]:
        before, after = self.prompt_parts
        return self._count([before + p + after for p in problems])

    def response_tokens(self, generations: list[str]) -> list[int]:
        before, after = self.completion_parts
        return [n + self.eos_extra for n in self._count([before + g + after for g in generations])]

    def _within(self, texts: list[str], bound: int, extra: int) -> list[bool]:
        ok: list[bool | None] = [None] * len(texts)
        if self.byte_bounded:
            for i, t in enumerate(texts):
                if len(t) + extra <= bound and t.isascii():
                    ok[i] = True
        todo = [i for i, v in enumerate(ok) if v is None]
        self.tokenized += len(todo)
        for i, n in zip(todo, self._count([texts[i] for i in todo])):
            ok[i] = n + extra <= bound
        return ok  # type: ignore[return-value]

    def prompts_within(self, problems: list[str], bound: int) -> list[bool]:
        """Whether each templated prompt has at most `bound` tokens (exact, tokenizing only when needed)."""
        before, after = self.prompt_parts
        return self._within([before + p + after for p in problems], bound, 0)

    def responses_within(self, generations: list[str], bound: int) -> list[bool]:
        """Whether each templated response (with its EOS) has at most `bound` tokens."""
        before, after = self.completion_parts
        return self._within([before + g + after for g in generations], bound, self.eos_extra)


def _is_byte_level_bpe(spec: dict) -> bool:
    """A BPE over bytes with no normalizer that could lengthen ASCII text: tokens <= bytes holds."""
    normalizer = spec.get("normalizer")
    pre = json.dumps(spec.get("pre_tokenizer"))
    return (
        spec.get("model", {}).get("type") == "BPE"
        and (normalizer is None or normalizer.get("type") == "NFC")
        and '"ByteLevel"' in pre
    )


# ----------------------------------------------------------------------------------------------------------
# Regrading with math-verify in worker processes.
# ----------------------------------------------------------------------------------------------------------


class _Timeout(BaseException):
    """BaseException so that math-verify's own `except Exception` handlers cannot swallow it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def run_with_timeout(fn: Callable[[], int], seconds: float) -> int:
    """Run `fn` under a SIGALRM timer (main thread of a process only); TIMEOUT if it runs too long."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        return fn()
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:  # also catches an alarm that lands while the timer is being disarmed
        return TIMEOUT
    finally:
        signal.signal(signal.SIGALRM, previous)


def answer_region(generation: str) -> str:
    """The part after the last `</think>` when there is one: the final answer lives there, and parsing
    only it is much faster than parsing a long reasoning trace."""
    head, sep, tail = generation.rpartition("</think>")
    return tail if sep and tail.strip() else generation


def _gold_text(answer: str) -> str:
    # Raw answers are bare LaTeX ("\\frac{1}{2}"); math-verify's LaTeX extractor needs math delimiters.
    return answer if ("$" in answer or "\\boxed" in answer) else f"${answer}$"


def grade_problem(task: tuple[str, list[str], float]) -> list[int]:
    """Grade every generation of one problem against its reference answer: CORRECT, INCORRECT, TIMEOUT or
    ERROR per generation. Runs in a worker process, where SIGALRM timeouts work (not in threads)."""
    answer, generations, timeout = task
    from math_verify import parse, verify

    gold_box: list = []

    def parse_gold() -> int:
        try:
            gold_box.append(parse(_gold_text(answer), parsing_timeout=None))
        except Exception:
            return ERROR
        return CORRECT

    status = run_with_timeout(parse_gold, timeout)
    if status == TIMEOUT:
        return [TIMEOUT] * len(generations)
    if status != CORRECT or not gold_box[0]:  # an unparsable reference answer grades nothing correct
        return [ERROR] * len(generations)
    gold = gold_box[0]

    def grade(text: str) -> Callable[[], int]:
        def go() -> int:
            try:
                pred = parse(answer_region(text), parsing_timeout=None)
                return CORRECT if verify(gold, pred, timeout_seconds=None) else INCORRECT
            except Exception:
                return ERROR

        return go

    return [run_with_timeout(grade(g), timeout) for g in generations]


class Regrader:
    """A spawn-context process pool (safe next to a multi-threaded tokenizer) grading problems in batches.

    Each generation has a SIGALRM budget inside its worker. As a last resort, if a whole batch overruns its
    worst-case time (code stuck in C where signals cannot interrupt it) the pool is killed and the batch is
    redone one problem at a time, so one pathological generation cannot stall the build.
    """

    def __init__(self, workers: int = 0, timeout: float = 10.0, max_tasks_per_child: int = 2000) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.timeout = timeout
        self.max_tasks_per_child = max_tasks_per_child
        self._ctx = mp.get_context("spawn")
        self._pool = self._new_pool()

    def _new_pool(self):
        return self._ctx.Pool(self.workers, maxtasksperchild=self.max_tasks_per_child)

    def _restart(self) -> None:
        self._pool.terminate()
        self._pool.join()
        self._pool = self._new_pool()

    def _budget(self, n_items: int) -> float:
        return self.timeout * n_items + 60.0

    def grade(self, tasks: list[tuple[str, list[str]]]) -> list[list[int]]:
        """Grades for each (answer, generations) task, in order."""
        if not tasks:
            return []
        args = [(a, g, self.timeout) for a, g in tasks]
        items = sum(len(g) + 1 for _, g in tasks)
        chunk = max(1, len(args) // (4 * self.workers))
        pending = self._pool.map_async(grade_problem, args, chunksize=chunk)
        try:
            return pending.get(self._budget(-(-items // self.workers)))
        except mp.TimeoutError:
            self._restart()
        results = []
        for a in args:
            try:
                results.append(self._pool.apply_async(grade_problem, (a,)).get(self._budget(len(a[1]) + 1)))
            except mp.TimeoutError:
                self._restart()
                results.append([TIMEOUT] * len(a[1]))
        return results

    def close(self) -> None:
        self._pool.terminate()
        self._pool.join()


# ----------------------------------------------------------------------------------------------------------
# Output: JSONL written incrementally, optionally in a seeded order through on-disk buckets.
# ----------------------------------------------------------------------------------------------------------


def _dumps(row: dict) -> bytes:
    return (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")


class JsonlSink:
    """Write rows to `path` atomically (a `.partial` file renamed on close).

    Shuffled mode prefixes each line with its 16-hex-digit key and appends it to one of 64 bucket files by
    the key's top bits; `close` sorts each bucket in memory (splitting any bucket bigger than
    `max_bucket_bytes` by the next bits first) and concatenates. Memory is bounded by the bucket size, not by
    the output size, and the order depends only on the keys.
    """

    BITS = 6

    def __init__(self, path: Path, tmp_dir: Path | None, max_bucket_bytes: int = 256 << 20) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.tmp_dir = tmp_dir
        self.max_bucket_bytes = max_bucket_bytes
        self.count = 0
        if tmp_dir is None:
            self._out = open(self.partial, "wb")
            self._buckets: list = []
        else:
            self._out = None
            self._buckets = [open(tmp_dir / f"{self.path.stem}.{b:02x}", "wb") for b in range(1 << self.BITS)]

    def write(self, row: dict, key: int = 0) -> None:
        self.count += 1
        if self._out is not None:
            self._out.write(_dumps(row))
        else:
            self._buckets[key >> (64 - self.BITS)].write(b"%016x\t" % key + _dumps(row))

    def close(self) -> int:
        """Finish the file; returns the number of rows."""
        if self._out is not None:
            self._out.close()
        else:
            with open(self.partial, "wb") as out:
                for b in self._buckets:
                    b.close()
                    self._drain(Path(b.name), out, depth=1)
        os.replace(self.partial, self.path)
        return self.count

    def _drain(self, bucket: Path, out, depth: int) -> None:
        size = bucket.stat().st_size
        shift = 64 - self.BITS * (depth + 1)
        if size > self.max_bucket_bytes and shift >= 0:
            subs = [bucket.with_name(f"{bucket.name}.{s:02x}") for s in range(1 << self.BITS)]
            handles = [open(s, "wb") for s in subs]
            with open(bucket, "rb") as f:
                for line in f:
                    handles[(int(line[:16], 16) >> shift) & ((1 << self.BITS) - 1)].write(line)
            for h in handles:
                h.close()
            bucket.unlink()
            for s in subs:
                self._drain(s, out, depth + 1)
            return
        with open(bucket, "rb") as f:
            lines = f.readlines()
        bucket.unlink()
        lines.sort()
        for line in lines:
            out.write(line[17:])

    def abort(self) -> None:
        for h in [self._out, *self._buckets]:
            if h is not None:
                h.close()
        self.partial.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------------
# The build.
# ----------------------------------------------------------------------------------------------------------

# (key, which set the count is about, what a row must satisfy to remain)
STEPS: list[tuple[str, str, str]] = [
    ("rows_read", "problems", "rows read from the input"),
    ("well_formed", "problems", "required fields present with the right types"),
    ("problem_is_valid", "problems", "problem_is_valid is one of {valid}"),
    ("source_allowed", "problems", "source not in {excluded}"),
    ("labels_match", "problems", "both label lists have one entry per generation"),
    ("generations_nonempty", "problems", "no empty generation"),
    ("not_contaminated", "problems", "no {n}-gram overlap with a benchmark problem"),
    ("has_correct", "sft", "a correct generation exists (first one -> SFT)"),
    ("sft_length_ok", "sft", "prompt <= {p} and response <= {r} tokens"),
    ("has_correct_and_incorrect", "pairs", "a correct and an incorrect generation exist (first of each)"),
    ("pairs_length_ok", "pairs", "prompt <= {p} and chosen, rejected <= {r} tokens"),
]
_PREVIOUS = {"has_correct": "not_contaminated", "has_correct_and_incorrect": "not_contaminated"}
# (stored verdict, regraded verdict) -> report key
_AGREEMENT = {
    (True, True): "both_correct",
    (True, False): "stored_only",
    (False, True): "regraded_only",
    (False, False): "both_incorrect",
}


@dataclass
class _Candidate:
    raw: RawRow
    labels: list[bool] | None = None  # stored-label verdicts (None when not usable)
    key: int = 0


@dataclass
class _State:
    remaining: Counter = field(default_factory=Counter)
    malformed: Counter = field(default_factory=Counter)
    malformed_examples: list = field(default_factory=list)
    labels: Counter = field(default_factory=Counter)
    reverify: Counter = field(default_factory=Counter)
    length_dropped: Counter = field(default_factory=Counter)
    contaminated_by: Counter = field(default_factory=Counter)


class _Builder:
    def __init__(self, cfg: BuilderConfig) -> None:
        self.cfg = cfg
        self.out_dir = Path(cfg.output_dir)
        self.state = _State()
        self.index = None
        self.lengths: TokenLengths | None = None
        self.regrader: Regrader | None = None

    # -- per-row rules --------------------------------------------------------------------------------
    def _malformed(self, raw: RawRow, reason: str) -> None:
        if self.cfg.strict:
            raise MalformedRowError(raw.path, raw.row, reason, raw.line)
        key = reason.split(" ")[0]
        self.state.malformed[key] += 1
        if len(self.state.malformed_examples) < 50:
            self.state.malformed_examples.append({"file": raw.path, "row": raw.row, "line": raw.line, "reason": reason})

    def _row_rules(self, raw: RawRow) -> _Candidate | None:
        cfg, remaining = self.cfg, self.state.remaining
        remaining["rows_read"] += 1
        reason = raw.error or check_schema(raw.data, need_labels=cfg.uses_stored_labels, need_answer=cfg.reverify)
        if reason:
            self._malformed(raw, reason)
            return None
        row = raw.data
        remaining["well_formed"] += 1
        if not is_valid_problem(row["problem_is_valid"], cfg.valid_values):
            return None
        remaining["problem_is_valid"] += 1
        if not is_allowed_source(row["source"], cfg.exclude_sources):
            return None
        remaining["source_allowed"] += 1
        gens = row["generations"]
        if cfg.uses_stored_labels and cfg.require_label_lengths and not labels_match(len(gens), row["correctness"]):
            self._malformed(raw, "label_length_mismatch")
            return None
        remaining["labels_match"] += 1
        if not cfg.allow_empty_generations and has_empty_generation(gens):
            self._malformed(raw, "empty_generation")
            return None
        remaining["generations_nonempty"] += 1
        if self.index is not None:
            hits = self.index.match(row["problem"])
            if hits:
                for name in sorted({h.benchmark for h in hits}):
                    self.state.contaminated_by[name] += 1
                self._contaminated.write(
                    _dumps(
                        {
                            "uuid": row["uuid"],
                            "source": row["source"],
                            "file": raw.path,
                            "row": raw.row,
                            "hits": [asdict(h) for h in hits],
                        }
                    )
                )
                return None
        remaining["not_contaminated"] += 1
        labels = None
        corr = row.get("correctness")
        # When regrades replace the labels, well-formed stored labels are still read to report agreement.
        if cfg.uses_stored_labels or (check_schema(row) is None and labels_match(len(gens), corr)):
            labels = correct_mask(corr, len(gens), cfg.correct_rule)
            self.state.labels["null_labels"] += sum(v is None for k in LABEL_KEYS for v in corr[k][: len(gens)])
        key = shuffle_key(cfg.seed, raw.file_index, raw.row) if cfg.shuffle else 0
        return _Candidate(raw, labels, key)

    # -- per-batch steps ------------------------------------------------------------------------------
    def _regrade(self, cands: list[_Candidate]) -> list[list[bool]]:
        grades = self.regrader.grade(
            [(c.raw.data["answer"], [g or "" for g in c.raw.data["generations"]]) for c in cands]
        )
        st = self.state.reverify
        out = []
        for c, g in zip(cands, grades):
            ok = [x == CORRECT for x in g]
            st["graded"] += len(g)
            st["correct"] += sum(ok)
            st["timeouts"] += sum(x == TIMEOUT for x in g)
            st["errors"] += sum(x == ERROR for x in g)
            if c.labels is not None:
                for stored, regraded in zip(c.labels, ok):
                    st[_AGREEMENT[(stored, regraded)]] += 1
            out.append(combine_labels(c.labels, ok, self.cfg.reverify_combine))
        return out

    def _emit(self, cands: list[_Candidate]) -> None:
        st = self.state
        masks = self._regrade(cands) if self.regrader else [c.labels for c in cands]
        sft, pairs = [], []
        for c, mask in zip(cands, masks):
            st.labels["generations"] += len(mask)
            st.labels["correct"] += sum(mask)
            first_ok, first_bad = first_correct_incorrect(mask)
            if first_ok is None:
                continue
            st.remaining["has_correct"] += 1
            sft.append((c, first_ok))
            if first_bad is not None:
                st.remaining["has_correct_and_incorrect"] += 1
                pairs.append((c, first_ok, first_bad))
        keep_sft, keep_pairs = self._length_filter(sft, pairs)
        for (c, i), ok in zip(sft, keep_sft):
            if ok:
                st.remaining["sft_length_ok"] += 1
                d = c.raw.data
                self._sft.write(sft_record(d["problem"], d["generations"][i], d["uuid"], d["source"]), c.key)
        for (c, i, j), ok in zip(pairs, keep_pairs):
            if ok:
                st.remaining["pairs_length_ok"] += 1
                d = c.raw.data
                g = d["generations"]
                self._pairs.write(pair_record(d["problem"], g[i], g[j], d["uuid"], d["source"]), c.key)

    def _length_filter(self, sft: list, pairs: list) -> tuple[list[bool], list[bool]]:
        if self.lengths is None:
            return [True] * len(sft), [True] * len(pairs)
        cfg, dropped = self.cfg, self.state.length_dropped
        max_p, max_r = cfg.max_prompt_tokens or None, cfg.max_response_tokens or None
        # Tokenize each needed text once: prompts and chosen responses are shared by the two sets.
        need_sft = cfg.length_filter_sft
        rows = {id(c): c for c, *_ in (sft if need_sft else []) + pairs}
        problems = [c.raw.data["problem"] for c in rows.values()] if max_p else []
        prompt_in = dict(zip(rows, self.lengths.prompts_within(problems, max_p))) if max_p else {}
        texts: dict[tuple[int, int], str] = {}
        if max_r:
            for c, i in sft if need_sft else []:
                texts[(id(c), i)] = c.raw.data["generations"][i]
            for c, i, j in pairs:
                texts[(id(c), i)] = c.raw.data["generations"][i]
                texts[(id(c), j)] = c.raw.data["generations"][j]
        resp_in = dict(zip(texts, self.lengths.responses_within(list(texts.values()), max_r))) if max_r else {}

        def prompt_ok(c: _Candidate) -> bool:
            return not max_p or prompt_in[id(c)]

        def resp_ok(c: _Candidate, i: int) -> bool:
            return not max_r or resp_in[(id(c), i)]

        keep_sft = []
        for c, i in sft:
            ok = True
            if need_sft:
                if not prompt_ok(c):
                    dropped["sft_prompt"] += 1
                    ok = False
                if not resp_ok(c, i):
                    dropped["sft_response"] += 1
                    ok = False
            keep_sft.append(ok)
        keep_pairs = []
        for c, i, j in pairs:
            checks = {
                "pairs_prompt": prompt_ok(c),
                "pairs_chosen": resp_ok(c, i),
                "pairs_rejected": resp_ok(c, j),
            }
            for name, ok in checks.items():
                dropped[name] += not ok
            keep_pairs.append(all(checks.values()))
        return keep_sft, keep_pairs

    # -- driver ---------------------------------------------------------------------------------------
    def run(self) -> dict:
        from tqdm.auto import tqdm

        cfg = self.cfg
        t0 = time.perf_counter()
        files = resolve_inputs(cfg.input, cfg.split)
        if cfg.decontaminate:
            from megatron_redi.data.decontaminate import build_index

            self.index = build_index(cfg.benchmarks, cfg.ngram_size)
        if cfg.length_filter_active:
            self.lengths = TokenLengths(cfg.tokenizer_model)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=self.out_dir)) if cfg.shuffle else None
        self._sft = JsonlSink(self.out_dir / "sft.jsonl", tmp)
        self._pairs = JsonlSink(self.out_dir / "pairs.jsonl", tmp)
        contaminated_path = self.out_dir / "contaminated.jsonl"
        self._contaminated = open(contaminated_path, "wb") if cfg.decontaminate else None
        if not cfg.decontaminate:
            contaminated_path.unlink(missing_ok=True)  # a list from an earlier run would mislead
        if cfg.reverify:
            self.regrader = Regrader(cfg.reverify_workers, cfg.reverify_timeout)
        known = [f.rows for f in files]
        total = sum(known) if all(r is not None for r in known) else None  # type: ignore[misc]
        if total is not None and cfg.limit is not None:
            total = min(total, cfg.limit)
        bar = tqdm(total=total, unit="row", desc="build", disable=not cfg.progress, mininterval=1.0)
        ok = False
        try:
            batch: list[_Candidate] = []
            for n, raw in enumerate(iter_rows(files, cfg.batch_size)):
                if cfg.limit is not None and n >= cfg.limit:
                    break
                cand = self._row_rules(raw)
                if cand is not None:
                    batch.append(cand)
                if len(batch) >= cfg.batch_size:
                    self._emit(batch)
                    batch = []
                if n % 256 == 255:
                    bar.update(256)
                    bar.set_postfix(
                        sft=self.state.remaining["sft_length_ok"],
                        pairs=self.state.remaining["pairs_length_ok"],
                        refresh=False,
                    )
            self._emit(batch)
            bar.update(self.state.remaining["rows_read"] - bar.n)
            ok = True
        finally:
            bar.close()
            if self.regrader:
                self.regrader.close()
            if self._contaminated:
                self._contaminated.close()
            if ok:
                self._sft.close()
                self._pairs.close()
            else:
                self._sft.abort()
                self._pairs.abort()
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        elapsed = time.perf_counter() - t0
        report = self._report(files, elapsed)
        (self.out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (self.out_dir / "report.md").write_text(render_markdown(report))
        return report

    def _report(self, files: list[InputFile], elapsed: float) -> dict:
        cfg, st = self.cfg, self.state
        fmt = {
            "valid": "{" + ", ".join(cfg.valid_values) + "}",
            "excluded": "{" + ", ".join(cfg.exclude_sources) + "}",
            "n": cfg.ngram_size,
            "p": cfg.max_prompt_tokens or "inf",
            "r": cfg.max_response_tokens or "inf",
        }
        applied = {
            "problem_is_valid": bool(cfg.valid_values),
            "source_allowed": bool(cfg.exclude_sources),
            "labels_match": cfg.uses_stored_labels and cfg.require_label_lengths,
            "generations_nonempty": not cfg.allow_empty_generations,
            "not_contaminated": cfg.decontaminate,
            "sft_length_ok": cfg.length_filter_active and cfg.length_filter_sft,
            "pairs_length_ok": cfg.length_filter_active,
        }
        counts, prev = [], None
        for key, which, rule in STEPS:
            remaining = st.remaining[key]
            before = st.remaining[_PREVIOUS.get(key, prev)] if prev is not None else remaining
            counts.append(
                {
                    "step": key,
                    "set": which,
                    "rule": rule.format(**fmt),
                    "applied": applied.get(key, True),
                    "remaining": remaining,
                    "dropped": before - remaining,
                }
            )
            prev = key
        rows = st.remaining["rows_read"]
        config = asdict(cfg)
        config["input"] = [str(p) for p in cfg.input]
        return {
            "inputs": [asdict(f) for f in files],
            "config": config,
            "counts": counts,
            "sft_rows": st.remaining["sft_length_ok"],
            "pair_rows": st.remaining["pairs_length_ok"],
            "paper": dict(PAPER_COUNTS),
            "malformed": {
                "total": sum(st.malformed.values()),
                "by_reason": dict(sorted(st.malformed.items())),
                "examples": st.malformed_examples,
            },
            "labels": {
                "rule": "regraded" if not cfg.uses_stored_labels else cfg.correct_rule,
                "generations": st.labels["generations"],
                "correct": st.labels["correct"],
                "null_labels": st.labels["null_labels"],
            },
            "reverify": {
                "enabled": True,
                "combine": cfg.reverify_combine,
                "timeout_s": cfg.reverify_timeout,
                **{k: st.reverify[k] for k in ("graded", "correct", "timeouts", "errors", *_AGREEMENT.values())},
            }
            if cfg.reverify
            else {"enabled": False},
            "decontamination": {
                "enabled": cfg.decontaminate,
                "ngram_size": cfg.ngram_size,
                "benchmarks": dict(self.index.sizes) if self.index is not None else {},
                "removed": st.remaining["generations_nonempty"] - st.remaining["not_contaminated"],
                "by_benchmark": dict(sorted(st.contaminated_by.items())),
                "list": "contaminated.jsonl" if cfg.decontaminate else None,
            },
            "length_filter": {
                "applied": cfg.length_filter_active,
                "tokenizer": cfg.tokenizer_model,
                "max_prompt_tokens": cfg.max_prompt_tokens,
                "max_response_tokens": cfg.max_response_tokens,
                "sft_too": cfg.length_filter_sft,
                "dropped_by_check": dict(sorted(st.length_dropped.items())),
                "texts_tokenized": self.lengths.tokenized if self.lengths else 0,
            },
            "outputs": {
                "sft": "sft.jsonl",
                "pairs": "pairs.jsonl",
                "order": "shuffled" if cfg.shuffle else "input",
            },
            "timing": {
                "seconds": round(elapsed, 3),
                "rows_per_s": round(rows / elapsed, 1) if elapsed else None,
            },
        }


def render_markdown(report: dict) -> str:
    """The funnel as a markdown table, with the paper's final counts alongside ours."""
    lines = [
        "# REDI data build report",
        "",
        "| step | set | rule | remaining | dropped |",
        "|---|---|---|---:|---:|",
    ]
    for c in report["counts"]:
        rule = c["rule"] if c["applied"] else f"(off) {c['rule']}"
        lines.append(f"| {c['step']} | {c['set']} | {rule} | {c['remaining']:,} | {c['dropped']:,} |")
    paper = report["paper"]
    lines += [
        "",
        "| output | rows | paper |",
        "|---|---:|---:|",
        f"| sft.jsonl | {report['sft_rows']:,} | {paper['sft']:,} |",
        f"| pairs.jsonl | {report['pair_rows']:,} | {paper['pairs']:,} |",
    ]
    mal = report["malformed"]
    if mal["total"]:
        lines += ["", f"Malformed rows skipped: {mal['total']:,}", "", "| reason | rows |", "|---|---:|"]
        lines += [f"| {k} | {v:,} |" for k, v in mal["by_reason"].items()]
    dec = report["decontamination"]
    if dec["enabled"]:
        lines += ["", f"Decontamination ({dec['ngram_size']}-grams): {dec['removed']:,} problems removed", ""]
        lines += ["| benchmark | problems in benchmark | training rows hit |", "|---|---:|---:|"]
        lines += [f"| {k} | {v:,} | {dec['by_benchmark'].get(k, 0):,} |" for k, v in dec["benchmarks"].items()]
    rv = report["reverify"]
    if rv["enabled"]:
        lines += [
            "",
            "Regrading with math-verify ("
            + rv["combine"]
            + "): "
            + ", ".join(f"{k} {v:,}" for k, v in rv.items() if isinstance(v, int) and k != "enabled"),
        ]
    t = report["timing"]
    lines += ["", f"Time: {t['seconds']} s ({t['rows_per_s']} rows/s)", ""]
    return "\n".join(lines)


def build(config: BuilderConfig) -> dict:
    """Run the whole recipe; writes sft.jsonl, pairs.jsonl, report.json, report.md into `output_dir`."""
    return _Builder(config).run()
