"""JSON Lines and JSON arrays: same rules as check_record, streaming, row numbers, encoders."""

from __future__ import annotations

import io
import json
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skyscore.errors import FormatMismatch, InvalidInput
from skyscore.formats.base import concat_batches
from skyscore.formats.jsonl import (
    JsonArrayEncoder,
    JsonArrayFormat,
    JsonLinesEncoder,
    JsonLinesFormat,
)
from skyscore.model.schema import Batch, InputSchema, RowError

SCHEMA = InputSchema(["x1", "x2"], ["color"], id_column="id")
STRICT = InputSchema(["x1", "x2"], ["color"], id_column="id", strict=True)
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_lines(
    data: str | bytes, schema: InputSchema = SCHEMA, *, chunk_rows: int = 65_536, block: int = 0
) -> tuple[Batch, list[RowError], list[int]]:
    raw = data.encode() if isinstance(data, str) else data
    fmt = JsonLinesFormat(block_size=block or None)
    return _collect(fmt.decode(io.BytesIO(raw), schema, chunk_rows=chunk_rows), schema)


def decode_array(
    data: str | bytes, schema: InputSchema = SCHEMA, *, chunk_rows: int = 65_536, block: int = 0
) -> tuple[Batch, list[RowError], list[int]]:
    raw = data.encode() if isinstance(data, str) else data
    fmt = JsonArrayFormat(block_size=block) if block else JsonArrayFormat()
    return _collect(fmt.decode(io.BytesIO(raw), schema, chunk_rows=chunk_rows), schema)


def _collect(chunks: Any, schema: InputSchema) -> tuple[Batch, list[RowError], list[int]]:
    parts, errors, sizes = [], [], []
    for batch, errs in chunks:
        parts.append(batch)
        errors.extend(errs)
        sizes.append(len(batch) + len(errs))
    return concat_batches(schema, parts), errors, sizes


def same_batch(a: Batch, b: Batch) -> bool:
    return (
        np.array_equal(a.rows, b.rows)
        and np.array_equal(a.numeric, b.numeric, equal_nan=True)
        and a.numeric.dtype == b.numeric.dtype == np.float32
        and a.categorical.tolist() == b.categorical.tolist()
        and a.ids == b.ids
    )


def reference(records: list[Any], schema: InputSchema = SCHEMA) -> tuple[Batch, list[RowError]]:
    """What HTTP would make of the same records: the schema's own implementation."""
    return schema.records_to_batch(records)


