"""The local runtime: the HTTP front end (:mod:`.http`) and the inbox (:mod:`.inbox`) over one home.

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

import logging
import os
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from skyscore.errors import SkyscoreError
from skyscore.local.home import LocalHome
from skyscore.serving.dataplane import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_INSTANCES,
    DataPlane,
    ModelProvider,
    RegistryModelProvider,
)

if TYPE_CHECKING:
    from skyscore.lifecycle.retrain import Alarm, RetrainController
    from skyscore.model.registry import ModelRegistry
    from skyscore.monitoring.metrics import Metrics

from skyscore.local.http import _Handler, _Server, _Server6
from skyscore.local.inbox import DEFAULT_POLL_SECONDS, IGNORED_SUFFIXES, FileOutcome, InboxWatcher
from skyscore.local.logs import JsonFormatter, configure_logging

__all__ = [
    "DEFAULT_POLL_SECONDS",
    "IGNORED_SUFFIXES",
    "FileOutcome",
    "InboxWatcher",
    "JsonFormatter",
    "LocalRuntime",
    "configure_logging",
]


_log = logging.getLogger(__name__)

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
