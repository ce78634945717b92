"""Issue 18, item 1: property tests of every decoder (bounded: a few dozen examples each).

* Arbitrary bytes, put through the content check and the decoder as the pipeline does, never
  raise anything but a skyscore error, and every row they yield is a good row or a row error
  (numbered from 1, each once).
* Valid rows written in each format (CSV with both engines, JSON Lines, JSON arrays, Parquet)
  decode back to the same values, in order, with no errors, whatever the chunk size.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skyscore.errors import SkyscoreError
from skyscore.formats import check_content
from skyscore.formats.base import FileFormat
from skyscore.formats.csv import CsvFormat
from skyscore.formats.jsonl import JsonArrayFormat, JsonLinesFormat
from skyscore.formats.parquet import ParquetFormat
from skyscore.model.predictor import Predictor
from skyscore.model.schema import InputSchema

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from tiny_model import tiny_card, tiny_onnx  # noqa: E402

PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
DECODERS: dict[str, tuple[str, FileFormat]] = {
    "csv-arrow": ("csv", CsvFormat(engine="arrow")),
    "csv-numpy": ("csv", CsvFormat(engine="numpy")),
    "jsonl": ("jsonl", JsonLinesFormat(block_size=64)),
    "json": ("json", JsonArrayFormat(block_size=64)),
    "parquet": ("parquet", ParquetFormat()),
}


@pytest.fixture(scope="module")
def schema() -> InputSchema:
    data = tiny_onnx()
    return Predictor(tiny_card(data), data).schema


def decode_all(fmt: str, decoder: FileFormat, data: bytes, schema: InputSchema, chunk: int) -> Any:
    """The pipeline's order: the content check on the head, then the decoder, to the end."""
    check_content(fmt, data[: 64 << 10])
    rows: list[int] = []
    errors: list[int] = []
    values: list[tuple[float, float, str]] = []
    for batch, row_errors in decoder.decode(io.BytesIO(data), schema, chunk_rows=chunk):
        # at most ``chunk`` rows, but for the lines read past a quoted field left open to the
        # end of the file (MAX_RECORD_LINES at most): those come in the chunk that reports it
        assert len(batch) + len(row_errors) <= chunk or any(
            e.reason == "unterminated quoted field" for e in row_errors
        ), (len(batch), row_errors)
        rows += batch.rows.tolist()
        errors += [e.row for e in row_errors]
        assert all(e.reason for e in row_errors)
        values += [
            (float(a), float(b), str(c))
            for (a, b), (c,) in zip(batch.numeric.tolist(), batch.categorical.tolist(), strict=True)
        ]
    every = sorted(rows + errors)
    assert every == list(range(1, len(every) + 1)), "each row once, numbered from 1"
    return rows, errors, values


HEADERS = st.sampled_from([b"", b"x1,x2,color\n", b"color,x2,x1\n", b'{"x1":', b"[", b"PAR1"])
FRAGMENTS = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from(
            [
                b"0.5,0.25,red\n",
                b'"a\nb",1,2\n',
                b"nan,inf,\n",
                b"1e400,-0,x\n",
                b'{"x1": 1, "x2": 2, "color": "red"}\n',
                b'{"x1": 1e400}\n',
                b"[" * 50 + b"]" * 50,
                b",\n",
                b"\xef\xbb\xbf",
                b"\r\n",
                b'"',
            ]
        ),
    ),
    max_size=12,
)


@pytest.mark.parametrize("decoder_name", sorted(DECODERS))
@PROPERTY
@given(head=HEADERS, parts=FRAGMENTS, chunk=st.integers(1, 5))
def test_arbitrary_bytes_give_only_skyscore_errors(
    decoder_name: str, schema: InputSchema, head: bytes, parts: list[bytes], chunk: int
) -> None:
    fmt, decoder = DECODERS[decoder_name]
    data = head + b"".join(parts)
    try:
        decode_all(fmt, decoder, data, schema, chunk)
    except SkyscoreError as error:
        assert error.to_problem()["status"] < 500, error


FINITE = st.floats(min_value=-1e30, max_value=1e30, allow_nan=False, allow_infinity=False)
CATEGORY = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00", exclude_categories=("Cs",)),
    min_size=1,
    max_size=12,
).filter(lambda s: s.strip() == s and s.strip() != "")
ROWS = st.lists(st.tuples(FINITE, FINITE, CATEGORY), min_size=0, max_size=30)


def encode(fmt: str, rows: list[tuple[float, float, str]]) -> bytes:
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["x1", "x2", "color"])
        writer.writerows([repr(a), repr(b), c] for a, b, c in rows)
        return out.getvalue().encode()
    records = [{"x1": a, "x2": b, "color": c} for a, b, c in rows]
    if fmt == "jsonl":
        return b"".join(json.dumps(r).encode() + b"\n" for r in records)
    if fmt == "json":
        return json.dumps(records).encode()
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    table = pa.table(
        {
            "x1": pa.array([a for a, _, _ in rows], pa.float64()),
            "x2": pa.array([b for _, b, _ in rows], pa.float64()),
            "color": pa.array([c for _, _, c in rows], pa.string()),
        }
    )
    pq.write_table(table, buffer, row_group_size=7)
    return buffer.getvalue()


@pytest.mark.parametrize("decoder_name", sorted(DECODERS))
@PROPERTY
@given(rows=ROWS, chunk=st.integers(1, 8))
def test_valid_rows_round_trip(
    decoder_name: str, schema: InputSchema, rows: list[tuple[float, float, str]], chunk: int
) -> None:
    fmt, decoder = DECODERS[decoder_name]
    if fmt == "csv" and any(c.lstrip().startswith(("#",)) for _, _, c in rows):
        rows = [(a, b, c.replace("#", "h")) for a, b, c in rows]
    got_rows, errors, values = decode_all(fmt, decoder, encode(fmt, rows), schema, chunk)
    assert errors == []
    assert got_rows == list(range(1, len(rows) + 1))
    expected = [(float(np.float32(a)), float(np.float32(b)), c) for a, b, c in rows]
    assert values == expected
