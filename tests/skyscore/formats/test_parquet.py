"""Parquet via pyarrow: typed columns, nulls and NaN, file-level type errors, lazy import."""

from __future__ import annotations

import io
import sys
from typing import Any

import numpy as np
import pyarrow as pa  # a dev dependency: the Parquet tests must run, never skip
import pyarrow.parquet as pq
import pytest

from skyscore.errors import InvalidInput, UnsupportedFormat
from skyscore.formats.base import concat_batches
from skyscore.formats.parquet import ParquetEncoder, ParquetFormat
from skyscore.model.schema import Batch, InputSchema, RowError

SCHEMA = InputSchema(["x1", "x2"], ["color"], id_column="id")


def parquet_bytes(table: Any, **kwargs: Any) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **kwargs)
    return sink.getvalue()


def decode(
    data: bytes, schema: InputSchema = SCHEMA, *, chunk_rows: int = 65_536, seekable: bool = True
) -> tuple[Batch, list[RowError], list[int]]:
    source: Any = io.BytesIO(data)
    if not seekable:
        source = _Stream(data)
    parts, errors, sizes = [], [], []
    for batch, errs in ParquetFormat().decode(source, schema, chunk_rows=chunk_rows):
        parts.append(batch)
        errors.extend(errs)
        sizes.append(len(batch) + len(errs))
    return concat_batches(schema, parts), errors, sizes


