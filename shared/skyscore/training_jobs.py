"""Cloud events of the retraining loop, handled once: a schedule tick, an alarm, a finished job.

:class:`~skyscore.retrain.RetrainController` holds the policy; this module adds what every
cloud's event handlers need around it: judging each finished job exactly once even when its
completion is announced twice (a job-state event *and* the artifact's storage event, each
delivered at least once), unpacking artifacts where a managed service packs them (SageMaker's
``model.tar.gz``), and publishing every decision as a metric.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from skyscore import claims
from skyscore.errors import ModelNotFound, NotFound, SkyscoreError
from skyscore.retrain import Alarm, Decision, RetrainController

if TYPE_CHECKING:
    from skyscore.metrics import Metrics
    from skyscore.ports import BlobStore, JobStatus

_log = logging.getLogger(__name__)
ALARMS: tuple[Alarm, ...] = ("drift", "prediction_drift", "error_rate")


@runtime_checkable
class ArtifactCollector(Protocol):
    """A job runner whose jobs leave their artifacts packed (e.g. SageMaker's tarball)."""

    def materialize(self, status: JobStatus, store: BlobStore) -> None:
        """Put ``model.onnx`` and ``card.json`` directly under ``status.output_uri``."""
        ...


def publish_decision(metrics: Metrics | None, decision: Decision) -> None:
    """One count per decision, named by its action (``retrain_started``, ``retrain_promoted``,
    ``retrain_rejected``, ...), with the model and trigger as dimensions."""
    _log.info(
        "retraining %s: %s (%s) %s",
        decision.model,
        decision.action,
        decision.trigger,
        decision.reason,
    )
    if metrics is None:
        return
    metrics.count(f"retrain_{decision.action}", 1, model=decision.model, trigger=decision.trigger)
    metrics.flush()


def complete_job(
    controller: RetrainController,
    job_id: str,
    *,
    owner: str,
    metrics: Metrics | None = None,
) -> Decision:
    """Judge a finished job's candidate exactly once: register, gate, promote or reject.

    A job still running is skipped (its completion event comes later). Concurrent duplicates
    are kept apart by a claim on the job id; a crash before the verdict leaves the claim to
    the same delivery's retry (or to anyone after the lease).
    """
    status = controller.runner.describe(job_id)
    name = status.model_name or "unknown"
    if not status.done:
        decision = Decision(
            name, "job", "skipped", f"job {job_id} is {status.state}", job_id=job_id
        )
        publish_decision(None, decision)
        return decision
    claim_key = f"retraining/{name}/claims/{job_id}.json"
    claim = claims.acquire(controller.store, claim_key, owner)
    if not claim.acquired:
        decision = Decision(
            name,
            "job",
            "skipped",
            f"job {job_id} is {claim.outcome} by another delivery",
            job_id=job_id,
        )
        publish_decision(None, decision)
        return decision
    try:
        if status.state == "completed" and isinstance(controller.runner, ArtifactCollector):
            try:
                controller.runner.materialize(status, controller.store)
            except (NotFound, SkyscoreError) as error:
                _log.warning("job %s: artifacts not usable: %s", job_id, error)
        decision = controller.complete(status)
    except BaseException:
        claims.release(controller.store, claim_key)
        raise
    claims.settle(controller.store, claim_key, owner, decision.action)
    publish_decision(metrics, decision)
    return decision


def run_schedule(
    controller: RetrainController,
    models: Iterable[str] | None = None,
    *,
    metrics: Metrics | None = None,
) -> list[Decision]:
    """A schedule tick: judge finished jobs whose completion events were missed (through
    :func:`complete_job`, so never twice), then consider retraining each model (every
    registered model unless ``models`` names them)."""
    names = list(models) if models else controller.registry.list_models()
    decisions: list[Decision] = []
    for name in names:
        try:
            for job_id in controller.pending(name):
                if controller.runner.describe(job_id).done:
                    # the job's own events may have been lost: judge it here, still once
                    decisions.append(
                        complete_job(
                            controller, job_id, owner=f"schedule:{job_id}", metrics=metrics
                        )
                    )
            decision = controller.consider(name, "schedule", reason="scheduled check")
        except ModelNotFound as error:
            decision = Decision(name, "schedule", "skipped", error.detail)
        publish_decision(metrics, decision)
        decisions.append(decision)
    return decisions


def on_alarm(
    controller: RetrainController,
    model: str,
    alarm: Alarm,
    *,
    reason: str = "",
    metrics: Metrics | None = None,
    event_id: str | None = None,
    owner: str = "",
) -> Decision:
    """An alarm fired for ``model``: roll back a fresh promotion or consider retraining.

    ``event_id`` names the state change (alarm name and change time): one state change can
    arrive several times (an SNS topic *and* an EventBridge rule, each at least once), and
    acting twice would roll back two versions. Given an id, it is acted on once.
    """
    claim_key = None
    if event_id:
        digest = hashlib.sha256(event_id.encode()).hexdigest()[:32]
        claim_key = f"retraining/{model}/alarms/{digest}.json"
        claim = claims.acquire(controller.store, claim_key, owner or event_id)
        if not claim.acquired:
            decision = Decision(model, alarm, "skipped", f"alarm {event_id} already handled")
            publish_decision(None, decision)
            return decision
    try:
        decision = controller.on_alarm(model, alarm, reason=reason)
    except BaseException:
        if claim_key is not None:
            claims.release(controller.store, claim_key)
        raise
    if claim_key is not None:
        claims.settle(controller.store, claim_key, owner or event_id or "", decision.action)
    publish_decision(metrics, decision)
    return decision
