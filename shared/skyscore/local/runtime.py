"""The local runtime: an HTTP server over the dataplane plus an inbox watcher, stdlib only.

``skyscore serve`` runs :class:`LocalRuntime`: a ``ThreadingHTTPServer`` that turns each HTTP
request into a :class:`~skyscore.serving.dataplane.Request` (so it answers exactly like the cloud
functions), and a thread that scores files dropped into ``<home>/inbox/``:

* ``inbox/file.csv`` uses the default model (``--model``, or the only model there is);
  ``inbox/<model>/file.csv`` picks the model. Dotfiles and ``.tmp``/``.part`` names are ignored,
  and a file is taken only once its size and mtime are unchanged across two polls.
* Output goes to ``predictions/<name>`` (same format) with ``<name>.errors.jsonl`` when rows
  failed and ``<name>.manifest.json``; then the input moves to ``processed/``.
* A file-level error (wrong content for its extension, unknown model, missing columns) moves
  the input to ``failed/`` beside a ``<name>.error.json`` reason: a bad file never loops.
* A file whose sha256 and model version match the existing manifest is not scored again.

Every request and every file logs one JSON line (to stderr when the application has not set up
logging itself).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import msgspec

from skyscore.errors import PROBLEM_CONTENT_TYPE, BadRequest, SkyscoreError
from skyscore.local.home import LocalHome
from skyscore.serving.dataplane import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_INSTANCES,
    DataPlane,
    Headers,
    ModelProvider,
    RegistryModelProvider,
    Request,
    Response,
)

if TYPE_CHECKING:
    from skyscore.lifecycle.retrain import Alarm, RetrainController
    from skyscore.model.predictor import Predictor
    from skyscore.model.registry import ModelRegistry
    from skyscore.monitoring.metrics import Metrics

__all__ = [
    "DEFAULT_POLL_SECONDS",
    "IGNORED_SUFFIXES",
    "FileOutcome",
    "InboxWatcher",
    "JsonFormatter",
    "LocalRuntime",
    "configure_logging",
]

DEFAULT_POLL_SECONDS = 1.0
IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", "~")
DRAIN_LIMIT_BYTES = 64 << 20  # an oversized body up to this is read and dropped, not reset
EMPTY_FILE_GRACE_SECONDS = 2.0  # a 0-byte file may be a writer that has not started yet
_BLOCK = 1 << 20

_log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()
_log_encoder = msgspec.json.Encoder(enc_hook=str)  # log fields may hold paths or numpy scalars


# ------------------------------------------------------------------------------ logging
class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _log_encoder.encode(entry).decode("utf-8", "replace")


_LOGGING_LOCK = threading.Lock()


def configure_logging(level: int = logging.INFO) -> bool:
    """Send ``skyscore`` logs to stderr as JSON lines, unless the application set up logging.

    Returns whether a handler was added (idempotent: a second call adds nothing).
    """
    with _LOGGING_LOCK:
        package = logging.getLogger("skyscore")
        if package.handlers or logging.getLogger().handlers:
            return False
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        package.addHandler(handler)
        package.setLevel(level)
        return True


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ------------------------------------------------------------------------------ HTTP
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    plane: DataPlane


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    """Adapts one HTTP exchange to ``DataPlane.handle``; no routing or validation here."""

    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    server_version = "skyscore"
    sys_version = ""
    timeout = 60  # idle keep-alive connections close, so stop() never waits on them
    server: _Server

    def _serve(self) -> None:
        started = time.perf_counter()
        plane = self.server.plane
        target, _, raw_query = self.path.partition("?")
        query: dict[str, str] = {}
        if raw_query:
            from urllib.parse import parse_qsl

            query = dict(parse_qsl(raw_query))
        response: Response | None = None
        body = b""
        try:
            body = self._read_body(plane)
        except SkyscoreError as error:  # _read_body decided whether the connection survives
            response = plane.error_response(error, target)
        if response is None:
            request = Request(self.command, target, Headers(self.headers.items()), body, query)
            response = plane.handle(request)
        self._send(response)
        _log.info(
            "request",
            extra={
                "fields": {
                    "method": self.command,
                    "path": target,
                    "status": response.status,
                    "bytes_in": len(body),
                    "bytes_out": len(response.body),
                    "duration_ms": round((time.perf_counter() - started) * 1e3, 3),
                    "client": self.client_address[0],
                }
            },
        )

    # http.server dispatches on do_<METHOD>; every method goes to the dataplane
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve  # noqa: N815

    def _read_body(self, plane: DataPlane) -> bytes:
        """The request body, refused (413) before it is kept when it is over the limit.

        An oversized body of moderate size is read and discarded, so the client sees the 413
        rather than a reset connection and may reuse it; a huge one closes the connection.
        """
        encoding = self.headers.get("Transfer-Encoding", "")
        if "chunked" in encoding.lower():
            try:
                return self._read_chunked(plane)
            except SkyscoreError:
                self.close_connection = True  # the rest of the chunks are unread
                raise
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
            if length < 0:
                raise ValueError(raw)
        except ValueError:
            self.close_connection = True  # the body's end is unknown
            raise BadRequest(f"invalid Content-Length {raw!r}") from None
        try:
            plane.check_size(length)
        except SkyscoreError:
            if length > DRAIN_LIMIT_BYTES:
                self.close_connection = True
            else:
                remaining = length
                while remaining > 0:
                    block = self.rfile.read(min(remaining, _BLOCK))
                    if not block:
                        break
                    remaining -= len(block)
            raise
        return self.rfile.read(length) if length else b""

    def _read_chunked(self, plane: DataPlane) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequest("malformed chunked body") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            plane.check_size(total)
            parts.append(self.rfile.read(size))
            self.rfile.readline(8)  # the CRLF after each chunk

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors (bad request line, oversized headers) as problem JSON too."""
        title = message or self.responses.get(code, ("Error", ""))[0]
        problem = {
            "type": "about:blank",
            "title": title,
            "status": code,
            "detail": explain or title,
        }
        body = _encoder.encode(problem)
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # an unparsable request line: answer in HTTP/1.x
            self.request_version = self.protocol_version
        try:
            self.send_response(code, message)
            self.send_header("Content-Type", PROBLEM_CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)
        except OSError:
            pass
        _log.info(
            "request",
            extra={
                "fields": {
                    "method": getattr(self, "command", None),
                    "path": getattr(self, "path", None),
                    "status": code,
                    "client": self.client_address[0],
                }
            },
        )

    def log_message(self, format: str, *args: Any) -> None:
        """Silence http.server's own access log: ``_serve`` logs one JSON line instead."""


