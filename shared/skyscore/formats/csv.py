"""CSV in and out: pyarrow where installed, msgspec and ``numpy.loadtxt`` without, ``csv`` for exactness.

Each chunk of lines goes down the first path that takes it whole, one module per path:

0. where pyarrow is installed, Arrow's multi-threaded C++ parser (:mod:`.csv_arrow`);
1. quote-free, well-formed lines (the usual machine-written table): numpy finds the field
   boundaries, msgspec parses the numeric fields as one JSON array of numbers and the text
   fields as one JSON array of strings (:mod:`.csv_json`);
2. otherwise one ``loadtxt`` call with a structured dtype (one field per CSV column), cutting
   around the lines it rejects (:mod:`.csv_loadtxt`);
3. rows neither takes, or whose values need a closer look (non-finite, out of float32 range,
   quoted newlines, invalid UTF-8), are read one by one with the stdlib ``csv`` module, which
   decides exactly and names the bad column (:mod:`.csv_exact`).

All paths accept the same inputs and produce the same values (the test suite checks this);
output is written by :mod:`.csv_writer`, the same bytes with or without pyarrow. This module
is the entry point: it splits the stream into records (:mod:`.csv_records`), sends each chunk
down the paths, and holds :class:`CsvFormat`. Which engine runs is an argument of
:class:`CsvFormat` (``engine="auto"``: pyarrow if importable), never an environment variable,
and nothing here changes process-wide state.

Conventions: the header row is required; data rows are numbered from 1 (header and blank lines
not counted); an empty (or blank) numeric field is missing (NaN, the model's imputer fills it);
an empty categorical field is the missing category ``""``; ``nan``/``inf`` text, unparseable
numbers and numbers beyond float32 are row errors. Line endings ``\\n`` and ``\\r\\n`` (a
``\\r\\n`` inside a quoted field is read as ``\\n``); UTF-8, with or without a BOM.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from skyscore.errors import InvalidInput
from skyscore.formats.base import (
    DEFAULT_CHUNK_ROWS,
    Chunk,
    FileFormat,
    Readable,
    Writable,
    iter_counted_line_chunks,
)
from skyscore.formats.csv_arrow import ARROW_BLOCKS, ArrowCsv, ArrowTexts
from skyscore.formats.csv_exact import ExactReader
from skyscore.formats.csv_json import JsonPlan
from skyscore.formats.csv_loadtxt import EMPTY_SENTINEL, LoadtxtPlan, fill_empty_fields
from skyscore.formats.csv_records import (
    BOM,
    SURROGATE,
    BlankLines,
    Columns,
    Records,
    Simple,
    csv_field,
    decode_text,
    join_quoted,
    parse_header,
)
from skyscore.formats.csv_writer import (
    CsvEncoder,
    round_significant,
    significant_text,
    significant_texts,
)
from skyscore.model.schema import Batch, InputSchema, RowError

__all__ = [
    "EMPTY_SENTINEL",
    "FORMAT",
    "ArrowTexts",
    "CsvEncoder",
    "CsvFormat",
    "CsvLayout",
    "csv_field",
    "fill_empty_fields",
    "parse_header",
    "round_significant",
    "significant_text",
    "significant_texts",
]

DECODE_WORKERS = 2  # chunks parsed at once beside the line splitter (measured: 10 % faster)


class CsvLayout(Columns):
    """Where the model's columns sit in one file, and the parsers planned from that."""

    def __init__(
        self, schema: InputSchema, header: Sequence[str], *, arrow: ArrowCsv | None = None
    ) -> None:
        super().__init__(schema, header)
        self.arrow = arrow
        self.json_plan = JsonPlan(self)
        self.loadtxt_plan = LoadtxtPlan(self)
        self.exact = ExactReader(self)

    def parse_arrow(self, data: bytes, n: int) -> Simple | None:
        """The chunk via pyarrow (:meth:`ArrowCsv.parse`), or ``None`` (none, or declined)."""
        return None if self.arrow is None else self.arrow.parse(self, data, n)

    def parse_json(self, data: bytes, n: int) -> Simple | None:
        """The chunk via msgspec (:meth:`JsonPlan.parse`), or ``None`` (declined)."""
        return self.json_plan.parse(data, n)

    def parse_record(self, record: str, row: int) -> tuple[list[float], list[str], Any] | RowError:
        """One record, exactly (:meth:`ExactReader.parse_record`)."""
        return self.exact.parse_record(record, row)

    def decode_records(self, records: Records, first_row: int) -> Chunk:
        """Validate and convert one chunk of records (row numbers from ``first_row``)."""
        n = records.count
        k, m = len(self.numeric_idx), len(self.categorical_idx)
        slow: set[int] = records.multiline | records.unterminated
        simple = None
        if records.data is not None and n and not slow:
            simple = self.parse_arrow(records.data, n)
        if simple is None and records.data is not None and n and not slow:
            try:
                simple = self.parse_json(records.data, n)
            except BlankLines:
                records.drop_blank()
                n = records.count
                if records.data is not None and n:
                    simple = self.parse_json(records.data, n)
        failed: list[int] = []
        if simple is None:
            records.drop_blank()
            n = records.count
        texts: Any = None  # the id column as pyarrow parsed it, while no row is set aside
        if simple is not None:
            index, numeric, categorical, ids, good = simple
            if len(index) < n:  # lines the JSON path left out
                slow.update(np.setdiff1d(np.arange(n), index).tolist())
            if ids is not None and not isinstance(ids, np.ndarray):
                if slow or not good.all():
                    ids = np.array(ids.to_pylist(), dtype=object).reshape(-1)
                else:
                    texts, ids = ids, None
        else:
            lines = records.lines
            if records.bad_utf8:
                slow.update(i for i, line in enumerate(lines) if SURROGATE.search(line))
            fast_index: np.ndarray | None = None
            fast_lines = lines
            if slow:
                fast_index = np.setdiff1d(np.arange(n), np.fromiter(slow, np.int64, len(slow)))
                fast_lines = [lines[i] for i in fast_index.tolist()]
                records.data = None
            if fast_lines:
                index, numeric, categorical, ids, good, failed = self.loadtxt_plan.parse(
                    records, fast_lines, fast_index
                )
            else:
                index = np.empty(0, dtype=np.int64)
                numeric = np.empty((0, k), dtype=np.float64)
                categorical = np.empty((0, m), dtype=object)
                ids = None if self.id_idx is None else np.empty(0, dtype=object)
                good = np.empty(0, dtype=bool)
        if not good.all():
            slow.update(index[~good].tolist())
            index, numeric, categorical = index[good], numeric[good], categorical[good]
            ids = None if ids is None else ids[good]
        slow.update(failed)

        errors: list[RowError] = []
        if slow:
            lines = records.lines
            extra_index: list[int] = []
            extra_numeric: list[list[float]] = []
            extra_categorical: list[list[str]] = []
            extra_ids: list[Any] = []
            for i in sorted(slow):
                row = first_row + i
                if i in records.unterminated:
                    errors.append(RowError(row, None, "unterminated quoted field"))
                    continue
                result = self.exact.parse_record(lines[i], row)
                if isinstance(result, RowError):
                    errors.append(result)
                    continue
                extra_index.append(i)
                extra_numeric.append(result[0])
                extra_categorical.append(result[1])
                extra_ids.append(result[2])
            if extra_index:
                index = np.concatenate([index, np.asarray(extra_index, dtype=np.int64)])
                numeric = np.concatenate(
                    [numeric, np.asarray(extra_numeric, dtype=np.float64).reshape(-1, k)]
                )
                more = np.empty((len(extra_index), m), dtype=object)
                for r, values in enumerate(extra_categorical):
                    more[r, :] = values
                categorical = np.concatenate([categorical, more])
                if ids is not None:
                    more_ids = np.empty(len(extra_ids), dtype=object)
                    more_ids[:] = extra_ids
                    ids = np.concatenate([ids, more_ids])
                order = np.argsort(index, kind="stable")
                index, numeric, categorical = index[order], numeric[order], categorical[order]
                ids = None if ids is None else ids[order]

        id_list: Sequence[Any] | None = None
        if texts is not None:
            id_list = ArrowTexts(texts)
        elif self.schema.id_column is not None:
            id_list = [None] * len(index) if ids is None else ids.tolist()
        batch = Batch(
            (index + first_row).astype(np.int64, copy=False),
            numeric.astype(np.float32, copy=False),
            categorical,
            id_list,
        )
        return batch, errors


