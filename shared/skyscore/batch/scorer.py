"""Scoring objects in a blob store: an uploaded file becomes predictions, an error report and a
manifest, once, however often its event is delivered; a file too large for one function is
split into byte ranges on row boundaries, scored in parallel and assembled into one output.

Every cloud's upload, queue and event handlers call :class:`BatchScorer`, so the rules below hold
the same on S3, Azure Blob Storage and Cloud Storage:

* ``incoming/<model>/<file>`` is scored with ``<model>``'s production version, ``incoming/<file>``
  with the default model. Outputs go to ``predictions/`` under the same relative path, named as
  the CLI names them (``<stem>.predictions.<ext>``, ``.errors.jsonl``, ``.manifest.json``); the
  manifest is written last and records the input's version token and the model version.
* Idempotency: an input whose manifest records a *successful* run on the same (object version,
  model version) is not scored again, and a claim
  (:mod:`skyscore.coordination.claims`) keeps concurrent duplicates from scoring it twice. Outputs never
  change because an event came twice. Inline records in a queue message take the same path, so
  drift and metrics are recorded once per batch whichever way it arrived.
* A file-level problem (unsupported format, missing columns) is a permanent failure: its
  manifest says why and the event is not retried. Anything else raises, so the platform retries.
* Fan-out (CSV and JSON Lines, above ``fanout_bytes``): a plan lists byte ranges that end on a
  newline; one message per range goes to a work queue; each part is scored with the plan's
  model version; whoever finishes the last part assembles the output, renumbering ``row`` so
  it matches a single run. A boundary that fell inside a quoted CSV field (a value holding a
  newline) is found by the parity of ``"`` before it; the parts around it are scored again as
  one range by the assembler, so the output still equals a single run.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import itertools
import logging
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, Protocol, cast

import msgspec
import numpy as np

from skyscore.batch.pipeline import FIRST_ERRORS, ScoreReport, score_stream
from skyscore.clock import iso_ms
from skyscore.coordination import claims
from skyscore.documents import pretty_json
from skyscore.errors import (
    BadRequest,
    Busy,
    ConflictError,
    InputChanged,
    NotFound,
    SkyscoreError,
)
from skyscore.formats import DEFAULT_CHUNK_ROWS, detect_format
from skyscore.model.schema import RowError
from skyscore.monitoring.drift import DriftAccumulator
from skyscore.ports import BlobStore, ObjectInfo

if TYPE_CHECKING:
    from skyscore.model.card import ModelCard
    from skyscore.model.predictor import Predictor
    from skyscore.monitoring.metrics import Metrics

DEFAULT_FANOUT_BYTES = 512 << 20
DEFAULT_PART_BYTES = 128 << 20
SPLITTABLE = ("csv", "jsonl")  # formats whose records never span a newline (CSV: almost never)
ERROR_SPOOL_BYTES = 8 << 20  # error reports stay in memory up to this, then spill to /tmp
_WINDOW = 64 << 10
_MAX_LINE = 64 << 20
_COPY = 1 << 20
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

Status = Literal[
    "scored",
    "duplicate",
    "in_progress",
    "stale",
    "ignored",
    "failed",
    "fanned_out",
    "part_scored",
    "assembled",
]
_json = msgspec.json.Encoder(order="deterministic")
log = logging.getLogger(__name__)


def _succeeded(manifest: dict[str, Any], input_version: str, model_version: str) -> bool:
    """Whether a manifest records a successful run on this input version with this model."""
    model = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
    assert isinstance(model, dict)
    return (
        manifest.get("status") != "failed"
        and manifest.get("input_version") == input_version
        and f"{model.get('name')}@{model.get('version')}" == model_version
    )


@dataclass(frozen=True, slots=True)
class OutputKeys:
    """Where one input's results go."""

    output: str
    errors: str
    manifest: str


class Predictors(Protocol):
    """Where the scorer gets models: a registry, or the local runtime's provider."""

    def get_predictor(self, name: str, ref: str = ..., /) -> Predictor:
        """A ready predictor for a model name and an alias or version."""
        ...