# ------------------------------------------------------------------------------ inbox
@dataclass(slots=True)
class FileOutcome:
    """What the watcher did with one file (also logged as one JSON line)."""

    input: str
    model: str | None
    status: str  # scored, duplicate, failed, vanished, or stuck (could not even be moved)
    moved_to: str | None = None
    output: str | None = None
    rows_scored: int = 0
    rows_failed: int = 0
    detail: str | None = None
    duration_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        """Log fields (no ``None`` values)."""
        out = {
            "input": self.input,
            "model": self.model,
            "status": self.status,
            "moved_to": self.moved_to,
            "output": self.output,
            "rows_scored": self.rows_scored,
            "rows_failed": self.rows_failed,
            "detail": self.detail,
            "duration_ms": self.duration_ms,
            **self.extra,
        }
        return {k: v for k, v in out.items() if v is not None}


def _ignored(name: str) -> bool:
    return name.startswith(".") or name.lower().endswith(IGNORED_SUFFIXES)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _unique(directory: Path, name: str) -> Path:
    """``directory/name``, or ``stem-1.ext``, ``stem-2.ext``... when that is taken."""
    target = directory / name
    if not target.exists():
        return target
    base = Path(name)
    stem, suffix = base.stem, base.suffix
    for counter in range(1, 1_000_000):
        candidate = directory / f"{stem}-{counter}{suffix}"
        if (
            not candidate.exists()
            and not candidate.with_name(candidate.name + ".error.json").exists()
        ):
            return candidate
    raise FileExistsError(f"no free name for {name} in {directory}")


