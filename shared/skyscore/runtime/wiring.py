"""Wiring: a backend's adapters plus the settings make one :class:`Core` per process.

A backend (``skyscore.adapters.aws.AWS``, ``.azure.AZURE``, ``.gcp.GCP``, ``.local.LOCAL``) says
how to build its store, queue, job runner and metrics from :class:`Settings`, and which platform
defaults apply; this module builds the core from them once and caches it.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Protocol

from skyscore.runtime.core import Core
from skyscore.runtime.settings import CloudDefaults, Settings

if TYPE_CHECKING:
    from collections.abc import Mapping

    from skyscore.monitoring.metrics import Metrics
    from skyscore.ports import BlobStore, JobRunner, QueuePort


class Backend(Protocol):
    """How one cloud (or the local runtime) supplies the core's ports."""

    name: str
    defaults: CloudDefaults

    def store(self, settings: Settings) -> BlobStore:
        """The data store (models, inputs, outputs, state)."""
        ...

    def queue(self, settings: Settings) -> QueuePort | None:
        """The work queue for fan-out parts, when configured."""
        ...

    def jobs(self, settings: Settings) -> JobRunner:
        """The managed training job runner (built only when retraining needs it)."""
        ...

    def metrics(self, settings: Settings) -> Metrics:
        """Where the core's metrics go (structured log lines the platform reads)."""
        ...


def build_core(backend: Backend, environ: Mapping[str, str] | None = None) -> Core:
    """A new core for ``backend`` from the environment (tests pass their own mapping)."""
    settings = Settings.from_env(backend.defaults, environ)
    return Core(
        settings,
        backend.store(settings),
        backend.metrics(settings),
        queue=backend.queue(settings),
        jobs=functools.partial(backend.jobs, settings),
    )


_cores: dict[str, Core] = {}
_lock = threading.Lock()


def core_for(backend: Backend) -> Core:
    """The process's core for ``backend``: built on first use, then reused (a warm container)."""
    core = _cores.get(backend.name)
    if core is None:
        with _lock:
            core = _cores.get(backend.name)
            if core is None:
                core = _cores[backend.name] = build_core(backend)
    return core


def reset_cores() -> None:
    """Forget every built core (tests change the environment between cases)."""
    with _lock:
        _cores.clear()
