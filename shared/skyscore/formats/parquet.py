"""Parquet in and out through pyarrow, an optional dependency imported only when used.

Parquet is typed, so a column whose type cannot hold its feature (a string column for a numeric
feature, say) is a file-level :class:`InvalidInput` naming the column, like a missing column;
row errors are about values: ``inf`` and numbers beyond float32 (a float NaN is a missing value,
as pandas writes missing floats, the same as null). Categorical columns may be strings
(dictionary-encoded or not) or integers (written as their decimal text, as JSON integers are).
Reading needs a seekable file (Parquet's index is at the end); any other stream is first
spooled to a temporary file, so memory stays bounded either way.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from skyscore.errors import InvalidInput, UnsupportedFormat
from skyscore.formats.base import (
    DEFAULT_CHUNK_ROWS,
    Chunk,
    Encoder,
    FileFormat,
    Readable,
    Writable,
)
from skyscore.model.schema import FLOAT32_MAX, MISSING_CATEGORY, Batch, InputSchema, RowError

MAGIC = b"PAR1"
INSTALL_HINT = "pip install 'skyscore[parquet]'"


def import_pyarrow() -> tuple[Any, Any]:
    """``(pyarrow, pyarrow.parquet)``, or :class:`UnsupportedFormat` saying how to get them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise UnsupportedFormat(
            f"Parquet files need pyarrow, which is not installed: {INSTALL_HINT}"
        ) from exc
    return pyarrow, pyarrow.parquet


def _seekable(source: Readable) -> bool:
    seekable = getattr(source, "seekable", None)
    return bool(seekable()) if callable(seekable) else False