class InboxWatcher:
    """Scores files dropped into ``inbox`` once they are stable; see the module docstring."""

    def __init__(
        self,
        home: LocalHome,
        provider: ModelProvider,
        *,
        default_model: str | None = None,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        metrics: Metrics | None = None,
        on_alarm: Callable[[str, str, dict[str, Any]], object] | None = None,
        after_poll: Callable[[], object] | None = None,
    ) -> None:
        self.metrics = metrics
        self.on_alarm = on_alarm
        self.after_poll = after_poll
        self.inbox = home.inbox
        self.predictions = home.predictions
        self.processed = home.root / "processed"
        self.failed = home.root / "failed"
        self.provider = provider
        self.default_model = default_model
        self.poll_seconds = poll_seconds
        self._seen: dict[Path, tuple[int, int, float]] = {}  # size, mtime_ns, first seen
        self._stuck: dict[Path, tuple[int, int]] = {}  # files that could not even be moved
        for directory in (self.inbox, self.predictions, self.processed, self.failed):
            directory.mkdir(parents=True, exist_ok=True)

    # -- scanning ------------------------------------------------------------------------------

    def _candidates(self) -> Iterator[tuple[Path, str | None]]:
        """(file, model from its folder or None) for every file that may be an input."""
        try:
            entries = list(os.scandir(self.inbox))
        except FileNotFoundError:
            self.inbox.mkdir(parents=True, exist_ok=True)
            return
        for entry in sorted(entries, key=lambda e: e.name):
            if _ignored(entry.name):
                continue
            if entry.is_file(follow_symlinks=False):
                yield Path(entry.path), None
            elif entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    for inner in sorted(os.scandir(entry.path), key=lambda e: e.name):
                        if not _ignored(inner.name) and inner.is_file(follow_symlinks=False):
                            yield Path(inner.path), entry.name

    def poll(self) -> list[FileOutcome]:
        """One pass: note new or changing files, process those unchanged since the last pass."""
        outcomes: list[FileOutcome] = []
        present: set[Path] = set()
        now = time.monotonic()
        for path, model in self._candidates():
            present.add(path)
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            signature = (st.st_size, st.st_mtime_ns)
            if self._stuck.get(path) == signature:
                continue
            previous = self._seen.get(path)
            if previous is None or previous[:2] != signature:
                self._seen[path] = (*signature, now)
                continue
            if st.st_size == 0 and now - previous[2] < max(
                EMPTY_FILE_GRACE_SECONDS, 2 * self.poll_seconds
            ):
                continue
            del self._seen[path]
            outcome = self.process(path, model)
            if outcome.status == "stuck":
                self._stuck[path] = signature
            outcomes.append(outcome)
        for gone in set(self._seen) - present:
            del self._seen[gone]
        for gone in set(self._stuck) - present:
            del self._stuck[gone]
        return outcomes

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; never raises (a failing pass is logged and retried)."""
        while not stop.is_set():
            try:
                self.poll()
            except Exception:
                _log.exception("inbox poll failed; retrying in %.1fs", self.poll_seconds)
            if self.after_poll is not None:
                try:
                    self.after_poll()
                except Exception:
                    _log.exception("retraining tick failed; retrying")
            stop.wait(self.poll_seconds)

    # -- one file ------------------------------------------------------------------------------

    def _model_for(self, model: str | None) -> str:
        if model is not None:
            return model
        if self.default_model:
            return self.default_model
        names = self.provider.names()
        if len(names) == 1:
            return names[0]
        raise BadRequest(
            "no model for a file dropped straight into the inbox: put it in inbox/<model>/ "
            "or start the runtime with a default model (skyscore serve --model NAME)"
            + (f"; models: {', '.join(names)}" if names else "; there are no models yet")
        )

    def process(self, path: Path, folder_model: str | None) -> FileOutcome:
        """Score one stable file and move it to processed/ or failed/ (never raises)."""
        started = time.perf_counter()
        outcome = FileOutcome(
            input=str(path.relative_to(self.inbox)), model=folder_model, status=""
        )
        try:
            model = self._model_for(folder_model)
            outcome.model = model
            predictor = self.provider.get(model)
            self._score(path, predictor, outcome)
            outcome.moved_to = str(self._move(path, self.processed))
        except FileNotFoundError as exc:
            if path.exists():  # something else is missing: treat it as a failure
                self._fail(path, outcome, _problem_for(exc))
            else:
                outcome.status = "vanished"
                outcome.detail = "the file disappeared before it was scored"
        except SkyscoreError as error:
            self._fail(path, outcome, error.to_problem())
        except Exception as exc:
            _log.exception("scoring %s failed unexpectedly", path)
            self._fail(path, outcome, _problem_for(exc))
        outcome.duration_ms = round((time.perf_counter() - started) * 1e3, 3)
        level = logging.WARNING if outcome.status in ("failed", "stuck") else logging.INFO
        _log.log(level, "inbox file", extra={"fields": outcome.fields()})
        return outcome

    def _score(self, path: Path, predictor: Predictor, outcome: FileOutcome) -> None:
        """The one place that talks to scoring: dedupe by manifest, then score with drift
        monitoring (manifest ``drift``, metrics, an HTML report) and raise any drift alarm."""
        from skyscore.formats import detect_format
        from skyscore.monitoring.batch import drift_alarm, score_file
        from skyscore.monitoring.drift import summary

        detect_format(path.name)  # an unsupported extension fails before any work
        output = self.predictions / path.name
        outcome.output = str(output)
        manifest = output.with_name(output.name + ".manifest.json")
        digest = _sha256(path)
        if output.exists() and _same_scoring(manifest, digest, predictor):
            outcome.status = "duplicate"
            outcome.detail = f"already scored by {predictor.name} version {predictor.version}"
            return
        report, drift = score_file(path, output, predictor, metrics=self.metrics, report_html=True)
        alarm = drift_alarm(drift)
        if alarm is not None and self.on_alarm is not None:
            try:
                self.on_alarm(predictor.name, alarm, drift)
            except Exception:  # monitoring must never break scoring
                _log.exception("handling the %s alarm for %s failed", alarm, predictor.name)
        outcome.extra = {"drift": summary(drift)}
        outcome.status = "scored"
        outcome.rows_scored = report.rows_scored
        outcome.rows_failed = report.rows_failed
        outcome.extra.update(version=predictor.version, input_sha256=report.input_sha256)

    def _move(self, path: Path, directory: Path) -> Path:
        target = _unique(directory, path.name)
        os.replace(path, target)
        return target

    def _fail(self, path: Path, outcome: FileOutcome, problem: dict[str, Any]) -> None:
        outcome.status = "failed"
        outcome.detail = str(problem.get("detail", ""))
        try:
            target = self._move(path, self.failed)
        except FileNotFoundError:
            outcome.status = "vanished"
            return
        except OSError as exc:
            outcome.status = "stuck"
            outcome.detail = f"{outcome.detail}; and it could not be moved to failed/: {exc}"
            return
        outcome.moved_to = str(target)
        reason = {
            "input": outcome.input,
            "model": outcome.model,
            "failed_at": _now_iso(),
            "reason": outcome.detail,
            "problem": problem,
        }
        report = target.with_name(target.name + ".error.json")
        with contextlib.suppress(OSError):
            report.write_bytes(msgspec.json.format(_encoder.encode(reason), indent=2) + b"\n")


def _problem_for(exc: BaseException) -> dict[str, Any]:
    """A problem for an untyped failure: its type and message, never a traceback."""
    return SkyscoreError(f"{type(exc).__name__}: {exc}").to_problem()


def _same_scoring(manifest: Path, digest: str, predictor: Predictor) -> bool:
    """True when ``manifest`` records this exact input scored by this exact model version."""
    try:
        record = msgspec.json.decode(manifest.read_bytes())
    except (OSError, msgspec.DecodeError):
        return False
    if not isinstance(record, dict):
        return False
    model = record.get("model")
    return (
        record.get("input_sha256") == digest
        and isinstance(model, dict)
        and model.get("name") == predictor.name
        and model.get("version") == predictor.version
    )


# ------------------------------------------------------------------------------ the runtime
ONLINE_CHECK_SECONDS = 60.0  # how often live HTTP traffic is checked for drift
ONLINE_MIN_ROWS = 500  # fewer requests than this in the window raise no alarm


def _file_metrics(path: Path) -> Metrics:
    """Metrics as JSON lines appended to a file in the home (no network, no stdout noise)."""
    from skyscore.monitoring.metrics import LogMetrics

    return LogMetrics(path.open("a", encoding="utf-8"), format="json")


class LocalRuntime:
    """HTTP server + inbox watcher over one local home; ``with LocalRuntime(...) as rt:``.

    ``port=0`` picks a free port (read it back from :attr:`url`). The registry defaults to the
    home's own (``models/`` under ``home``); pass ``provider`` to serve something else.
    """

    def __init__(
        self,
        home: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = 8080,
        default_model: str | None = None,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        *,
        registry: ModelRegistry | None = None,
        provider: ModelProvider | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_instances: int = DEFAULT_MAX_INSTANCES,
        watch_inbox: bool = True,
        log_to_stderr: bool = True,
        retraining: bool = True,
        controller: RetrainController | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.home = LocalHome(Path(home).expanduser().resolve()).ensure()
        registry = registry or (self.home.registry() if provider is None else None)
        self.host = host
        self.port = port
        if provider is None:
            assert registry is not None
            provider = RegistryModelProvider(registry)
        self.provider = provider
        self.plane = DataPlane(provider, max_body_bytes=max_body_bytes, max_instances=max_instances)
        self.metrics = metrics or _file_metrics(self.home.root / "metrics.jsonl")
        if controller is None and retraining and registry is not None:
            from skyscore.adapters.local import LocalBlobStore, LocalJobRunner
            from skyscore.lifecycle.retrain import RetrainController

            controller = RetrainController(
                LocalBlobStore(self.home.root),
                registry,
                LocalJobRunner(self.home.root),
                metrics=self.metrics,
            )
        self.controller = controller if retraining else None
        self.watcher = InboxWatcher(
            self.home,
            provider,
            default_model=default_model,
            poll_seconds=poll_seconds,
            metrics=self.metrics,
            on_alarm=self._on_alarm if self.controller else None,
            after_poll=self._tick if self.controller else None,
        )
        self.watch_inbox = watch_inbox
        self.log_to_stderr = log_to_stderr
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._online_checked = time.monotonic()

    def _on_alarm(self, model: str, alarm: str, drift: dict[str, Any]) -> None:
        """A drift alarm from a scored file goes to the retraining controller."""
        from skyscore.monitoring.drift import summary

        assert self.controller is not None
        kind: Alarm = "prediction_drift" if alarm == "prediction_drift" else "drift"
        decision = self.controller.on_alarm(model, kind, reason=summary(drift))
        _log.info("retraining decision", extra={"fields": decision.to_dict()})

    def _tick(self) -> None:
        """Judge finished training jobs; now and then, check drift of live HTTP traffic."""
        assert self.controller is not None
        now = time.monotonic()
        if now - self._online_checked >= ONLINE_CHECK_SECONDS:
            self._online_checked = now
            self._check_online_drift()
        for name in self.controller.registry.list_models():
            if not self.controller.pending(name):
                continue
            for decision in self.controller.poll(name):
                _log.info("retraining decision", extra={"fields": decision.to_dict()})

    def _check_online_drift(self) -> None:
        """Raise the drift alarm for HTTP traffic that has moved away from the baseline."""
        from skyscore.monitoring.batch import drift_alarm

        for name in self.provider.names():
            try:
                drift = self.plane.online_drift.result(self.provider.get(name))
            except SkyscoreError:
                continue
            alarm = drift_alarm(drift) if drift["rows"] >= ONLINE_MIN_ROWS else None
            if alarm is not None:
                self._on_alarm(name, alarm, drift)

    @property
    def url(self) -> str:
        """Base URL clients use (the bound port once started)."""
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def start(self) -> LocalRuntime:
        """Bind, then serve HTTP and watch the inbox in background threads; returns self."""
        if self._server is not None:
            raise RuntimeError("this runtime is already started")
        if self.log_to_stderr:
            configure_logging()
        server_class = _Server6 if ":" in self.host else _Server
        server = server_class((self.host, self.port), _Handler)
        server.plane = self.plane
        self._server = server
        self.port = int(server.server_address[1])
        self._stop.clear()
        self._stopped.clear()
        http = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="skyscore-http"
        )
        self._threads = [http]
        if self.watch_inbox:
            watcher = threading.Thread(
                target=self.watcher.run, args=(self._stop,), name="skyscore-inbox", daemon=True
            )
            self._threads.append(watcher)
        for thread in self._threads:
            thread.start()
        _log.info(
            "started",
            extra={
                "fields": {"url": self.url, "home": str(self.home.root), "inbox": self.watch_inbox}
            },
        )
        return self

    def stop(self) -> None:
        """Stop serving and watching; waits for the current file to finish. Idempotent."""
        server = self._server
        if server is None:
            return
        self._stop.set()
        server.shutdown()
        server.server_close()
        for thread in self._threads:
            thread.join(timeout=60)
        self._server = None
        self._threads = []
        self._stopped.set()
        _log.info("stopped", extra={"fields": {"url": self.url}})

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` (from another thread) or ``timeout``; True once stopped.

        Waits in short slices so that Ctrl-C reaches the main thread promptly.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stopped.is_set():
            remaining = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if remaining <= 0:
                return False
            self._stopped.wait(remaining)
        return True

    def serve_forever(self) -> None:
        """Start (if needed) and run until interrupted (Ctrl-C / SIGINT), then stop."""
        if self._server is None:
            self.start()
        try:
            self.wait()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> LocalRuntime:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
