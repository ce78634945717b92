"""The core each cloud handler calls: one method per kind of trigger, the same on every cloud.

Built once per process by :func:`skyscore.runtime.wiring.core_for` from a backend's adapters and
the settings. A handler converts its trigger (an S3 notification, an Event Grid event, a
CloudEvent, an HTTP request) into a core type and calls exactly one method here.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from skyscore.batch.scorer import BatchResult, BatchScorer
from skyscore.model.registry import ModelRegistry
from skyscore.runtime.events import AlarmSignal, ObjectCreated
from skyscore.serving.dataplane import DataPlane, RegistryModelProvider, Request, Response

if TYPE_CHECKING:
    from skyscore.lifecycle.retrain import Decision, RetrainController
    from skyscore.monitoring.metrics import Metrics
    from skyscore.ports import BlobStore, JobRunner, QueuePort
    from skyscore.runtime.settings import Settings

log = logging.getLogger(__name__)

ONLINE_DRIFT_SECONDS = 60.0  # how often a warm container publishes its HTTP traffic's drift
ONLINE_MIN_ROWS = 100  # a window with fewer rows says nothing yet


class Core:
    """Store, registry, scorer, dataplane, metrics and (lazily) the retraining controller."""

    def __init__(
        self,
        settings: Settings,
        store: BlobStore,
        metrics: Metrics,
        *,
        queue: QueuePort | None = None,
        jobs: Callable[[], JobRunner] | None = None,
    ) -> None:
        from skyscore.batch.scorer import DEFAULT_FANOUT_BYTES, DEFAULT_PART_BYTES

        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.queue = queue
        self._jobs = jobs
        self.registry = ModelRegistry(store)
        self.scorer = BatchScorer(
            store,
            self.registry,
            default_model=settings.model or None,
            metrics=metrics,
            enqueue=None if queue is None else queue.send,
            fanout_bytes=settings.fanout_bytes or DEFAULT_FANOUT_BYTES,
            part_bytes=settings.part_bytes or DEFAULT_PART_BYTES,
            lease_seconds=settings.lease_seconds,
            heartbeat_seconds=settings.heartbeat_seconds,
        )
        self.provider = RegistryModelProvider(self.registry)
        self.dataplane = DataPlane(self.provider, max_body_bytes=settings.max_body_bytes)
        self._online_published = time.monotonic()

    @functools.cached_property
    def controller(self) -> RetrainController:
        """The retraining loop; its job runner is built on first use (HTTP never needs it)."""
        from skyscore.lifecycle.retrain import RetrainController

        if self._jobs is None:
            from skyscore.errors import ConfigError

            raise ConfigError("this deployment has no training job runner")
        return RetrainController(
            self.store,
            self.registry,
            self._jobs(),
            policy=self.settings.retrain,
            metrics=self.metrics,
        )

    # -- online -----------------------------------------------------------------------------

    def http(self, request: Request) -> Response:
        """One HTTP request, answered exactly as the local runtime answers it."""
        response = self.dataplane.handle(request)
        if time.monotonic() - self._online_published >= ONLINE_DRIFT_SECONDS:
            self.publish_online_drift()
        return response

    def publish_online_drift(self) -> None:
        """This container's window of live traffic as drift gauges (the drift alarm's input,
        aggregated across containers by the metrics service)."""
        from skyscore.errors import SkyscoreError

        self._online_published = time.monotonic()
        for name in self.provider.names():
            try:
                predictor = self.provider.get(name)
                drift = self.dataplane.online_drift.result(predictor)
            except SkyscoreError:
                continue
            if drift.get("rows", 0) < ONLINE_MIN_ROWS:
                continue
            dims = {"model": predictor.name, "version": predictor.version, "source": "http"}
            self.metrics.gauge("max_psi", float(drift["max_psi"]), **dims)
            self.metrics.gauge("prediction_psi", float(drift["prediction_psi"]), **dims)
        self.metrics.flush()

    # -- batch ------------------------------------------------------------------------------

    def object_created(self, event: ObjectCreated, *, owner: str) -> BatchResult:
        """An uploaded object: scored once per (object version, model version)."""
        key = self.store.key_for_object(event.container, event.name)
        if key is None:
            log.warning(
                "ignored an object outside the data store: %s/%s", event.container, event.name
            )
            return BatchResult(event.name, "ignored", "outside the data store")
        result = self.scorer.score_upload(key, version=event.version, owner=owner)
        log.info("upload %s: %s (%s)", key, result.status, result.detail)
        self.metrics.count(f"uploads_{result.status}")
        return result

    def message(self, body: bytes, *, owner: str) -> BatchResult:
        """One work-queue message (object pointer, inline records or a fan-out part)."""
        result = self.scorer.handle_message(body, owner=owner)
        log.info("message: %s (%s)", result.status, result.detail)
        self.metrics.count(f"messages_{result.status}")
        return result

    # -- retraining -------------------------------------------------------------------------

    def alarm(self, signal: AlarmSignal, *, owner: str) -> Decision | None:
        """A monitoring alarm: acted on only when firing and configured as a retrain trigger."""
        kind = self.settings.alarms.classify(signal)
        if not signal.firing:
            log.info("alarm %s is not firing: nothing to do", signal.name)
            return None
        if kind == "operational":
            log.info(
                "alarm %s is operational (not a retrain trigger): it pages people", signal.name
            )
            return None
        model = self.settings.alarms.model_of(signal, self.settings.model)
        if model is None:
            log.warning("alarm %s names no model and SKYSCORE_MODEL is unset", signal.name)
            return None
        return self.controller.on_alarm(
            model,
            kind,
            reason=f"alarm {signal.name}",
            event_id=signal.event_id or None,
            owner=owner,
        )

    def schedule(self, *, owner: str) -> list[Decision]:
        """A schedule tick: judge finished jobs, then consider retraining each model."""
        return self.controller.tick(list(self.settings.retrain_models), owner=owner)

    def job_finished(self, job_id: str, *, owner: str) -> Decision:
        """A training job reached a final state: its candidate is judged once."""
        return self.controller.complete(job_id, owner=owner)