class _ChunkWorkers:
    """Decodes up to ``DECODE_WORKERS`` chunks at once and hands them back in file order.

    Used where pyarrow parses chunks: its parser releases the GIL, so two chunks decode on two
    cores while this thread splits the next lines off the stream. Holds at most that many
    chunks beyond the one being read (memory stays bounded).
    """

    def __init__(self, workers: int = 0) -> None:
        self.workers = max(1, workers or DECODE_WORKERS)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="skyscore-parse")
        self._pending: deque[Future[Chunk]] = deque()

    def submit(
        self, decode: Callable[[Records, int], Chunk], records: Records, first_row: int
    ) -> Iterator[Chunk]:
        """Start one chunk; yield those finished that must go first to keep the queue short."""
        self._pending.append(self._pool.submit(decode, records, first_row))
        while len(self._pending) > self.workers:
            yield from self._take()

    def drain(self) -> Iterator[Chunk]:
        """The remaining chunks, in order."""
        try:
            while self._pending:
                yield from self._take()
        finally:
            self.close()

    def _take(self) -> Iterator[Chunk]:
        batch, errors = self._pending.popleft().result()
        if len(batch) or errors:
            yield batch, errors

    def close(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)

    def __del__(self) -> None:
        self._pool.shutdown(wait=False)


