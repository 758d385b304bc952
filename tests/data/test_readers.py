"""The one reader of JSONL / Parquet / save_to_disk rows, as the trainer sees it (`schema.iter_rows`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from megatron_redi.data.errors import DataError
from megatron_redi.data.readers import read_rows, resolve_inputs
from megatron_redi.data.schema import iter_rows

ROWS = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(5)]


def test_formats_give_the_same_rows_and_names(tmp_path: Path) -> None:
    import datasets

    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in ROWS[:2]) + "\n\n" + "\n".join(json.dumps(r) for r in ROWS[2:]))
    ds = datasets.Dataset.from_list(ROWS)
    ds.to_parquet(str(tmp_path / "d.parquet"))
    ds.save_to_disk(str(tmp_path / "disk"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dict"))
    got = list(iter_rows(jsonl))
    assert [r for r, _ in got] == ROWS
    assert [w for _, w in got] == [f"{jsonl}: row {n}" for n in (1, 2, 4, 5, 6)]  # JSONL: the line number
    for name in ("d.parquet", "disk", "dict"):
        got = list(iter_rows(tmp_path / name))
        assert [r for r, _ in got] == ROWS, name
        assert [w for _, w in got] == [f"{tmp_path / name}: row {n}" for n in range(1, 6)], name


def test_bad_jsonl_rows_name_file_and_row(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n{oops\n")
    with pytest.raises(DataError, match=f"{bad}: row 2: invalid JSON"):
        list(iter_rows(bad))
    bad.write_text("[1, 2]\n")
    with pytest.raises(DataError, match=f"{bad}: row 1: expected a JSON object"):
        list(iter_rows(bad))
    with pytest.raises(FileNotFoundError, match="--data-path"):
        list(iter_rows(tmp_path / "missing.jsonl"))


def test_builder_view_keeps_bad_lines_and_reads_columns(tmp_path: Path) -> None:
    import datasets

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n\n{oops\n")
    rows = list(read_rows(resolve_inputs([bad])))
    assert [(r.row, r.line, r.error is not None) for r in rows] == [(0, 1, False), (1, 3, True)]
    datasets.Dataset.from_list(ROWS).to_parquet(str(tmp_path / "d.parquet"))
    files = resolve_inputs([tmp_path / "d.parquet"])
    assert files[0].rows == 5
    rows = list(read_rows(files, batch_size=2, columns=["prompt", "missing"]))
    assert [r.data for r in rows] == [{"prompt": f"p{i}"} for i in range(5)] and rows[-1].row == 4


def test_error_type_carries_the_parts() -> None:
    e = DataError.at("f.jsonl", 8, "label_length_mismatch", 9)
    assert isinstance(e, ValueError)
    assert str(e) == "malformed input row: f.jsonl: row 8 (line 9): label_length_mismatch"
    assert (e.path, e.row, e.reason, e.line) == ("f.jsonl", 8, "label_length_mismatch", 9)
