"""Batch scoring of files: decode → ONNX → encode, streamed, with an error report and a manifest.

A producer thread decodes chunks into a small bounded queue while the calling thread runs ONNX
Runtime (which releases the GIL) and encodes, so decoding overlaps inference and memory stays
at a few chunks whatever the file size. A failure on either side stops both and is raised.

:func:`score_path` adds the file handling: outputs go to temporary names beside the target and
are renamed into place only on success (never a half-written output); the error report
``OUTPUT.errors.jsonl`` exists only when some row failed, and ``OUTPUT.manifest.json`` (written
last) records what was scored, with which model, how fast, and the first errors.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

import msgspec
import numpy as np

from skyscore.clock import iso_ms
from skyscore.documents import pretty_json
from skyscore.errors import BadRequest
from skyscore.formats import (
    DEFAULT_CHUNK_ROWS,
    SNIFF_BYTES,
    Chunk,
    Readable,
    check_content,
    detect_format,
    format_for,
    open_encoder,
)
from skyscore.model.schema import Batch, InputSchema, RowError

MANIFEST_VERSION = 1
FIRST_ERRORS = 20  # errors copied into the report and the manifest
QUEUE_DEPTH = 2  # decoded chunks waiting for inference: bounds memory, keeps ONNX busy
# chunks scored at once: ONNX Runtime (one intra-op thread each) on every core, up to two
INFERENCE_WORKERS = max(1, min(2, os.cpu_count() or 1))
_COPY_BLOCK = 1 << 20
# Text a chunk of a line format (CSV, JSON Lines) may hold, about: a chunk's memory (its text,
# the parser's table, the decoded arrays, the output) grows with its bytes, not its rows, and
# up to about a dozen chunks are in flight. Wide rows get fewer rows per chunk: at 16,384 rows
# of 200 numeric columns a chunk was 24 MB of text and peak memory went on growing long after
# a 100k-row file's end (470 MiB there, 640 MiB at 2M rows); rows as short as most tables'
# never reach this (16,384 rows of 500 bytes is 8 MB).
CHUNK_BYTES = 8 << 20
MIN_CHUNK_ROWS = 256
_LINE_FORMATS = ("csv", "jsonl")


@runtime_checkable
class Observer(Protocol):
    """Sees every scored chunk (drift monitoring plugs in here); must not modify it."""

    def observe(self, batch: Batch, probabilities: np.ndarray) -> None:
        """Called once per chunk, in order, from one thread (not the caller's)."""


class ScoringModel(Protocol):
    """What scoring needs from a model (:class:`skyscore.model.predictor.Predictor` fits).

    ``name``, ``version`` and ``card.onnx.sha256`` are read when present, for the manifest.
    """

    @property
    def schema(self) -> InputSchema: ...

    @property
    def classes(self) -> Sequence[str | int]: ...

    @property
    def class_names(self) -> Sequence[str]: ...

    def predict_proba(self, batch: Batch) -> np.ndarray: ...

    def label_indices(self, probabilities: np.ndarray) -> np.ndarray: ...


@dataclass(slots=True)
class ScoreReport:
    """What one scoring run did (returned by :func:`score_stream`, saved as the manifest)."""

    input_name: str
    format: str
    output_format: str
    input_sha256: str = ""
    input_bytes: int = 0
    output_bytes: int = 0
    rows_read: int = 0
    rows_scored: int = 0
    rows_failed: int = 0
    chunks: int = 0
    model_name: str | None = None
    model_version: str | None = None
    model_sha256: str | None = None
    decode_seconds: float = 0.0
    infer_seconds: float = 0.0
    encode_seconds: float = 0.0
    observe_seconds: float = 0.0
    total_seconds: float = 0.0
    started_at: str = ""
    finished_at: str = ""
    first_errors: list[RowError] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        """Rows read per second of wall time."""
        return self.rows_read / self.total_seconds if self.total_seconds > 0 else 0.0

    def to_manifest(
        self, *, output_name: str | None = None, errors_name: str | None = None
    ) -> dict[str, Any]:
        """The manifest document (JSON-ready, flat keys as the batch report reads them).

        The stage timings overlap (decoding runs in parallel with inference and encoding), so
        they may add up to more than ``duration_s``.
        """
        return {
            "manifest_version": MANIFEST_VERSION,
            "input": self.input_name,
            "input_sha256": self.input_sha256,
            "input_bytes": self.input_bytes,
            "format": self.format,
            "output": output_name,
            "output_format": self.output_format,
            "output_bytes": self.output_bytes,
            "errors": errors_name if self.rows_failed else None,
            "rows_read": self.rows_read,
            "rows_scored": self.rows_scored,
            "rows_failed": self.rows_failed,
            "chunks": self.chunks,
            "model": {
                "name": self.model_name,
                "version": self.model_version,
                "onnx_sha256": self.model_sha256,
            },
            "duration_s": round(self.total_seconds, 6),
            "timings_s": {
                "decode": round(self.decode_seconds, 6),
                "infer": round(self.infer_seconds, 6),
                "encode": round(self.encode_seconds, 6),
                "observe": round(self.observe_seconds, 6),
                "total": round(self.total_seconds, 6),
            },
            "rows_per_second": round(self.rows_per_second, 1),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "first_errors": [e.to_dict() for e in self.first_errors],
        }


class _HashingReader:
    """Reads through to ``raw``, hashing and counting bytes; can replay a peeked head."""

    def __init__(self, raw: Readable) -> None:
        self._raw = raw
        self._pending = b""
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def _read_raw(self, size: int) -> bytes:
        data = self._raw.read(size)
        self.sha256.update(data)
        self.bytes += len(data)
        return data

    def peek(self, size: int) -> bytes:
        """Up to ``size`` bytes from the start, returned again by later reads."""
        while len(self._pending) < size:
            data = self._read_raw(size - len(self._pending))
            if not data:
                break
            self._pending += data
        return self._pending[:size]

    def read(self, size: int = -1, /) -> bytes:
        if self._pending:
            if size < 0:
                data, self._pending = self._pending + self._read_raw(-1), b""
            else:
                data, self._pending = self._pending[:size], self._pending[size:]
            return data
        return self._read_raw(size)


class _CountingWriter:
    """Writes through to ``raw``, counting bytes."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.bytes = 0

    def write(self, data: bytes, /) -> int:
        self._raw.write(data)
        self.bytes += len(data)
        return len(data)


def _hash_seekable(source: BinaryIO) -> tuple[str, int, bytes]:
    """sha256, size and head of a seekable file, leaving its position where it was."""
    start = source.tell()
    digest = hashlib.sha256()
    size = 0
    head = b""
    while True:
        data = source.read(_COPY_BLOCK)
        if not data:
            break
        if len(head) < SNIFF_BYTES:
            head += data[: SNIFF_BYTES - len(head)]
        digest.update(data)
        size += len(data)
    source.seek(start)
    return digest.hexdigest(), size, head


def _seekable(stream: object) -> bool:
    seekable = getattr(stream, "seekable", None)
    try:
        return bool(seekable()) if callable(seekable) else False
    except (OSError, ValueError):
        return False


class _Failure:
    """An exception raised in the producer thread, carried to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


class _Producer:
    """Runs a decoder in a thread, feeding a bounded queue (overlaps decoding with ONNX)."""

    def __init__(self, chunks: Iterator[Chunk], depth: int) -> None:
        self._chunks = chunks
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.decode_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="skyscore-decode", daemon=True)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    item = next(self._chunks)
                except StopIteration:
                    break
                finally:
                    self.decode_seconds += time.perf_counter() - started
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as exc:
            self._put(_Failure(exc))
        finally:
            close = getattr(self._chunks, "close", None)
            if callable(close):
                close()

    def __iter__(self) -> Iterator[Chunk]:
        self._thread.start()
        while True:
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("the decoding thread stopped without a result") from None
                continue
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]

    def stop(self) -> None:
        """Ask the thread to stop and wait for it (it finishes the chunk in hand)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.05)


def chunk_rows_for(head: bytes, chunk_rows: int, *, complete: bool) -> int:
    """Rows per chunk: ``chunk_rows``, fewer where the lines of ``head`` (the file's first
    bytes, the whole file when ``complete``) are so long that a chunk would pass
    ``CHUNK_BYTES``. The same rule for every table: only the bytes per line count."""
    if complete or not head:
        return chunk_rows  # the whole file is in ``head``: no chunk can be large
    # bytes per whole line (up to the last newline); a line longer than the head is at least it
    ends = head.count(b"\n")
    line_bytes = (head.rfind(b"\n") + 1) / ends if ends else len(head)
    return max(1, min(chunk_rows, max(MIN_CHUNK_ROWS, int(CHUNK_BYTES // line_bytes))))


def _model_info(model: ScoringModel) -> tuple[str | None, str | None, str | None]:
    name = getattr(model, "name", None)
    version = getattr(model, "version", None)
    onnx = getattr(getattr(model, "card", None), "onnx", None)
    sha = getattr(onnx, "sha256", None)
    return (
        None if name is None else str(name),
        None if version is None else str(version),
        None if sha is None else str(sha),
    )


def score_stream(
    source: BinaryIO,
    sink: BinaryIO,
    *,
    fmt: str,
    predictor: ScoringModel,
    errors_sink: BinaryIO | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    observers: Sequence[Observer] = (),
    output_fmt: str | None = None,
    schema: InputSchema | None = None,
    input_name: str = "input",
) -> ScoreReport:
    """Score every row of ``source`` (format ``fmt``) and write predictions to ``sink``.

    Rows that fail validation are left out of the output and written, one JSON object per line
    (``{"row", "column", "reason"}``), to ``errors_sink`` when given. The output format is
    ``fmt`` unless ``output_fmt`` says otherwise; ``schema`` overrides the model's (for strict
    mode or another id column). Neither stream is closed. Raises ``FormatMismatch`` when the
    content contradicts ``fmt`` and ``InvalidInput`` for file-level problems (missing columns).
    """
    file_format = format_for(fmt)
    output_fmt = output_fmt or fmt
    schema = schema or predictor.schema
    model_name, model_version, model_sha = _model_info(predictor)
    report = ScoreReport(
        input_name=input_name,
        format=fmt,
        output_format=output_fmt,
        model_name=model_name,
        model_version=model_version,
        model_sha256=model_sha,
        started_at=iso_ms(),
    )
    started = time.perf_counter()
    hashing: _HashingReader | None = None
    readable: Readable
    if fmt == "parquet" and _seekable(source):  # read out of order: hash in a first pass
        report.input_sha256, report.input_bytes, head = _hash_seekable(source)
        readable = source
    else:
        hashing = _HashingReader(source)
        head = hashing.peek(SNIFF_BYTES)
        readable = hashing
    check_content(fmt, head, name=input_name)
    if fmt in _LINE_FORMATS:
        chunk_rows = chunk_rows_for(head, chunk_rows, complete=len(head) < SNIFF_BYTES)

    out = _CountingWriter(sink)
    encoder = open_encoder(
        output_fmt,
        out,
        id_column=schema.id_column,
        classes=list(predictor.classes),
        class_names=list(predictor.class_names),
    )
    error_encoder = msgspec.json.Encoder()
    producer = _Producer(
        file_format.decode(readable, schema, chunk_rows=chunk_rows), depth=QUEUE_DEPTH
    )
    # Inference runs on up to INFERENCE_WORKERS threads (ONNX Runtime releases the GIL and a
    # session may run concurrently), so a costly model uses every core while decoding has
    # nothing to do; results are taken in file order. Encoding runs on its own thread, one
    # chunk at a time and in order, and so do the observers (drift counting is numpy work
    # that releases the GIL: on the calling thread it held up handing chunks to inference).
    # At most QUEUE_DEPTH encoded and observed chunks wait (bounded memory).
    scorer = ThreadPoolExecutor(max_workers=INFERENCE_WORKERS, thread_name_prefix="skyscore-infer")
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="skyscore-encode")
    watcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="skyscore-observe")
    scoring: deque[tuple[Batch, Future[tuple[np.ndarray, np.ndarray, float]]]] = deque()
    pending: deque[Future[float]] = deque()
    observing: deque[Future[float]] = deque()

    def infer(batch: Batch) -> tuple[np.ndarray, np.ndarray, float]:
        tick = time.perf_counter()
        probabilities = predictor.predict_proba(batch)
        labels = predictor.label_indices(probabilities)
        return probabilities, labels, time.perf_counter() - tick

    def encode(batch: Batch, probabilities: np.ndarray, labels: np.ndarray) -> float:
        tick = time.perf_counter()
        encoder.write(batch, probabilities, labels)
        return time.perf_counter() - tick

    def observe(batch: Batch, probabilities: np.ndarray) -> float:
        tock = time.perf_counter()
        for observer in observers:
            observer.observe(batch, probabilities)
        return time.perf_counter() - tock

    def finish(batch: Batch, scored: Future[tuple[np.ndarray, np.ndarray, float]]) -> None:
        probabilities, labels, seconds = scored.result()
        report.infer_seconds += seconds
        if observers:
            observing.append(watcher.submit(observe, batch, probabilities))
            while len(observing) > QUEUE_DEPTH:
                report.observe_seconds += observing.popleft().result()
        pending.append(writer.submit(encode, batch, probabilities, labels))
        while len(pending) > QUEUE_DEPTH:
            report.encode_seconds += pending.popleft().result()
        report.rows_scored += len(batch)

    try:
        for batch, errors in producer:
            report.chunks += 1
            report.rows_read += len(batch) + len(errors)
            if errors:
                report.rows_failed += len(errors)
                room = FIRST_ERRORS - len(report.first_errors)
                if room > 0:
                    report.first_errors.extend(errors[:room])
                if errors_sink is not None:
                    errors_sink.write(error_encoder.encode_lines([e.to_dict() for e in errors]))
            if not len(batch):
                continue
            scoring.append((batch, scorer.submit(infer, batch)))
            while len(scoring) > INFERENCE_WORKERS:
                finish(*scoring.popleft())
        while scoring:
            finish(*scoring.popleft())
        while pending:
            report.encode_seconds += pending.popleft().result()
        while observing:
            report.observe_seconds += observing.popleft().result()
        tick = time.perf_counter()
        encoder.close()
        report.encode_seconds += time.perf_counter() - tick
    finally:
        for _, scored in scoring:
            scored.cancel()
        for written in [*pending, *observing]:
            written.cancel()
        scorer.shutdown(wait=True)
        writer.shutdown(wait=True)
        watcher.shutdown(wait=True)
        producer.stop()
    report.decode_seconds = producer.decode_seconds
    if hashing is not None:
        # a decoder may stop before the end (e.g. Parquet spooling reads all; CSV reads all)
        while hashing.read(_COPY_BLOCK):
            pass
        report.input_sha256 = hashing.sha256.hexdigest()
        report.input_bytes = hashing.bytes
    report.output_bytes = out.bytes
    report.total_seconds = time.perf_counter() - started
    report.finished_at = iso_ms()
    return report


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def _sync(handle: BinaryIO) -> None:
    handle.flush()
    with contextlib.suppress(OSError, ValueError):  # not a real file, or no fsync there
        os.fsync(handle.fileno())


def score_path(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    predictor: ScoringModel,
    *,
    fmt: str | None = None,
    output_fmt: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    observers: Sequence[Observer] = (),
    schema: InputSchema | None = None,
    manifest_extra: Callable[[ScoreReport], Mapping[str, Any]] | None = None,
) -> ScoreReport:
    """Score a file into ``output_path`` (+ ``.errors.jsonl`` if rows failed, + ``.manifest.json``).

    The format comes from the input's extension unless ``fmt`` is given; the output is written
    in the same format unless ``output_fmt`` is given. Everything is written to temporary files
    in the output's directory and renamed into place on success; on failure nothing new is
    left behind. A stale error report from an earlier run of the same output is removed.
    ``manifest_extra`` adds entries to the manifest once scoring is done (e.g. an observer's
    drift summary: ``lambda report: {"drift": accumulator.result()}``).
    """
    source_path = Path(input_path)
    target = Path(output_path)
    fmt = fmt or detect_format(source_path.name)
    if target.exists() and target.resolve() == source_path.resolve():
        raise BadRequest(f"the output {target} would overwrite the input")
    errors_path = target.with_name(target.name + ".errors.jsonl")
    manifest_path = target.with_name(target.name + ".manifest.json")
    temporary = {p: _temporary(p) for p in (target, errors_path, manifest_path)}
    try:
        with (
            source_path.open("rb") as source,
            temporary[target].open("wb") as sink,
            temporary[errors_path].open("wb") as errors_sink,
        ):
            report = score_stream(
                source,
                sink,
                fmt=fmt,
                predictor=predictor,
                errors_sink=errors_sink,
                chunk_rows=chunk_rows,
                observers=observers,
                output_fmt=output_fmt,
                schema=schema,
                input_name=source_path.name,
            )
            _sync(sink)
            _sync(errors_sink)
        manifest = report.to_manifest(
            output_name=target.name, errors_name=errors_path.name if report.rows_failed else None
        )
        if manifest_extra is not None:
            manifest.update(manifest_extra(report))
        temporary[manifest_path].write_bytes(pretty_json(manifest))
        os.replace(temporary[target], target)
        if report.rows_failed:
            os.replace(temporary[errors_path], errors_path)
        else:
            temporary[errors_path].unlink()
            errors_path.unlink(missing_ok=True)
        os.replace(temporary[manifest_path], manifest_path)
    except BaseException:
        for path in temporary.values():
            path.unlink(missing_ok=True)
        raise
    return report