class CsvFormat(FileFormat):
    """Comma-separated values with a header row."""

    name = "csv"
    label = "CSV"
    extensions = (".csv",)

    def __init__(
        self,
        *,
        block_size: int | None = None,
        engine: str = "auto",
        arrow_blocks: int = ARROW_BLOCKS,
        decode_workers: int = DECODE_WORKERS,
        memory_pool: str = "mimalloc",
    ) -> None:
        """``engine``: ``auto`` (pyarrow if installed, else numpy/msgspec), ``arrow`` (pyarrow
        required) or ``numpy`` (never pyarrow: the function packages' parser, for parity
        checks). ``arrow_blocks``: blocks a chunk is split into for Arrow's threads (1: one
        thread per chunk). ``decode_workers``: chunks pyarrow parses at once. ``memory_pool``:
        Arrow's pool for this format's calls, ``mimalloc`` or ``default``. pyarrow is looked
        up on first use, so importing skyscore stays cheap.
        """
        if engine not in ("auto", "arrow", "numpy"):
            raise ValueError(f"unknown CSV engine {engine!r}: auto, arrow or numpy")
        self.block_size = block_size
        self.engine = engine
        self.arrow_blocks = arrow_blocks
        self.decode_workers = decode_workers
        self.memory_pool = memory_pool
        self._arrow: list[ArrowCsv | None] = []

    @property
    def arrow(self) -> ArrowCsv | None:
        """pyarrow's reader and writer for this format, or ``None`` (looked up once)."""
        if not self._arrow:
            self._arrow.append(
                ArrowCsv.find(self.engine, blocks=self.arrow_blocks, memory_pool=self.memory_pool)
            )
        return self._arrow[0]

    def decode(
        self, source: Readable, schema: InputSchema, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
    ) -> Iterator[Chunk]:
        """Chunks of at most ``chunk_rows`` rows; raises ``InvalidInput`` for a bad header.

        One exception: a quoted field still open at the end of the file is reported in the
        chunk that carried its lines looking for the closing quote (``MAX_RECORD_LINES`` at
        most), with the records read again from the line after it."""
        kwargs = {} if self.block_size is None else {"block_size": self.block_size}
        chunks = iter_counted_line_chunks(source, chunk_rows, extra_first=1, **kwargs)
        layout: CsvLayout | None = None
        next_row = 1
        carry: list[str] = []  # lines of a quoted record still open at the end of a chunk
        carry_bad = False
        first = True
        final = False
        workers: _ChunkWorkers | None = None
        try:
            while not final:
                data, line_count = next(chunks, (None, 0))
                if data is None:
                    if not carry:
                        break
                    final, data = True, b""
                if b"\r" in data:
                    data = data.replace(b"\r\n", b"\n").removesuffix(b"\r")
                if first:
                    data = data.removeprefix(BOM)
                    first = False
                if carry or b'"' in data:
                    text, bad = decode_text(data)
                    lines = text.split("\n")
                    records, carry = join_quoted(
                        carry + lines if carry else lines, final=final, bad_utf8=bad or carry_bad
                    )
                    carry_bad = (bad or carry_bad) and bool(carry)
                    records.drop_blank()
                else:
                    # blank lines are dropped when lines are needed
                    records = Records(data=data, count=line_count)
                if layout is None:
                    records.drop_leading_blank()
                    if not records.count:
                        continue
                    if 0 in records.unterminated:
                        raise InvalidInput("the CSV header has an unterminated quoted field")
                    layout = CsvLayout(schema, parse_header(records.drop_first()), arrow=self.arrow)
                # blank lines are no rows: drop them here, so that the next chunk's first row
                # number is right before a worker has decoded this one
                records.drop_blank()
                if not records.count:
                    continue
                if workers is None:
                    workers = (
                        _ChunkWorkers(self.decode_workers) if layout.arrow is not None else None
                    )
                if workers is None:
                    chunk = layout.decode_records(records, next_row)
                    if len(chunk[0]) or chunk[1]:
                        yield chunk
                else:
                    yield from workers.submit(layout.decode_records, records, next_row)
                next_row += records.count
            if workers is not None:
                yield from workers.drain()
        finally:
            if workers is not None:
                workers.close()  # the consumer may stop early
        if layout is None:
            raise InvalidInput("the CSV file is empty: it has no header row")

    def encoder_type(self) -> type[CsvEncoder]:
        """Writes CSV."""
        return CsvEncoder

    def encoder(
        self,
        sink: Writable,
        *,
        id_column: str | None,
        classes: Sequence[str | int],
        class_names: Sequence[str],
    ) -> CsvEncoder:
        """A :class:`CsvEncoder` with this format's engine."""
        return CsvEncoder(
            sink,
            id_column=id_column,
            classes=classes,
            class_names=class_names,
            engine=self.engine,
            arrow=self.arrow,
        )

    def sniff(self, head: bytes) -> str | None:
        """Reject JSON-looking text (binary content is checked for every text format)."""
        start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
        if start in (b"{", b"["):
            return "it starts with '" + start.decode() + "', like JSON"
        return None


FORMAT = CsvFormat()