@dataclass(frozen=True, slots=True)
class Layout:
    """The store's top-level prefixes (each ends with ``/``)."""

    incoming: str = "incoming/"
    predictions: str = "predictions/"
    work: str = "work/batch/"
    claims: str = "work/claims/"

    def output_keys(self, key: str) -> OutputKeys:
        """``incoming/a/b.csv`` → ``predictions/a/b.predictions.csv`` (+ errors, manifest)."""
        relative = key[len(self.incoming) :] if key.startswith(self.incoming) else key
        directory, _, name = relative.rpartition("/")
        stem, dot, extension = name.rpartition(".")
        out_name = f"{stem}.predictions.{extension}" if dot and stem else f"{name}.predictions"
        output = f"{self.predictions}{directory + '/' if directory else ''}{out_name}"
        return OutputKeys(output, f"{output}.errors.jsonl", f"{output}.manifest.json")

    def model_for(self, key: str, default: str | None) -> str:
        """``incoming/<model>/...`` names its model; a file directly in ``incoming/`` uses
        the default."""
        relative = key[len(self.incoming) :]
        head, slash, _ = relative.partition("/")
        if slash:
            return head
        if not default:
            raise BadRequest(
                f"{key}: put files under {self.incoming}<model>/ (no default model is configured)",
                field="key",
            )
        return default


@dataclass(slots=True)
class BatchResult:
    """What handling one event did."""

    key: str
    status: Status
    detail: str = ""
    output: str | None = None
    manifest: dict[str, Any] | None = None
    job: str | None = None
    parts: int = 0
    problem: dict[str, Any] | None = field(default=None)


class _Prefixed(io.RawIOBase):
    """``head`` followed by ``raw`` (a CSV header in front of a part's byte range)."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self._head = head
        self._raw = raw

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        if self._head:
            if size is None or size < 0:
                data, self._head = self._head + self._raw.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._raw.read(-1 if size is None else size)


class _QuoteCounter(io.RawIOBase):
    """Reads through, counting ``"`` bytes (their parity tells whether a range ends inside a
    quoted CSV field)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.quotes = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        data = self._raw.read(-1 if size is None else size)
        self.quotes += data.count(b'"')
        return data


class _Counting(io.RawIOBase):
    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any, /) -> int:
        written = len(memoryview(data))
        self._raw.write(data)
        self.bytes += written
        return written


# ------------------------------------------------------------------------------ drift parts
def drift_state(accumulator: DriftAccumulator) -> dict[str, Any]:
    """The counts behind a drift result, so parts scored apart can be merged exactly."""
    return {
        "rows": accumulator.rows,
        "predicted": accumulator.predicted.tolist(),
        "numeric": [
            [c.counts.tolist(), c.missing, c.out_of_range, c.total]
            for _, _, c in accumulator.numeric
        ],
        "categorical": [
            [c.counts.tolist(), c.missing, c.total] for _, _, c in accumulator.categorical
        ],
    }


def merge_drift(card: ModelCard, states: list[dict[str, Any]]) -> DriftAccumulator:
    """One accumulator holding the sum of several parts' :func:`drift_state`."""
    total = DriftAccumulator(card)
    for state in states:
        total.rows += int(state["rows"])
        total.predicted += np.asarray(state["predicted"], dtype=np.int64)
        for (_, _, numeric), (counts, missing, out, seen) in zip(
            total.numeric, state["numeric"], strict=True
        ):
            numeric.counts += np.asarray(counts, dtype=np.int64)
            numeric.missing += int(missing)
            numeric.out_of_range += int(out)
            numeric.total += int(seen)
        for (_, _, categorical), (counts, missing, seen) in zip(
            total.categorical, state["categorical"], strict=True
        ):
            categorical.counts += np.asarray(counts, dtype=np.int64)
            categorical.missing += int(missing)
            categorical.total += int(seen)
    return total


# ------------------------------------------------------------------------------ renumbering
def _lines(source: BinaryIO) -> Iterator[bytes]:
    """Whole lines (without ``\\n``), streamed; the last one may lack a newline."""
    tail = b""
    while block := source.read(_COPY):
        block = tail + block
        cut = block.rfind(b"\n")
        if cut < 0:
            tail = block
            continue
        yield from block[:cut].split(b"\n")
        tail = block[cut + 1 :]
    if tail:
        yield tail


def _write_lines(sink: BinaryIO, records: Iterable[bytes]) -> None:
    """Write each record as a line, about ``_COPY`` bytes per write."""
    out: list[bytes] = []
    size = 0
    for record in records:
        out.append(record)
        size += len(record)
        if size >= _COPY:
            sink.write(b"\n".join(out) + b"\n")
            out, size = [], 0
    if out:
        sink.write(b"\n".join(out) + b"\n")