class _Stream:
    """A read-only, non-seekable stream (an HTTP body, a pipe)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)


def test_decodes_typed_columns_nulls_and_dictionary_strings() -> None:
    table = pa.table(
        {
            "id": ["a", "b", "c", None],
            "x1": pa.array([1.5, None, np.nan, 4.0], type=pa.float64()),
            "x2": pa.array([1, 2, None, 4], type=pa.int32()),
            "color": pa.array(["red", None, "blue", "red"]).dictionary_encode(),
            "extra": [1, 2, 3, 4],
        }
    )
    batch, errors, _ = decode(parquet_bytes(table))
    assert errors == []
    assert batch.rows.tolist() == [1, 2, 3, 4]
    assert batch.numeric.dtype == np.float32
    np.testing.assert_array_equal(
        batch.numeric, np.array([[1.5, 1], [np.nan, 2], [np.nan, np.nan], [4, 4]], np.float32)
    )
    assert batch.categorical.tolist() == [["red"], [""], ["blue"], ["red"]]
    assert batch.ids == ["a", "b", "c", None]


def test_plain_and_integer_categories_and_missing_id_column() -> None:
    schema = InputSchema(["x1"], ["color", "zip"], id_column="id")
    table = pa.table({"x1": [1.0, 2.0], "color": ["a", None], "zip": pa.array([94107, None])})
    batch, errors, _ = decode(parquet_bytes(table, use_dictionary=False), schema)
    assert errors == []
    assert batch.categorical.tolist() == [["a", "94107"], ["", ""]]
    assert batch.ids == [None, None]


def test_infinite_and_out_of_range_values_are_row_errors() -> None:
    table = pa.table(
        {
            "x1": [1.0, np.inf, 2.0, 3.0],
            "x2": [1.0, 1.0, 1e39, -np.inf],
            "color": ["a", "b", "c", "d"],
        }
    )
    batch, errors, _ = decode(parquet_bytes(table))
    assert errors == [
        RowError(2, "x1", "non-finite number"),
        RowError(3, "x2", "number out of float32 range"),
        RowError(4, "x2", "non-finite number"),
    ]
    assert batch.rows.tolist() == [1]
    assert batch.ids == [None]


def test_chunks_respect_chunk_rows_and_non_seekable_sources() -> None:
    n = 1000
    table = pa.table(
        {
            "id": list(range(n)),
            "x1": np.arange(n, dtype=np.float64),
            "x2": np.ones(n),
            "color": [f"c{i % 3}" for i in range(n)],
        }
    )
    data = parquet_bytes(table, row_group_size=300)
    for seekable in (True, False):
        batch, errors, sizes = decode(data, chunk_rows=128, seekable=seekable)
        assert errors == [] and max(sizes) <= 128 and sum(sizes) == n
        assert batch.rows.tolist() == list(range(1, n + 1))
        assert batch.ids == list(range(n))
        assert batch.numeric[:, 0].tolist() == list(range(n))


@pytest.mark.parametrize(
    ("columns", "field"),
    [
        ({"x1": [1.0], "color": ["a"]}, "x2"),
        ({"x1": ["1.0"], "x2": [1.0], "color": ["a"]}, "x1"),
        ({"x1": [True], "x2": [1.0], "color": ["a"]}, "x1"),
        ({"x1": [1.0], "x2": [1.0], "color": [1.5]}, "color"),
    ],
)
def test_missing_or_mistyped_columns_are_file_errors(
    columns: dict[str, list[Any]], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode(parquet_bytes(pa.table(columns)))
    assert caught.value.field == field


def test_unknown_column_in_strict_mode() -> None:
    strict = InputSchema(["x1", "x2"], ["color"], id_column="id", strict=True)
    table = pa.table({"x1": [1.0], "x2": [1.0], "color": ["a"], "surprise": [0]})
    with pytest.raises(InvalidInput) as caught:
        decode(parquet_bytes(table), strict)
    assert caught.value.field == "surprise"


def test_not_parquet_is_a_file_error() -> None:
    with pytest.raises(InvalidInput, match="cannot be read"):
        decode(b"PAR1 this is not really parquet")


def test_missing_pyarrow_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(UnsupportedFormat, match=r"pip install 'skyscore\[parquet\]'"):
        decode(b"PAR1")
    with pytest.raises(UnsupportedFormat, match="skyscore"):
        ParquetEncoder(io.BytesIO(), id_column=None, classes=[0, 1], class_names=["0", "1"])


def _batch(rows: range, ids: list[Any] | None) -> Batch:
    n = len(rows)
    return Batch(
        np.asarray(rows, dtype=np.int64),
        np.zeros((n, 0), np.float32),
        np.zeros((n, 0), object),
        ids,
    )


def test_encoder_writes_flat_typed_columns_incrementally() -> None:
    probabilities = np.array([[0.2, 0.8], [0.9, 0.1], [0.5, 0.5]], dtype=np.float32)
    sink = io.BytesIO()
    encoder = ParquetEncoder(sink, id_column="id", classes=[0, 1], class_names=["0", "1"])
    encoder.write(_batch(range(1, 3), ["a", "b"]), probabilities[:2], np.array([1, 0]))
    encoder.write(_batch(range(3, 4), [None]), probabilities[2:], np.array([0]))
    encoder.close()
    table = pq.read_table(io.BytesIO(sink.getvalue()))
    assert table.column_names == ["row", "id", "label", "probability_0", "probability_1"]
    assert table.schema.field("label").type == pa.int64()
    assert table.schema.field("probability_0").type == pa.float32()
    assert table.column("row").to_pylist() == [1, 2, 3]
    assert table.column("id").to_pylist() == ["a", "b", None]
    assert table.column("label").to_pylist() == [1, 0, 0]
    back = np.stack(
        [table.column("probability_0").to_numpy(), table.column("probability_1").to_numpy()], axis=1
    )
    assert np.array_equal(back, probabilities)


def test_encoder_without_rows_and_with_string_labels_on_a_plain_sink() -> None:
    class Sink:
        def __init__(self) -> None:
            self.data = bytearray()

        def write(self, data: bytes) -> int:
            self.data += data
            return len(data)

    sink = Sink()
    encoder = ParquetEncoder(sink, id_column="id", classes=["no", "yes"], class_names=["no", "yes"])
    encoder.close()
    table = pq.read_table(io.BytesIO(bytes(sink.data)))
    assert table.num_rows == 0
    assert table.schema.field("label").type == pa.string()
    assert table.schema.field("id").type == pa.string()
