"""The pyarrow CSV path, where pyarrow is installed: Arrow's multi-threaded C++ parser and writer.

Used only where pyarrow is installed (the local runtime, container images), never required:
the Lambda zip goes without it and the numpy/msgspec paths give the same values and bytes.
pyarrow takes a chunk only when every row converts cleanly; any doubt returns ``None`` and the
chunk goes down the exact paths.

Nothing here changes process-wide state: Arrow's memory pool is chosen per :class:`ArrowCsv`
(mimalloc where the build has it) and passed to each call, not set as Arrow's default.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from skyscore.formats.csv_records import Columns, Simple, fitting_rows

# pyarrow parses a chunk's blocks on its thread pool (measured for 1M rows on 2 CPUs: 2.9 s in
# 4 blocks, 4.3 s in one; only splitting while inference waited for data was slower for a
# costly model). ``ArrowCsv(blocks=1)`` parses each chunk on one thread.
ARROW_BLOCKS = 4


@functools.cache
def find_pyarrow() -> tuple[Any, Any] | None:
    """``(pyarrow, pyarrow.csv)`` if installed (looked up once), else ``None``."""
    try:
        import pyarrow
        import pyarrow.csv
    except ImportError:
        return None
    return pyarrow, pyarrow.csv


def _mimalloc_pool(pa: Any) -> Any:
    """Arrow's mimalloc pool if this build has it, else ``None`` (Arrow's default pool).

    Measured here: CSV scoring ~4 % faster than with the default jemalloc pool (three
    alternating runs each), and a lower peak RSS. Passed per call, never made the default.
    """
    with contextlib.suppress(AttributeError, NotImplementedError):  # a build without mimalloc
        return pa.mimalloc_memory_pool()
    return None


class ArrowCsv:
    """pyarrow's CSV reader and writer with the settings skyscore uses.

    ``blocks``: how many blocks a chunk is split into for Arrow's thread pool (1: one thread).
    ``memory_pool``: ``"mimalloc"`` (default, where built in) or ``"default"`` (Arrow's own).
    """

    def __init__(
        self, modules: tuple[Any, Any], *, blocks: int = ARROW_BLOCKS, memory_pool: str = "mimalloc"
    ) -> None:
        self.pa, self.pacsv = modules
        self.blocks = max(1, blocks)
        self.pool = _mimalloc_pool(self.pa) if memory_pool == "mimalloc" else None

    @classmethod
    def find(
        cls, engine: str = "auto", *, blocks: int = ARROW_BLOCKS, memory_pool: str = "mimalloc"
    ) -> ArrowCsv | None:
        """An :class:`ArrowCsv` for ``engine`` ``"auto"`` (if pyarrow is installed) or
        ``"arrow"`` (required); ``None`` for ``"numpy"`` or without pyarrow."""
        if engine not in ("auto", "arrow", "numpy"):
            raise ValueError(f"unknown CSV engine {engine!r}: auto, arrow or numpy")
        if engine == "numpy":
            return None
        modules = find_pyarrow()
        if modules is None:
            if engine == "arrow":
                raise ImportError("the CSV engine 'arrow' needs pyarrow: pip install pyarrow")
            return None
        return cls(modules, blocks=blocks, memory_pool=memory_pool)

    def parse(self, columns: Columns, data: bytes, n: int) -> Simple | None:
        """``(rows, numeric, categorical, ids, fits)`` of a quote-free chunk, or ``None``.

        ``ids`` is pyarrow's string column, ``fits`` the rows within float32 range. pyarrow's
        parser is multi-threaded C++ and releases the GIL, so decoding overlaps with ONNX
        inference. Any doubt (a bad field count, text in a number, a ``nan`` literal, blank
        lines) returns ``None``. Values beyond float32 are left for the per-row check.
        """
        if columns.id_idx is not None and columns.id_idx in columns.numeric_idx:
            return None
        pa, pacsv = self.pa, self.pacsv
        names = [f"c{i}" for i in range(columns.n_fields)]
        types: dict[str, Any] = {names[i]: pa.float64() for i in columns.numeric_idx}
        types.update(
            {names[i]: pa.dictionary(pa.int32(), pa.string()) for i in columns.categorical_idx}
        )
        if columns.id_idx is not None:
            types[names[columns.id_idx]] = pa.string()
        blocks = self.blocks
        ascii_only = data.isascii()
        while True:
            try:
                table = pacsv.read_csv(
                    pa.py_buffer(data),
                    read_options=pacsv.ReadOptions(
                        column_names=names,
                        block_size=max(len(data) // blocks + 1, 1),
                        use_threads=blocks > 1,
                    ),
                    parse_options=pacsv.ParseOptions(quote_char=False, newlines_in_values=False),
                    convert_options=pacsv.ConvertOptions(
                        column_types=types,
                        include_columns=list(types),
                        null_values=[""],
                        strings_can_be_null=False,
                        # pyarrow's UTF-8 check took 30 % of its parse here; ASCII (the usual
                        # machine-written table, found in one fast pass) needs none
                        check_utf8=not ascii_only,
                    ),
                    memory_pool=self.pool,
                )
                break
            except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
                if blocks > 1 and "straddl" in str(exc):  # a row longer than a block
                    blocks = 1
                    continue
                return None
        if table.num_rows != n:  # blank lines were skipped: let the exact path number rows
            return None
        matrix = arrow_matrix(table.select([names[i] for i in columns.numeric_idx]), n)
        if matrix is None:  # a literal nan in the text
            return None
        numeric, fits = matrix
        categorical = np.empty((n, len(columns.categorical_idx)), dtype=object)
        for j, index in enumerate(columns.categorical_idx):
            column = table.column(names[index]).combine_chunks()
            dictionary = np.empty(len(column.dictionary), dtype=object)
            dictionary[:] = column.dictionary.to_pylist()
            codes = np.frombuffer(
                column.indices.buffers()[1], np.int32, len(column), column.indices.offset * 4
            )
            categorical[:, j] = dictionary[codes]
        # one array: Arrow's CSV writer (26.0) writes a block of NUL bytes for a column whose
        # chunks include empty ones, which a chunk split over threads can have
        ids = (
            None if columns.id_idx is None else table.column(names[columns.id_idx]).combine_chunks()
        )
        return np.arange(n, dtype=np.int64), numeric, categorical, ids, fits

    def numbers(self, values: np.ndarray, kind: Any) -> Any:
        """A numpy vector as an Arrow array over the same memory (no conversion, no copy)."""
        array = np.ascontiguousarray(values, dtype=kind.to_pandas_dtype())
        return self.pa.Array.from_buffers(kind, len(array), [None, self.pa.py_buffer(array)])

    def strings(self, texts: Sequence[Any]) -> Any:
        """Texts (``None`` as empty) as an Arrow string array, or ``None`` if one is not a str.

        Built from buffers: ``pyarrow.array`` on a list would import pandas where installed,
        ~0.5 s and tens of MB on the first chunk of a process.
        """
        pa = self.pa
        try:
            encoded = [b"" if t is None else t.encode() for t in texts]
        except (AttributeError, UnicodeEncodeError):
            return None
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), out=offsets[1:])
        return pa.Array.from_buffers(
            pa.large_string(),
            len(encoded),
            [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))],
        )

    def write(self, columns: dict[str, Any]) -> bytes | None:
        """Arrow columns as header-less, unquoted CSV bytes; ``None`` if a text needs quoting."""
        pa, pacsv = self.pa, self.pacsv
        sink = pa.BufferOutputStream(memory_pool=self.pool)
        try:
            pacsv.write_csv(
                pa.table(columns),
                sink,
                write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"),
                memory_pool=self.pool,
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None  # a text holds a comma, quote or newline
        data: bytes = sink.getvalue().to_pybytes()
        return data


def arrow_matrix(table: Any, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """float64 columns as one row-major float32 [n, k] matrix (empty fields NaN) and the rows
    that fit float32; ``None`` if a field held a NaN literal (which the exact paths report as
    an error, not as missing).

    One C++ call (``RecordBatch.to_tensor``) per record batch instead of a ``to_numpy`` per
    column, which measured ten times slower here; each float64 block is checked and narrowed
    straight into the result, so the whole chunk is never held as float64.
    """
    k = table.num_columns
    out = np.empty((n, k), dtype=np.float32)
    fits = np.ones(n, dtype=bool)
    if k == 0:
        return out, fits
    nulls = sum(column.null_count for column in table.columns)
    nans = 0
    start = 0
    for batch in table.to_batches():
        rows = batch.num_rows
        if not rows:
            continue
        if hasattr(batch, "to_tensor"):
            wide = np.asarray(batch.to_tensor(null_to_nan=True, row_major=True))
        else:  # a pyarrow without to_tensor
            wide = np.column_stack([column.to_numpy(zero_copy_only=False) for column in batch])
        fits[start : start + rows], suspect = fitting_rows(wide)
        if len(suspect):  # the only rows that can hold a NaN
            nans += int(np.isnan(wide[suspect]).sum())
        with np.errstate(over="ignore"):
            out[start : start + rows] = wide
        start += rows
    if nans != nulls:
        return None
    return out, fits


class ArrowTexts(Sequence[Any]):
    """An id column as pyarrow parsed it: the CSV encoder writes the Arrow array back as is,
    with no Python ``str`` per row; any other reader gets a list, built on first use."""

    __slots__ = ("_items", "array")

    def __init__(self, array: Any) -> None:
        self.array = array
        self._items: list[Any] | None = None

    def _list(self) -> list[Any]:
        if self._items is None:
            self._items = self.array.to_pylist()
        return self._items

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: Any) -> Any:
        return self._list()[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._list())

    def __eq__(self, other: object) -> bool:
        return list(self) == (list(other) if isinstance(other, ArrowTexts) else other)

    __hash__ = None  # type: ignore[assignment]  # equal to a list, so unhashable like one

    def __repr__(self) -> str:
        return f"ArrowTexts({self._list()!r})"
