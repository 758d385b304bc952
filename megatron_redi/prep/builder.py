"""Turn raw teacher generations (OpenR1-Math-Raw schema) into the paper's SFT set and REDI pair set.

Rules (docs/DATA.md), applied per problem in this order, each switchable through `BuilderConfig`:
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

This module orchestrates: the rules are in `rules`, reading in `megatron_redi.data.readers`, regrading in
`regrade` (on `megatron_redi.grading`), output in `sink`, the report in `report`. The package must not import
megatron or torch.distributed; pyarrow, datasets and transformers are imported lazily.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from megatron_redi.data.errors import DataError
from megatron_redi.data.readers import RawRow, read_rows, resolve_inputs
from megatron_redi.grading.problem import CORRECT, ERROR, TIMEOUT
from megatron_redi.prep.config import BuilderConfig
from megatron_redi.prep.lengths import TokenLengths
from megatron_redi.prep.regrade import Regrader
from megatron_redi.prep.report import AGREEMENT, BuildState, make_report, render_markdown
from megatron_redi.prep.rules import (
    LABEL_KEYS,
    check_schema,
    combine_labels,
    correct_mask,
    first_correct_incorrect,
    has_empty_generation,
    is_allowed_source,
    is_valid_problem,
    labels_match,
    pair_record,
    sft_record,
    shuffle_key,
)
from megatron_redi.prep.sink import JsonlSink, dumps

# The only columns the rules read: Parquet and Arrow inputs are read without the others.
INPUT_COLUMNS = ["problem", "answer", "generations", "correctness", "problem_is_valid", "source", "uuid"]


@dataclass
class _Candidate:
    raw: RawRow
    labels: list[bool] | None = None  # stored-label verdicts (None when not usable)
    key: int = 0


class _Builder:
    def __init__(self, cfg: BuilderConfig) -> None:
        self.cfg = cfg
        self.out_dir = Path(cfg.output_dir)
        self.state = BuildState()
        self.index = None
        self.lengths: TokenLengths | None = None
        self.regrader: Regrader | None = None

    # -- per-row rules --------------------------------------------------------------------------------
    def _malformed(self, raw: RawRow, reason: str) -> None:
        if self.cfg.strict:
            raise DataError.at(raw.path, raw.row + 1, reason, raw.line)
        key = reason.split(" ")[0]
        self.state.malformed[key] += 1
        if len(self.state.malformed_examples) < 50:
            self.state.malformed_examples.append(
                {"file": raw.path, "row": raw.row + 1, "line": raw.line, "reason": reason}
            )
        if self.state.malformed_keys is None and isinstance(raw.data, dict) and reason.startswith(
            ("missing_field", "wrong_type")
        ):
            self.state.malformed_keys = sorted(raw.data)

    def _row_rules(self, raw: RawRow) -> _Candidate | None:
        cfg, remaining = self.cfg, self.state.remaining
        remaining["rows_read"] += 1
        reason = (
            f"invalid_json ({raw.error})"
            if raw.error is not None
            else check_schema(raw.data, need_labels=cfg.uses_stored_labels, need_answer=cfg.reverify)
        )
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
                    dumps(
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
                    st[AGREEMENT[(stored, regraded)]] += 1
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
            from megatron_redi.prep.decontaminate import build_index

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
            for n, raw in enumerate(read_rows(files, cfg.batch_size, INPUT_COLUMNS)):
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
        report = make_report(
            cfg,
            self.state,
            files,
            elapsed,
            self.index.sizes if self.index is not None else {},
            self.lengths.tokenized if self.lengths else 0,
        )
        (self.out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (self.out_dir / "report.md").write_text(render_markdown(report))
        return report


def build(config: BuilderConfig) -> dict:
    """Run the whole recipe; writes sft.jsonl, pairs.jsonl, report.json, report.md into `output_dir`."""
    return _Builder(config).run()