def renumber_csv(source: BinaryIO, sink: BinaryIO, offset: int, *, keep_header: bool) -> None:
    """Copy a CSV prediction file adding ``offset`` to ``row`` (the first field of each record);
    a record continues across lines while a quoted field is open (odd count of ``"``)."""

    def records() -> Iterator[bytes]:
        lines = _lines(source)
        header = next(lines, None)
        if header is None:
            return
        inside = header.count(b'"') % 2 == 1
        if keep_header:
            yield header
        for line in lines:
            record = line
            if not inside:
                number, comma, rest = line.partition(b",")
                record = b"%d%s%s" % (int(number) + offset, comma, rest)
            if b'"' in line and line.count(b'"') % 2 == 1:
                inside = not inside
            yield record

    _write_lines(sink, records())


_ROW_PREFIX = b'{"row":'


def renumber_jsonl(source: BinaryIO, sink: BinaryIO, offset: int) -> None:
    """Copy JSON Lines predictions (or errors) adding ``offset`` to each object's ``row``."""

    def records() -> Iterator[bytes]:
        for line in _lines(source):
            if not line:
                continue
            if line.startswith(_ROW_PREFIX):
                digits, sep, rest = line[len(_ROW_PREFIX) :].partition(b",")
                if not sep:
                    digits, sep, rest = digits.partition(b"}")
                yield b"%s%d%s%s" % (_ROW_PREFIX, int(digits) + offset, sep, rest)
            else:
                document = msgspec.json.decode(line)
                document["row"] = int(document["row"]) + offset
                yield msgspec.json.encode(document)

    _write_lines(sink, records())