def jsonl(records: list[Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


GOOD = [
    {"id": "a", "x1": 1.5, "x2": -2, "color": "red"},
    {"id": 7, "x1": None, "x2": 3, "color": None},
    {"x1": 1e-3, "x2": 0, "color": 12, "extra": [1, 2]},
]


# --------------------------------------------------------------------------- JSON Lines
def test_jsonl_decodes_like_records_to_batch() -> None:
    batch, errors, _ = decode_lines(jsonl(GOOD))
    expected, expected_errors = reference(GOOD)
    assert errors == expected_errors == []
    assert same_batch(batch, expected)
    assert batch.ids == ["a", 7, None]
    assert batch.categorical.tolist() == [["red"], [""], ["12"]]
    assert np.isnan(batch.numeric[1, 0])


@pytest.mark.parametrize(
    ("record", "column", "reason"),
    [
        ({"x1": "1", "x2": 2, "color": "a"}, "x1", "expected a number, got string"),
        ({"x1": True, "x2": 2, "color": "a"}, "x1", "expected a number, got boolean"),
        ({"x1": 1, "color": "a"}, "x2", "missing column"),
        ({"x1": 1, "x2": 2, "color": 1.5}, "color", "expected a string category, got number"),
        ({"x1": 1, "x2": 2, "color": False}, "color", "expected a string category, got boolean"),
        ({"x1": 1, "x2": 1e39, "color": "a"}, "x2", "number out of float32 range"),
        ({"x1": 10**40, "x2": 1, "color": "a"}, "x1", "number out of float32 range"),
        ({"x1": 10**400, "x2": 1, "color": "a"}, "x1", "number out of float32 range"),
        ([1, 2, 3], None, "expected a JSON object, got list"),
        ("text", None, "expected a JSON object, got str"),
    ],
)
def test_jsonl_bad_records_match_check_record(record: Any, column: str | None, reason: str) -> None:
    records = [GOOD[0], record, GOOD[1]]
    batch, errors, _ = decode_lines(jsonl(records))
    assert errors == [RowError(2, column, reason)]
    expected, expected_errors = reference(records)
    assert errors == expected_errors
    assert same_batch(batch, expected)


def test_jsonl_invalid_json_lines_blank_lines_and_numbering() -> None:
    data = (
        jsonl(GOOD[:1]).encode()
        + b"\n   \n"
        + b'{"x1": 1, "x2": \n'
        + jsonl(GOOD[1:2]).encode()
        + b'{"x1": 1e400, "x2": 1, "color": "a"}\n'
        + b'{"x1": 1, "x2": 2, "color": "\xff"}\n'
        + b"\x0c\n"
    )
    batch, errors, _ = decode_lines(data)
    assert batch.rows.tolist() == [1, 3]  # blank lines are not rows
    assert [(e.row, e.column) for e in errors] == [(2, None), (4, None), (5, None), (6, None)]
    assert all(e.reason.startswith("invalid JSON") for e in errors)


def test_jsonl_strict_mode_reports_unknown_columns_per_row() -> None:
    records = [{"id": 1, "x1": 1, "x2": 2, "color": "a"}, {"x1": 1, "x2": 2, "color": "a", "z": 0}]
    batch, errors, _ = decode_lines(jsonl(records), STRICT)
    assert errors == [RowError(2, "z", "unknown column (strict mode)")]
    assert batch.rows.tolist() == [1]


def test_jsonl_bom_and_crlf() -> None:
    data = b"\xef\xbb\xbf" + jsonl(GOOD[:2]).replace("\n", "\r\n").encode()
    batch, errors, _ = decode_lines(data)
    assert errors == [] and len(batch) == 2


def test_jsonl_chunks_respect_chunk_rows() -> None:
    records = [{"id": i, "x1": i, "x2": -i, "color": f"c{i % 4}"} for i in range(500)]
    text = jsonl(records[:250]) + "\n\n" + jsonl(records[250:])
    batch, errors, sizes = decode_lines(text, chunk_rows=33, block=700)
    assert errors == [] and max(sizes) <= 33 and sum(sizes) == 500
    assert batch.ids == list(range(500))
    assert batch.rows.tolist() == list(range(1, 501))


json_number = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(-(10**45), 10**45),
)
json_value = st.one_of(
    st.none(), st.booleans(), json_number, st.text(max_size=5), st.lists(st.integers(), max_size=2)
)
record = st.one_of(
    st.fixed_dictionaries(
        {
            "x1": st.one_of(st.none(), json_number),
            "x2": st.one_of(st.none(), json_number),
            "color": st.one_of(st.none(), st.text(max_size=4), st.integers(-5, 5)),
        },
        optional={"id": json_value, "zz": json_value},
    ),
    st.dictionaries(st.sampled_from(["x1", "x2", "color", "id", "q"]), json_value, max_size=5),
    json_value,
)


@SETTINGS
@given(st.lists(record, max_size=60), st.booleans(), st.integers(1, 25))
def test_jsonl_agrees_with_records_to_batch(
    records: list[Any], strict: bool, chunk_rows: int
) -> None:
    schema = STRICT if strict else SCHEMA
    batch, errors, sizes = decode_lines(jsonl(records), schema, chunk_rows=chunk_rows)
    expected, expected_errors = reference(records, schema)
    assert errors == expected_errors
    assert same_batch(batch, expected)
    assert not sizes or max(sizes) <= chunk_rows


@SETTINGS
@given(st.lists(record, max_size=60), st.integers(1, 25), st.sampled_from([0, 64, 300]))
def test_json_array_agrees_with_records_to_batch(
    records: list[Any], chunk_rows: int, block: int
) -> None:
    batch, errors, sizes = decode_array(json.dumps(records), chunk_rows=chunk_rows, block=block)
    expected, expected_errors = reference(records)
    assert errors == expected_errors
    assert same_batch(batch, expected)
    assert not sizes or max(sizes) <= chunk_rows


finite32 = st.floats(
    width=32, allow_nan=False, allow_infinity=False, min_value=-(2.0**127), max_value=2.0**127
)


@SETTINGS
@given(st.lists(st.tuples(finite32, finite32, st.text(max_size=6)), max_size=40))
def test_valid_records_round_trip_exactly(rows: list[tuple[float, float, str]]) -> None:
    records = [{"id": i, "x1": a, "x2": b, "color": c} for i, (a, b, c) in enumerate(rows)]
    for decoded in (decode_lines(jsonl(records)), decode_array(json.dumps(records), block=128)):
        batch, errors, _ = decoded
        assert errors == []
        assert np.array_equal(
            batch.numeric, np.array([[a, b] for a, b, _ in rows], dtype=np.float32).reshape(-1, 2)
        )
        assert batch.categorical.reshape(-1).tolist() == [c for _, _, c in rows]
        assert batch.ids == list(range(len(rows)))


# --------------------------------------------------------------------------- JSON arrays
def test_json_array_streams_with_nested_values_and_tricky_strings() -> None:
    records = [
        {"id": {"k": [1, {"z": "},{"}]}, "x1": i, "x2": 1, "color": '"},{"x1":'} for i in range(200)
    ]
    text = json.dumps(records, indent=2)
    batch, errors, sizes = decode_array(text, chunk_rows=16, block=97)
    assert errors == [] and max(sizes) <= 16
    assert batch.numeric[:, 0].tolist() == list(range(200))
    assert batch.ids == [r["id"] for r in records]
    assert batch.categorical[0, 0] == '"},{"x1":'


def test_json_array_element_numbers_and_bad_elements() -> None:
    records: list[Any] = [GOOD[0], 5, {"x1": "no", "x2": 1, "color": "a"}, GOOD[1]]
    batch, errors, _ = decode_array(json.dumps(records))
    assert batch.rows.tolist() == [1, 4]
    assert errors == [
        RowError(2, None, "expected a JSON object, got int"),
        RowError(3, "x1", "expected a number, got string"),
    ]


def test_json_array_empty_and_whitespace() -> None:
    batch, errors, sizes = decode_array(" \n[ ]\n")
    assert len(batch) == 0 and errors == [] and sizes == []


@pytest.mark.parametrize(
    "text",
    [
        '[{"x1": 1, "x2": 2, "color": "a"}',  # no closing bracket
        '[{"x1": 1, "x2": 2, "color": "a"}] trailing',
        '[{"x1": 1, "x2": 2, "color": "a"}, {"x1": 1 "x2": 2}]',
    ],
)
def test_malformed_json_array_is_a_file_error(text: str) -> None:
    with pytest.raises(InvalidInput, match="invalid JSON"):
        decode_array(text)


def test_malformed_element_in_the_middle_of_a_large_array() -> None:
    good = json.dumps({"x1": 1, "x2": 2, "color": "a"})
    text = "[" + ",".join([good] * 300 + ['{"x1": }'] + [good] * 300) + "]"
    with pytest.raises(InvalidInput, match="invalid JSON"):
        decode_array(text, block=512)


def test_json_that_is_not_an_array() -> None:
    with pytest.raises(FormatMismatch):
        decode_array('{"x1": 1}')
    with pytest.raises(FormatMismatch):
        decode_array("")


# ------------------------------------------------------------------------------ encoders
def _batch(n: int, ids: list[Any] | None) -> Batch:
    return Batch(np.arange(1, n + 1), np.zeros((n, 0), np.float32), np.zeros((n, 0), object), ids)


def _probabilities(n: int) -> np.ndarray:
    p = np.random.default_rng(1).random((n, 1)).astype(np.float32)
    return np.hstack([p, 1 - p]).astype(np.float32)


@pytest.mark.parametrize("array", [False, True])
def test_encoders_write_prediction_objects(array: bool) -> None:
    n = 300
    ids: list[Any] = [i if i % 3 else {"k": f"v{i}"} for i in range(n)]
    ids[5] = 'quote"and\nnewline'
    probabilities = _probabilities(n)
    sink = io.BytesIO()
    cls = JsonArrayEncoder if array else JsonLinesEncoder
    encoder = cls(sink, id_column="key", classes=[0, 1], class_names=["0", "1"])
    encoder.write(_batch(100, ids[:100]), probabilities[:100], probabilities[:100].argmax(1))
    encoder.write(_batch(0, []), probabilities[:0], np.empty(0, np.int64))
    encoder.write(
        Batch(
            np.arange(101, n + 1),
            np.zeros((200, 0), np.float32),
            np.zeros((200, 0), object),
            ids[100:],
        ),
        probabilities[100:],
        probabilities[100:].argmax(1),
    )
    encoder.close()
    raw = sink.getvalue()
    objects = json.loads(raw) if array else [json.loads(line) for line in raw.splitlines()]
    assert len(objects) == n
    assert list(objects[0]) == ["row", "key", "label", "probabilities"]
    assert [o["row"] for o in objects] == list(range(1, n + 1))
    assert [o["key"] for o in objects] == ids
    assert [o["label"] for o in objects] == probabilities.argmax(1).tolist()
    back = np.array(
        [[o["probabilities"]["0"], o["probabilities"]["1"]] for o in objects], dtype=np.float32
    )
    assert np.array_equal(back, probabilities)


@pytest.mark.parametrize("array", [False, True])
def test_encoders_with_no_rows_and_non_finite_probabilities(array: bool) -> None:
    cls = JsonArrayEncoder if array else JsonLinesEncoder
    sink = io.BytesIO()
    cls(sink, id_column=None, classes=["a", "b"], class_names=["a", "b"]).close()
    assert sink.getvalue() == (b"[]\n" if array else b"")
    sink = io.BytesIO()
    encoder = cls(sink, id_column=None, classes=["a", "b"], class_names=["a", "b"])
    probabilities = np.array([[np.nan, 0.5], [0.25, 0.75]], dtype=np.float32)
    encoder.write(_batch(2, None), probabilities, np.array([1, 1]))
    encoder.close()
    raw = sink.getvalue()
    objects = json.loads(raw) if array else [json.loads(x) for x in raw.splitlines()]
    assert objects == [
        {"row": 1, "label": "b", "probabilities": {"a": None, "b": 0.5}},
        {"row": 2, "label": "b", "probabilities": {"a": 0.25, "b": 0.75}},
    ]


def test_sniff() -> None:
    assert JsonLinesFormat().sniff(b'\n {"a": 1}') is None
    assert JsonLinesFormat().sniff(b"") is None
    assert "JSON array" in (JsonLinesFormat().sniff(b"[{}]") or "")
    assert JsonArrayFormat().sniff(b"\xef\xbb\xbf [") is None
    assert "'{'" in (JsonArrayFormat().sniff(b'{"a": 1}') or "")
    assert msgspec.json.decode(b"[]") == []
