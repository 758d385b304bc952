"""Tokenisation cache (hit, invalidation, workers), first-fit-decreasing packing, error reporting."""

from __future__ import annotations

import json

import pytest

from megatron_redi.data.dataset import DataConfig, build_dataset, first_fit_decreasing, make_packed_micro_batches
from megatron_redi.data.errors import DataError
from megatron_redi.data.tokenize import ChatEncoder, TokenizeConfig, load_tokenizer
from tests.helpers_dist import SAMPLE, TINY


def _cfg(tmp_path, data, **kw):
    return DataConfig([str(data)], str(TINY), paired=True, tokenize=TokenizeConfig(seq_length=512),
                      cache_dir=str(tmp_path / "cache"), **kw)


@pytest.fixture()
def data(tmp_path):
    d = tmp_path / "pairs.jsonl"
    d.write_text("\n".join((SAMPLE / "pairs.jsonl").read_text().splitlines()[:40]) + "\n")
    return d


def test_cache_matches_direct_encoding_then_hits_and_invalidates(tmp_path, data):
    ds = build_dataset(_cfg(tmp_path, data, workers=1, chunk_rows=7), progress=False)
    assert ds.stats["cache"] == "built" and len(ds) == 40
    enc = ChatEncoder(load_tokenizer(TINY), TokenizeConfig(seq_length=512))
    for i, line in enumerate(data.read_text().splitlines()[:5]):  # independent, unbatched encoding
        row = json.loads(line)
        p = enc.encode_prompt(row["prompt"])
        assert ds[i].prompt == p
        assert ds[i].completions == [enc.encode_completion(row["prompt"], row[k]) for k in ("chosen", "rejected")]
        assert ds.num_tokens(i) == ds[i].num_tokens
    assert build_dataset(_cfg(tmp_path, data, workers=1), progress=False).stats["cache"] == "hit"
    # a changed byte in the data, or a changed length setting, is a different cache entry
    data.write_text(data.read_text().replace("What is", "What's", 1))
    assert build_dataset(_cfg(tmp_path, data, workers=1), progress=False).stats["cache"] == "built"
    other = _cfg(tmp_path, data, workers=1)
    other.tokenize = TokenizeConfig(seq_length=64, max_prompt_length=32, truncate_long_examples=True)
    ds2 = build_dataset(other, progress=False)
    assert ds2.stats["cache"] == "built" and ds2.stats["sequences_truncated"] > 0 and len(ds2) == 40
    assert all(max(ds2.doc_lengths(i)) <= 64 for i in range(len(ds2)))


def test_worker_processes_give_the_same_tokens(tmp_path, data):
    one = build_dataset(_cfg(tmp_path / "a", data, workers=1), progress=False)
    two = build_dataset(_cfg(tmp_path / "b", data, workers=2, chunk_rows=8), progress=False)
    assert [one[i] for i in range(len(one))] == [two[i] for i in range(len(two))]


def test_bad_row_in_a_worker_names_file_and_row(tmp_path, data):
    lines = data.read_text().splitlines()
    row = json.loads(lines[17])
    row["chosen"] = 5
    lines[17] = json.dumps(row)
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=f"{data}: row 18"):
        build_dataset(_cfg(tmp_path, data, workers=2, chunk_rows=4), progress=False)
    assert not list((tmp_path / "cache").glob("*/stats.json"))  # nothing half-written is left as a cache


def test_first_fit_decreasing():
    sizes = [7, 5, 5, 4, 3, 2, 2, 12]
    bins = first_fit_decreasing(sizes, 10)
    assert sorted(i for b in bins for i in b) == list(range(len(sizes)))  # every unit exactly once
    for b in bins:
        assert sum(sizes[i] for i in b) <= 10 or len(b) == 1  # an oversized unit sits alone
    # by hand: 12 alone (oversized), 7+3, 5+5, 4+2+2 -> 4 bins, the optimum for 40 tokens here
    assert sorted(sorted(sizes[i] for i in b) for b in bins) == [[2, 2, 4], [3, 7], [5, 5], [12]]
    assert first_fit_decreasing(sizes, 10) == bins  # deterministic


def test_packed_micro_batches_keep_pairs_and_report_efficiency(tmp_path, data):
    ds = build_dataset(_cfg(tmp_path, data, workers=1), progress=False)
    exs = [ds[i] for i in range(len(ds))]
    mbs, eff = make_packed_micro_batches(exs, 1024, 1)
    assert sum(mb.num_units for mb in mbs) == len(exs)
    for mb in mbs:
        assert mb.doc_is_chosen.tolist() == [True, False] * mb.num_units
        assert mb.num_real_tokens <= 1024 or mb.num_units == 1
    assert 0 < eff <= 1 and abs(eff - sum(e.num_tokens for e in exs) / (1024 * len(mbs))) < 1e-9