# ------------------------------------------------------------------------------ the scorer
class BatchScorer:
    """Scores objects of one blob store with the models of one registry."""

    def __init__(
        self,
        store: BlobStore,
        registry: Predictors,
        *,
        default_model: str | None = None,
        layout: Layout | None = None,
        metrics: Metrics | None = None,
        enqueue: Callable[[bytes], object] | None = None,
        fanout_bytes: int = DEFAULT_FANOUT_BYTES,
        part_bytes: int = DEFAULT_PART_BYTES,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        lease_seconds: float = claims.DEFAULT_LEASE_SECONDS,
        heartbeat_seconds: float = claims.HEARTBEAT_SECONDS,
        clock: Callable[[], float] = time.time,
        reports: bool = True,
        on_drift: Callable[[str, str, dict[str, Any]], object] | None = None,
    ) -> None:
        if part_bytes < 1 or fanout_bytes < 1:
            raise ValueError("fanout_bytes and part_bytes must be positive")
        self.store = store
        self.registry = registry
        self.default_model = default_model or None
        self.layout = layout or Layout()
        self.metrics = metrics
        self.enqueue = enqueue
        self.fanout_bytes = fanout_bytes
        self.part_bytes = part_bytes
        self.chunk_rows = chunk_rows
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.clock = clock
        self.reports = reports
        self.on_drift = on_drift

    # -- entry points --------------------------------------------------------------------------

    def handle_message(self, body: bytes, *, owner: str) -> BatchResult:
        """One work-queue message: ``{"kind": "object", "key"}``, ``{"kind": "part", "job",
        "part"}`` or ``{"kind": "records", "model", "instances", "id"?}``.

        A message that cannot be understood raises :class:`BadRequest`, so the queue retries it
        and finally dead-letters it.
        """
        try:
            message = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise BadRequest(f"the message is not JSON: {exc}") from None
        if not isinstance(message, dict):
            raise BadRequest("the message must be a JSON object with a 'kind'")
        kind = message.get("kind")
        if kind == "object" and isinstance(message.get("key"), str):
            version = message.get("version", message.get("etag"))
            return self.score_upload(
                message["key"], version=version if isinstance(version, str) else None, owner=owner
            )
        if kind == "part" and isinstance(message.get("job"), str):
            part = message.get("part")
            if isinstance(part, int) and not isinstance(part, bool):
                return self.score_part(message["job"], part, owner=owner)
        if kind == "records" and isinstance(message.get("instances"), list):
            model = message.get("model") or self.default_model
            request_id = message.get("id") or owner
            if isinstance(model, str) and isinstance(request_id, str):
                return self.score_records(model, message["instances"], request_id, owner=owner)
        raise BadRequest(
            "unknown message: expected kind 'object' (key), 'part' (job, part) or "
            "'records' (model, instances)",
            extra={"kind": kind if isinstance(kind, str) else None},
        )

    def score_upload(self, key: str, *, version: str | None = None, owner: str) -> BatchResult:
        """Score the object at ``key`` once per (object version, model version); ``version`` is
        the token the event carried: an older one than the object's is a stale event."""
        layout = self.layout
        if not key.startswith(layout.incoming) or key.endswith("/"):
            return BatchResult(key, "ignored", f"not a file under {layout.incoming}")
        info = self.store.stat(key)
        if info is None:
            return BatchResult(key, "ignored", "the object no longer exists")
        if version and not self.store.same_version(version, info.version):
            return BatchResult(key, "stale", "the object was replaced; its own event scores it")
        keys = layout.output_keys(key)
        try:
            predictor = self.registry.get_predictor(layout.model_for(key, self.default_model))
        except SkyscoreError as error:  # no such model (yet): reported, and retryable later
            if error.retryable:
                raise
            return self._failed(key, info, keys, error)
        return self._once(
            info, keys, owner, predictor, lambda: self._score_claimed(key, info, keys, predictor)
        )

    def score_records(
        self, model: str, instances: list[Any], request_id: str, *, owner: str | None = None
    ) -> BatchResult:
        """Inline records from a queue message → ``predictions/queue/<model>/<id>.jsonl``.

        The same path as an uploaded file's (``_once``, then ``_score_stream``): drift goes into
        the manifest and metrics out once per batch, however often the message arrives.
        """
        if not _ID.match(request_id):
            raise BadRequest(f"invalid request id {request_id!r}", field="id")
        predictor = self.registry.get_predictor(model)  # checks the name before it names keys
        key = f"{self.layout.incoming}queue/{model}/{request_id}.jsonl"
        keys = OutputKeys(
            *(
                f"{self.layout.predictions}queue/{model}/{request_id}.jsonl{suffix}"
                for suffix in ("", ".errors.jsonl", ".manifest.json")
            )
        )
        done = self._manifest(keys.manifest)
        if done is not None and done.get("status") != "failed":  # the id is the idempotency key
            return BatchResult(key, "duplicate", "already scored", keys.output, done)
        encoder = msgspec.json.Encoder()
        data = b"\n".join(encoder.encode(item) for item in instances) + b"\n"
        info = ObjectInfo(key, len(data), hashlib.md5(data, usedforsecurity=False).hexdigest())

        def score() -> BatchResult:
            manifest = self._score_stream(io.BytesIO(data), info, keys, "jsonl", predictor)
            detail = f"{manifest['rows_scored']} rows scored, {manifest['rows_failed']} failed"
            return BatchResult(key, "scored", detail, keys.output, manifest)

        return self._once(info, keys, owner or request_id, predictor, score)

    def _once(
        self,
        info: ObjectInfo,
        keys: OutputKeys,
        owner: str,
        predictor: Predictor,
        score: Callable[[], BatchResult],
    ) -> BatchResult:
        """Run ``score`` once per (input version, model version).

        Only a *successful* manifest for the same pair means done; a claim keeps concurrent
        duplicates out (a copy of this very delivery gets :class:`Busy`, retryable, so it is not
        acknowledged while this attempt may still fail), and its heartbeat shows this attempt
        alive while it scores. A permanent (4xx) failure is written to the manifest and the claim is
        given back, so a later delivery or re-upload tries again; anything else releases the
        claim and raises, so the platform retries.
        """
        key = info.key
        model_version = f"{predictor.name}@{predictor.version}"
        done = self._manifest(keys.manifest)
        if done is not None and _succeeded(done, info.version, model_version):
            return BatchResult(key, "duplicate", "already scored", keys.output, done)
        claim_key = f"{self.layout.claims}{self._digest(key, info.version, model_version)}.json"
        claim = claims.acquire(
            self.store,
            claim_key,
            owner,
            lease_seconds=self.lease_seconds,
            heartbeat_seconds=self.heartbeat_seconds,
        )
        if claim.outcome == "held":
            return BatchResult(key, "in_progress", f"being scored by {claim.record.owner}")
        if claim.outcome == "busy":
            raise Busy(f"{key} is being scored by another copy of delivery {owner}")
        if claim.outcome == "finished":
            return BatchResult(key, "duplicate", f"already handled ({claim.record.state})")
        try:
            with claims.heartbeat(self.store, claim_key, claim, interval=self.heartbeat_seconds):
                result = score()
        except SkyscoreError as error:
            claims.release(self.store, claim_key)
            if error.retryable:
                raise
            return self._failed(key, info, keys, error)
        except BaseException:
            claims.release(self.store, claim_key)
            raise
        claims.settle(self.store, claim_key, owner, result.status)
        return result

    # -- single run ----------------------------------------------------------------------------

    def _score_claimed(
        self, key: str, info: ObjectInfo, keys: OutputKeys, predictor: Predictor
    ) -> BatchResult:
        fmt = detect_format(key)
        if info.size > self.fanout_bytes and fmt in SPLITTABLE and self.enqueue is not None:
            plan = self._plan(key, info, fmt, predictor, keys)
            if plan is not None:
                return plan

        def unchanged() -> None:
            now = self.store.stat(key)
            if now is None or not self.store.same_version(now.version, info.version):
                raise InputChanged(
                    f"{key} changed while it was being scored; its partial output was dropped. "
                    "Write files elsewhere and move (rename) them into place when complete",
                    field="key",
                )

        with self.store.open_read(key) as source:
            manifest = self._score_stream(source, info, keys, fmt, predictor, verify=unchanged)
        detail = f"{manifest['rows_scored']} rows scored, {manifest['rows_failed']} failed"
        return BatchResult(key, "scored", detail, keys.output, manifest)

    def _score_stream(
        self,
        source: BinaryIO,
        info: ObjectInfo,
        keys: OutputKeys,
        fmt: str,
        predictor: Predictor,
        *,
        verify: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Score into the output, then the error report, then (last) the manifest; ``verify``
        runs before the manifest: a failure there leaves nothing that looks complete."""
        accumulator = DriftAccumulator(predictor.card)
        with tempfile.SpooledTemporaryFile(ERROR_SPOOL_BYTES) as errors:
            with self.store.open_write(keys.output) as sink:
                report = score_stream(
                    source,
                    sink,
                    fmt=fmt,
                    predictor=predictor,
                    errors_sink=cast(BinaryIO, errors),
                    chunk_rows=self.chunk_rows,
                    observers=[accumulator],
                    input_name=info.key,
                )
            self._publish_errors(keys.errors, cast(BinaryIO, errors), report.rows_failed)
        drift = accumulator.result()
        manifest = report.to_manifest(output_name=keys.output, errors_name=keys.errors)
        manifest.update(input_key=info.key, input_version=info.version, drift=drift)
        if verify is not None:
            try:
                verify()
            except SkyscoreError:
                for partial in (keys.output, keys.errors):
                    self.store.delete(partial)
                raise
        if self.reports:
            self._write_report(keys.output, manifest, predictor)
        self.store.write_bytes(keys.manifest, pretty_json(manifest))
        self._publish(report, drift)
        if self.on_drift is not None:
            self._raise_drift(predictor, drift)
        return manifest

    def _write_report(self, output: str, manifest: dict[str, Any], predictor: Predictor) -> None:
        """``<output>.report.html``: drift and bad rows of this batch, one self-contained page."""
        from skyscore.monitoring.report import batch_report_html

        page = batch_report_html(manifest, predictor.card)
        self.store.write_bytes(f"{output}.report.html", page.encode("utf-8"))

    def _raise_drift(self, predictor: Predictor, drift: dict[str, Any]) -> None:
        """A drifted batch tells the hook (the local runtime's retraining); never fails a batch."""
        from skyscore.monitoring.batch import drift_alarm

        alarm = drift_alarm(drift)
        if alarm is None or self.on_drift is None:
            return
        try:
            self.on_drift(predictor.name, alarm, drift)
        except Exception:
            log.exception("the %s hook for %s failed", alarm, predictor.name)

    def _publish_errors(self, key: str, errors: BinaryIO, failed: int) -> None:
        if not failed:
            self.store.delete(key)  # a stale report from an earlier version of this input
            return
        errors.seek(0)
        with self.store.open_write(key) as sink:
            while block := errors.read(_COPY):
                sink.write(block)

    def _publish(self, report: ScoreReport, drift: dict[str, Any]) -> None:
        if self.metrics is not None:
            from skyscore.monitoring.batch import publish_batch

            publish_batch(self.metrics, report, drift)

    def _failed(
        self, key: str, info: ObjectInfo, keys: OutputKeys, error: SkyscoreError
    ) -> BatchResult:
        """A file that can never be scored: say why in its manifest, drop partial outputs."""
        problem = error.to_problem(key)
        manifest = {
            "input": key,
            "input_key": key,
            "input_version": info.version,
            "status": "failed",
            "error": problem,
            "output": None,
            "finished_at": iso_ms(),
        }
        for stale in (keys.output, keys.errors):
            self.store.delete(stale)
        earlier = self._manifest(keys.manifest)
        if earlier is not None and all(
            earlier.get(field) == manifest[field] for field in ("status", "input_version", "error")
        ):
            manifest = earlier  # the same failure again (a duplicate event): leave it as it is
        else:
            self.store.write_bytes(keys.manifest, pretty_json(manifest))
        return BatchResult(key, "failed", error.detail, None, manifest, problem=problem)

    def _manifest(self, key: str) -> dict[str, Any] | None:
        try:
            document = msgspec.json.decode(self.store.read_bytes(key))
        except NotFound:
            return None
        except msgspec.DecodeError:
            return None
        return document if isinstance(document, dict) else None

    @staticmethod
    def _digest(key: str, *versions: str) -> str:
        return hashlib.sha256("\0".join((key, *versions)).encode()).hexdigest()[:32]

    # -- fan-out -------------------------------------------------------------------------------

    def _job_prefix(self, job: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{32}", job):
            raise BadRequest(f"invalid fan-out job id {job!r}", field="job")
        return f"{self.layout.work}{job}/"

    def _plan(
        self, key: str, info: ObjectInfo, fmt: str, predictor: Predictor, keys: OutputKeys
    ) -> BatchResult | None:
        """Split into ranges and enqueue one message per part (``None``: cannot split)."""
        header, start = self._header(key, fmt, info.size)
        if start < 0:
            return None
        ranges = self._ranges(key, start, info.size)
        if len(ranges) < 2:
            return None
        job = self._digest(key, info.version, f"{predictor.name}@{predictor.version}")
        plan = {
            "job": job,
            "key": key,
            "etag": info.version,
            "size": info.size,
            "format": fmt,
            "model": predictor.name,
            "version": predictor.version,
            "header": base64.b64encode(header).decode("ascii"),
            "ranges": ranges,
            "output": keys.output,
            "errors": keys.errors,
            "manifest": keys.manifest,
            "created_at": self.clock(),
        }
        self.store.write_bytes(self._job_prefix(job) + "plan.json", pretty_json(plan))
        assert self.enqueue is not None
        for index in range(len(ranges)):
            self.enqueue(_json.encode({"kind": "part", "job": job, "part": index}))
        detail = f"split into {len(ranges)} parts of about {self.part_bytes:,} bytes"
        return BatchResult(key, "fanned_out", detail, keys.output, job=job, parts=len(ranges))

    def _header(self, key: str, fmt: str, size: int) -> tuple[bytes, int]:
        """The CSV header line (with its newline) and where the data starts; ``-1``: no
        newline at all."""
        if fmt != "csv":
            return b"", 0
        cut = self._next_newline(key, 0, size)
        if cut < 0:
            return b"", -1
        with self.store.open_range(key, 0, cut) as handle:
            return handle.read(), cut

    def _next_newline(self, key: str, start: int, size: int) -> int:
        """The offset just after the first ``\\n`` at or after ``start`` (``-1``: none)."""
        position = start
        while position < size and position - start < _MAX_LINE:
            end = min(size, position + _WINDOW)
            with self.store.open_range(key, position, end) as handle:
                window = handle.read()
            found = window.find(b"\n")
            if found >= 0:
                return position + found + 1
            if not window:
                break
            position += len(window)
        return -1

    def _ranges(self, key: str, start: int, size: int) -> list[list[int]]:
        """``[start, end)`` byte ranges of about ``part_bytes`` that end after a newline."""
        bounds = [start]
        target = start + self.part_bytes
        while target < size:
            cut = self._next_newline(key, target - 1, size)
            if cut < 0 or cut >= size:
                break
            if cut > bounds[-1]:
                bounds.append(cut)
            target = cut + self.part_bytes
        bounds.append(size)
        return [[a, b] for a, b in itertools.pairwise(bounds) if b > a]

    def _read_plan(self, job: str) -> dict[str, Any]:
        try:
            plan = msgspec.json.decode(self.store.read_bytes(self._job_prefix(job) + "plan.json"))
        except NotFound:
            raise BadRequest(f"fan-out job {job} has no plan") from None
        if not isinstance(plan, dict):
            raise BadRequest(f"fan-out job {job} has an invalid plan")
        return plan

    def score_part(self, job: str, index: int, *, owner: str) -> BatchResult:
        """Score one byte range of a plan; the caller that completes the set assembles it."""
        prefix = self._job_prefix(job)
        plan = self._read_plan(job)
        key = str(plan["key"])
        ranges = plan["ranges"]
        if not 0 <= index < len(ranges):
            raise BadRequest(f"fan-out job {job} has no part {index}", field="part")
        if self.store.exists(prefix + "assembled.json"):
            return BatchResult(key, "duplicate", "already assembled", str(plan["output"]), job=job)
        marker = f"{prefix}parts/{index:05d}.json"
        if not self.store.exists(marker):
            self._score_part(plan, prefix, index, marker)
        return self._maybe_assemble(plan, prefix, owner)

    def _score_part(self, plan: dict[str, Any], prefix: str, index: int, marker: str) -> None:
        start, end = plan["ranges"][index]
        record = self._score_range(plan, prefix, start, end, f"{index:05d}")
        with contextlib.suppress(ConflictError):  # a duplicate delivery finished first
            self.store.write_bytes(marker, _json.encode(record), if_absent=True)

    def _score_range(
        self, plan: dict[str, Any], prefix: str, start: int, end: int, name: str
    ) -> dict[str, Any]:
        """Score bytes ``[start, end)`` (after the header) into ``parts/<name>.out``."""
        predictor = self.registry.get_predictor(str(plan["model"]), str(plan["version"]))
        accumulator = DriftAccumulator(predictor.card)
        out_key = f"{prefix}parts/{name}.out"
        errors_key = f"{prefix}parts/{name}.errors.jsonl"
        header = base64.b64decode(plan["header"])
        with (
            tempfile.SpooledTemporaryFile(ERROR_SPOOL_BYTES) as errors,
            self.store.open_range(str(plan["key"]), start, end) as body,
        ):
            counted = _QuoteCounter(body)
            with self.store.open_write(out_key) as sink:
                report = score_stream(
                    cast(BinaryIO, _Prefixed(header, cast(BinaryIO, counted))),
                    sink,
                    fmt=str(plan["format"]),
                    predictor=predictor,
                    errors_sink=cast(BinaryIO, errors),
                    chunk_rows=self.chunk_rows,
                    observers=[accumulator],
                    input_name=f"{plan['key']} bytes {start}-{end}",
                )
            while counted.read(_COPY):  # a decoder may stop early; the count needs every byte
                pass
            self._publish_errors(errors_key, cast(BinaryIO, errors), report.rows_failed)
        return {
            "name": name,
            "range": [start, end],
            "quotes": counted.quotes,
            "report": report.to_manifest(output_name=out_key, errors_name=errors_key),
            "drift": drift_state(accumulator),
        }

    def _maybe_assemble(self, plan: dict[str, Any], prefix: str, owner: str) -> BatchResult:
        key, job = str(plan["key"]), str(plan["job"])
        total = len(plan["ranges"])
        done = sum(1 for info in self.store.list(prefix + "parts/") if info.key.endswith(".json"))
        if done < total:
            return BatchResult(key, "part_scored", f"{done}/{total} parts done", job=job)
        claim_key = prefix + "assemble.claim"
        claim = claims.acquire(self.store, claim_key, owner, lease_seconds=self.lease_seconds)
        if not claim.acquired:
            return BatchResult(key, "part_scored", "another worker assembles", job=job)
        try:
            manifest = self._assemble(plan, prefix)
        except BaseException:
            claims.release(self.store, claim_key)
            raise
        claims.settle(self.store, claim_key, owner)
        return BatchResult(key, "assembled", f"{total} parts", str(plan["output"]), manifest, job)

    def _assemble(self, plan: dict[str, Any], prefix: str) -> dict[str, Any]:
        """Concatenate the parts in order, renumbering rows; manifest last; parts removed.

        A CSV boundary that fell inside a quoted field (the quotes before it are unbalanced)
        split a record in two: the parts on both sides are scored again as one range here,
        so the output is what a single run gives.
        """
        fmt = str(plan["format"])
        total = len(plan["ranges"])
        parts = [
            msgspec.json.decode(self.store.read_bytes(f"{prefix}parts/{i:05d}.json"))
            for i in range(total)
        ]
        records = [
            group[0] if len(group) == 1 else self._rescore(plan, prefix, group)
            for group in self._groups(plan, parts)
        ]
        offsets = np.cumsum([0] + [int(r["report"]["rows_read"]) for r in records]).tolist()
        with self.store.open_write(str(plan["output"])) as raw:
            sink = _Counting(raw)
            for i, record in enumerate(records):
                with self.store.open_read(f"{prefix}parts/{record['name']}.out") as source:
                    if fmt == "csv":
                        renumber_csv(source, cast(BinaryIO, sink), offsets[i], keep_header=i == 0)
                    else:
                        renumber_jsonl(source, cast(BinaryIO, sink), offsets[i])
        failed = sum(int(r["report"]["rows_failed"]) for r in records)
        if failed:
            with self.store.open_write(str(plan["errors"])) as errors:
                for i, record in enumerate(records):
                    if int(record["report"]["rows_failed"]):
                        part_errors = f"{prefix}parts/{record['name']}.errors.jsonl"
                        with self.store.open_read(part_errors) as source:
                            renumber_jsonl(source, errors, offsets[i])
        else:
            self.store.delete(str(plan["errors"]))
        predictor = self.registry.get_predictor(str(plan["model"]), str(plan["version"]))
        drift = merge_drift(predictor.card, [r["drift"] for r in records]).result()
        report = self._merged_report(plan, records, offsets, sink.bytes)
        manifest = report.to_manifest(
            output_name=str(plan["output"]), errors_name=str(plan["errors"])
        )
        manifest.update(
            input_key=plan["key"],
            input_version=plan["etag"],
            drift=drift,
            fanout={
                "job": plan["job"],
                "parts": total,
                "ranges": plan["ranges"],
                "rescored": [r["range"] for r in records if "-" in str(r["name"])],
            },
        )
        self.store.write_bytes(str(plan["manifest"]), pretty_json(manifest))
        self.store.write_bytes(prefix + "assembled.json", _json.encode({"at": self.clock()}))
        for info in list(self.store.list(prefix + "parts/")):
            self.store.delete(info.key)
        self._publish(report, drift)
        return manifest

    @staticmethod
    def _groups(plan: dict[str, Any], parts: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """Runs of parts joined by boundaries that fell inside a quoted CSV field."""
        inside = base64.b64decode(plan["header"]).count(b'"') % 2 == 1
        groups: list[list[dict[str, Any]]] = []
        for part in parts:
            if groups and inside and plan["format"] == "csv":
                groups[-1].append(part)
            else:
                groups.append([part])
            inside ^= int(part.get("quotes", 0)) % 2 == 1
        return groups

    def _rescore(
        self, plan: dict[str, Any], prefix: str, group: list[dict[str, Any]]
    ) -> dict[str, Any]:
        start, end = group[0]["range"][0], group[-1]["range"][1]
        name = f"{group[0]['name']}-{group[-1]['name']}"
        return self._score_range(plan, prefix, int(start), int(end), name)

    def _merged_report(
        self,
        plan: dict[str, Any],
        records: list[dict[str, Any]],
        offsets: list[int],
        output_bytes: int,
    ) -> ScoreReport:
        parts = [r["report"] for r in records]
        first_errors: list[RowError] = []
        for offset, part in zip(offsets, parts, strict=False):
            for error in part.get("first_errors", ()):
                if len(first_errors) < FIRST_ERRORS:
                    first_errors.append(
                        RowError(int(error["row"]) + offset, error.get("column"), error["reason"])
                    )
        model = parts[0]["model"]
        now = self.clock()
        return ScoreReport(
            input_name=str(plan["key"]),
            format=str(plan["format"]),
            output_format=str(plan["format"]),
            input_bytes=int(plan["size"]),
            output_bytes=output_bytes,
            rows_read=sum(int(p["rows_read"]) for p in parts),
            rows_scored=sum(int(p["rows_scored"]) for p in parts),
            rows_failed=sum(int(p["rows_failed"]) for p in parts),
            chunks=sum(int(p["chunks"]) for p in parts),
            model_name=model.get("name"),
            model_version=model.get("version"),
            model_sha256=model.get("onnx_sha256"),
            decode_seconds=sum(float(p["timings_s"]["decode"]) for p in parts),
            infer_seconds=sum(float(p["timings_s"]["infer"]) for p in parts),
            encode_seconds=sum(float(p["timings_s"]["encode"]) for p in parts),
            observe_seconds=sum(float(p["timings_s"]["observe"]) for p in parts),
            total_seconds=max(now - float(plan["created_at"]), 0.0),
            started_at=iso_ms(float(plan["created_at"])),
            finished_at=iso_ms(now),
            first_errors=first_errors,
        )