class _SinkFile(io.RawIOBase):
    """A file object over any ``write``-able sink (pyarrow wants ``tell`` and ``closed``)."""

    def __init__(self, sink: Writable) -> None:
        super().__init__()
        self._sink = sink
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._sink.write(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def close(self) -> None:  # the sink belongs to the caller: only this wrapper closes
        super().close()


def _kind(pa: Any, arrow_type: Any) -> str:
    types = pa.types
    if types.is_dictionary(arrow_type):
        return _kind(pa, arrow_type.value_type)
    if types.is_integer(arrow_type):
        return "integer"
    if types.is_floating(arrow_type) or types.is_decimal(arrow_type):
        return "float"
    if types.is_string(arrow_type) or types.is_large_string(arrow_type):
        return "string"
    if getattr(types, "is_string_view", None) and types.is_string_view(arrow_type):
        return "string"
    if types.is_null(arrow_type):
        return "null"
    return "other"


class ParquetFormat(FileFormat):
    """Apache Parquet (``.parquet``): typed columns, read in row batches."""

    name = "parquet"
    label = "Parquet"
    extensions = (".parquet",)

    def decode(
        self, source: Readable, schema: InputSchema, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
    ) -> Iterator[Chunk]:
        """Chunks of at most ``chunk_rows`` rows, read with ``ParquetFile.iter_batches``."""
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be at least 1")
        pa, pq = import_pyarrow()
        spool: Any = None
        handle: Any = source
        if not _seekable(source):
            spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
            shutil.copyfileobj(source, spool, 1 << 20)
            spool.seek(0)
            handle = spool
        try:
            yield from self._decode(pa, pq, handle, schema, chunk_rows)
        finally:
            if spool is not None:
                spool.close()

    def _decode(
        self,
        pa: Any,
        pq: Any,
        handle: Any,
        schema: InputSchema,
        chunk_rows: int,
    ) -> Iterator[Chunk]:
        try:
            arrow_schema = pq.read_schema(handle)
            handle.seek(0)
        except (pa.ArrowException, OSError) as exc:
            raise InvalidInput(f"the Parquet file cannot be read: {exc}") from exc
        names = list(arrow_schema.names)
        schema.check_columns(names, "the Parquet file")
        kinds = {name: _kind(pa, arrow_schema.field(name).type) for name in schema.columns}
        for name in schema.numeric:
            if kinds[name] not in ("integer", "float", "null"):
                raise InvalidInput(
                    f"column {name!r} has Parquet type {arrow_schema.field(name).type}; "
                    "a numeric feature needs an integer, floating-point or decimal column",
                    field=name,
                )
        for name in schema.categorical:
            if kinds[name] not in ("string", "integer", "null"):
                raise InvalidInput(
                    f"column {name!r} has Parquet type {arrow_schema.field(name).type}; "
                    "a categorical feature needs a string or integer column",
                    field=name,
                )
        id_column = schema.id_column if schema.id_column in names else None
        columns = list(dict.fromkeys([*schema.columns, *([id_column] if id_column else [])]))
        strings = [n for n in schema.categorical if kinds[n] == "string"]
        try:
            parquet = pq.ParquetFile(handle, read_dictionary=strings or None)
            batches = parquet.iter_batches(batch_size=chunk_rows, columns=columns)
            next_row = 1
            for record_batch in batches:
                yield self._chunk(pa, record_batch, schema, id_column, next_row)
                next_row += record_batch.num_rows
        except pa.ArrowException as exc:
            raise InvalidInput(f"the Parquet file cannot be read: {exc}") from exc

    @staticmethod
    def _chunk(
        pa: Any,
        record_batch: Any,
        schema: InputSchema,
        id_column: str | None,
        first_row: int,
    ) -> Chunk:
        n = record_batch.num_rows
        k, m = len(schema.numeric), len(schema.categorical)
        numeric = np.empty((n, k), dtype=np.float64)
        for j, name in enumerate(schema.numeric):
            column = record_batch.column(name)
            if pa.types.is_null(column.type):
                numeric[:, j] = np.nan
            else:
                numeric[:, j] = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        categorical = np.empty((n, m), dtype=object)
        for j, name in enumerate(schema.categorical):
            categorical[:, j] = _categories(pa, record_batch.column(name))
        errors: list[RowError] = []
        bad: np.ndarray = ~(np.isnan(numeric) | (np.abs(numeric) <= FLOAT32_MAX))
        keep = np.asarray(~bad.any(axis=1), dtype=bool)
        if not keep.all():
            for i in np.flatnonzero(~keep).tolist():
                j = int(np.argmax(bad[i]))
                value = float(numeric[i, j])
                reason = "non-finite number" if np.isinf(value) else "number out of float32 range"
                errors.append(RowError(first_row + i, schema.numeric[j], reason))
        ids: list[Any] | None = None
        if schema.id_column is not None:
            ids = (
                record_batch.column(id_column).to_pylist() if id_column is not None else [None] * n
            )
        rows = np.arange(first_row, first_row + n, dtype=np.int64)
        if not keep.all():
            rows, numeric, categorical = rows[keep], numeric[keep], categorical[keep]
            ids = (
                None if ids is None else [i for i, ok in zip(ids, keep.tolist(), strict=True) if ok]
            )
        return Batch(rows, numeric.astype(np.float32), categorical, ids), errors

    def encoder_type(self) -> type[ParquetEncoder]:
        """Writes Parquet."""
        return ParquetEncoder

    def sniff(self, head: bytes) -> str | None:
        """Parquet files start with the magic bytes ``PAR1``."""
        if head[:4] == MAGIC:
            return None
        if not head:
            return "it is empty"
        return "it does not start with the Parquet magic bytes 'PAR1'"


def _categories(pa: Any, column: Any) -> np.ndarray:
    """An object array of ``str`` from a string, dictionary or integer column (null → "")."""
    n = len(column)
    if pa.types.is_null(column.type):
        out = np.empty(n, dtype=object)
        out[:] = MISSING_CATEGORY
        return out
    if pa.types.is_dictionary(column.type):
        values = column.dictionary.to_pylist()
        if not pa.types.is_integer(column.dictionary.type):
            lookup = np.array([*values, MISSING_CATEGORY], dtype=object)
        else:
            lookup = np.array([*(str(v) for v in values), MISSING_CATEGORY], dtype=object)
        indices = column.indices.fill_null(len(values)).to_numpy(zero_copy_only=False)
        taken: np.ndarray = lookup[indices]
        return taken
    if pa.types.is_integer(column.type):
        out = np.empty(n, dtype=object)
        out[:] = [MISSING_CATEGORY if v is None else str(v) for v in column.to_pylist()]
        return out
    values = column.to_numpy(zero_copy_only=False)
    if column.null_count:
        values = values.astype(object)
        values[column.is_null().to_numpy(zero_copy_only=False)] = MISSING_CATEGORY
    return np.asarray(values, dtype=object)


class ParquetEncoder(Encoder):
    """``row``, the id column, ``label`` and float32 ``probability_<class>`` columns.

    The file schema is fixed by the first chunk (the id column's type is inferred from its
    values); later chunks are cast to it.
    """

    def __init__(
        self,
        sink: Writable,
        *,
        id_column: str | None,
        classes: Sequence[str | int],
        class_names: Sequence[str],
    ) -> None:
        super().__init__(sink, id_column=id_column, classes=classes, class_names=class_names)
        self._pa, self._pq = import_pyarrow()
        self._file = _SinkFile(sink)
        self._writer: Any = None
        self._schema: Any = None
        int_labels = all(isinstance(c, int) and not isinstance(c, bool) for c in self.classes)
        label_type = self._pa.int64() if int_labels else self._pa.string()
        self._labels = self._pa.array(
            [c if int_labels else str(c) for c in self.classes], type=label_type
        )

    def _table(self, batch: Batch, probabilities: np.ndarray, labels: np.ndarray) -> Any:
        pa = self._pa
        columns: dict[str, Any] = {"row": pa.array(batch.rows, type=pa.int64())}
        if self.id_column is not None:
            ids = batch.ids if batch.ids is not None else [None] * len(batch)
            id_type = None if self._schema is None else self._schema.field(self.id_column).type
            try:
                columns[self.id_column] = pa.array(ids, type=id_type)
            except (pa.ArrowException, TypeError, ValueError):
                if id_type is not None and not pa.types.is_string(id_type):
                    raise
                text = [None if v is None else str(v) for v in ids]
                columns[self.id_column] = pa.array(text, type=pa.string())
        columns["label"] = self._labels.take(pa.array(labels.astype(np.int64)))
        probabilities = np.asarray(probabilities, dtype=np.float32)
        for j, name in enumerate(self.class_names):
            columns[f"probability_{name}"] = pa.array(probabilities[:, j], type=pa.float32())
        table = pa.table(columns)
        if self._schema is not None:
            table = table.cast(self._schema)
        return table

    def _open(self, table: Any) -> None:
        if self._writer is None:
            schema = table.schema
            if self.id_column is not None and self._pa.types.is_null(
                schema.field(self.id_column).type
            ):
                index = schema.get_field_index(self.id_column)
                schema = schema.set(index, self._pa.field(self.id_column, self._pa.string()))
                table = table.cast(schema)
            self._schema = schema
            self._writer = self._pq.ParquetWriter(self._file, schema)

    def _write(self, batch: Batch, probabilities: np.ndarray, labels: np.ndarray) -> None:
        if not len(batch) and self._writer is not None:
            return
        table = self._table(batch, probabilities, labels)
        self._open(table)
        if self._schema is not None and table.schema != self._schema:
            table = table.cast(self._schema)
        if len(batch):
            self._writer.write_table(table)
            self.bytes_written = self._file.tell()

    def _close(self) -> None:
        if self._writer is None:
            empty = Batch(
                np.empty(0, dtype=np.int64),
                np.empty((0, 0), dtype=np.float32),
                np.empty((0, 0), dtype=object),
                [] if self.id_column is not None else None,
            )
            probabilities = np.empty((0, len(self.classes)), dtype=np.float32)
            self._open(self._table(empty, probabilities, np.empty(0, dtype=np.int64)))
        self._writer.close()
        self.bytes_written = self._file.tell()


FORMAT = ParquetFormat()
