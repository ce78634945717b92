"""The retraining loop: one place decides whether a trigger starts a training job, and what
happens to the candidate it produces, on every backend.

Triggers (a schedule, a drift or error-rate alarm, or a person running ``skyscore retrain``) all
go through :meth:`RetrainController.consider`, which allows at most one job in flight per model,
a cool-down between launches, a daily cap, and refuses when there is too little new labelled data.
When a job finishes, :meth:`RetrainController.complete` (a job event) or
:meth:`RetrainController.poll` (the local loop, a schedule tick) has the runner materialize its
output (SageMaker packs it in ``model.tar.gz``), registers the candidate, runs the quality gate
against production on the same held-out rows, and promotes or rejects it: once per job, even when
its completion is announced twice (a state-change event *and* the artifact's storage event, each
delivered at least once), thanks to a claim on the job id. :meth:`RetrainController.on_alarm`
rolls a fresh promotion back when an error-rate or prediction-drift alarm fires within a window
after it, once per alarm state change.

Every decision is recorded with its reason under ``retraining/<model>/decisions/``, logged, and
counted as a metric (``retrain_<action>``). Cloud-agnostic: it talks to a :class:`BlobStore`, a
:class:`JobRunner`, the registry and optionally :class:`~skyscore.monitoring.metrics.Metrics` only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import numpy as np

from skyscore import clock
from skyscore.clock import iso, parse_iso
from skyscore.coordination import claims
from skyscore.errors import (
    Busy,
    ConflictError,
    FormatMismatch,
    ModelNotFound,
    NotFound,
    SkyscoreError,
)
from skyscore.formats import parquet_meta
from skyscore.lifecycle.gate import GateConfig, GateResult, quality_gate
from skyscore.model.card import card_from_json
from skyscore.model.predictor import Predictor
from skyscore.model.registry import AliasConflict, ModelRegistry
from skyscore.ports import BlobStore, JobRunner, JobSpec, JobStatus

if TYPE_CHECKING:
    from skyscore.adapters.local import LocalJobRunner
    from skyscore.local.home import LocalHome
    from skyscore.monitoring.metrics import Metrics

log = logging.getLogger(__name__)

Trigger = Literal["schedule", "drift", "error_rate", "manual"]
Alarm = Literal["drift", "prediction_drift", "error_rate"]
TRAINING_PREFIX = "training/"
STAGING_PREFIX = "staging/"
STATE_PREFIX = "retraining/"
LABELLED_SUFFIXES = (".csv", ".parquet")
DAY_SECONDS = 86_400.0
LAUNCH_LEASE_SECONDS = 600.0  # a launch reserved longer ago than this died before its job started


@dataclass(frozen=True, slots=True)
class RetrainPolicy:
    """Limits on automatic retraining, per model."""

    cooldown_seconds: float = 3600.0
    daily_cap: int = 4
    min_new_rows: int = 100
    rollback_window_seconds: float = 3600.0


@dataclass(slots=True)
class Decision:
    """Why a trigger did or did not start a job (or what happened to a candidate)."""

    model: str
    trigger: str
    action: str  # started | skipped | promoted | rejected | rolled_back | failed
    reason: str
    at: str = ""
    job_id: str | None = None
    version: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """For the decision log."""
        return asdict(self)


class _State(msgspec.Struct, kw_only=True):
    """Per-model bookkeeping: which data the last job consumed, when jobs were launched."""

    consumed: dict[str, str] = {}
    launches: list[float] = []
    jobs: dict[str, dict[str, str]] = {}
    completed: list[str] = []
    launching: float = 0.0  # when a trigger reserved the launch of a job (0: none)


class RetrainController:
    """Policy, job launch, candidate evaluation and automatic rollback for every model."""

    def __init__(
        self,
        store: BlobStore,
        registry: ModelRegistry,
        runner: JobRunner,
        *,
        policy: RetrainPolicy | None = None,
        gate: GateConfig | None = None,
        locate: Callable[[str], str] | None = None,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.runner = runner
        self.policy = policy or RetrainPolicy()
        self.gate = gate or GateConfig()
        self.locate = locate or store.uri_for
        self.clock = clock
        self.metrics = metrics
        # Claims name who is judging a job; callers with a stable delivery id (a Lambda request
        # id survives retries) pass it per call instead.
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    # -- bookkeeping ------------------------------------------------------------------------

    def _state_key(self, name: str) -> str:
        return f"{STATE_PREFIX}{name}/state.json"

    def _state(self, name: str) -> _State:
        return self._state_versioned(name)[0]

    def _state_versioned(self, name: str) -> tuple[_State, str | None]:
        try:
            data, token = self.store.read_versioned(self._state_key(name))
        except NotFound:
            return _State(), None
        return msgspec.json.decode(data, type=_State), token

    def _save(self, name: str, state: _State, token: str | None) -> None:
        """Conditional on the version read (create-only when there was none): a concurrent
        change raises :class:`ConflictError` instead of being overwritten."""
        data = msgspec.json.encode(state)
        if token is None:
            self.store.write_bytes(self._state_key(name), data, if_absent=True)
        else:
            self.store.write_bytes(self._state_key(name), data, if_version=token)

    def _update(self, name: str, change: Callable[[_State], object]) -> None:
        """Read, change and conditionally write the state, again on a lost race."""
        for _ in range(20):
            state, token = self._state_versioned(name)
            change(state)
            try:
                self._save(name, state, token)
                return
            except ConflictError:
                time.sleep(0.01)
        raise ConflictError(f"retraining state of {name!r} kept changing under this update")

    def _log(self, decision: Decision) -> Decision:
        now = self.clock()
        decision.at = iso(now)
        key = (
            f"{STATE_PREFIX}{decision.model}/decisions/"
            f"{clock.stamp(now)}Z-{time.time_ns():020d}-{decision.action}-{decision.trigger}.json"
        )
        self.store.write_bytes(key, msgspec.json.encode(decision.to_dict()))
        if self.metrics is not None:
            self.metrics.count(
                f"retrain_{decision.action}", 1, model=decision.model, trigger=decision.trigger
            )
            self.metrics.flush()
        return _announce(decision)

    def decisions(self, name: str) -> list[dict[str, Any]]:
        """Every recorded decision for a model, oldest first."""
        return [
            msgspec.json.decode(self.store.read_bytes(info.key))
            for info in self.store.list(f"{STATE_PREFIX}{name}/decisions/")
        ]

    def new_data(self, name: str, state: _State | None = None) -> tuple[int, dict[str, str]]:
        """Rows of labelled data not consumed by an earlier job, and the objects holding them."""
        state = state or self._state(name)
        fresh: dict[str, str] = {}
        rows = 0
        for info in self.store.list(f"{TRAINING_PREFIX}{name}/"):
            if not info.key.lower().endswith(LABELLED_SUFFIXES):
                continue
            if state.consumed.get(info.key) == info.version:
                continue
            fresh[info.key] = info.version
            rows += self._count_rows(info.key, info.size)
        return rows, fresh

    def _count_rows(self, key: str, size: int) -> int:
        if key.lower().endswith(".parquet"):  # the footer only: no pyarrow in function packages
            return parquet_meta.count_rows(self.store, key, size)
        lines = 0
        with self.store.open_read(key) as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                lines += block.count(b"\n")
        return max(lines - 1, 0)  # minus the header

    # -- deciding ---------------------------------------------------------------------------

    def consider(self, name: str, trigger: Trigger, *, reason: str = "") -> Decision:
        """Start a training job for ``name`` if the policy allows; always record why."""
        now = self.clock()
        state, token = self._state_versioned(name)
        active = self._active_jobs(name, state)
        why = f"{trigger}" + (f" ({reason})" if reason else "")
        if active:
            return self._log(
                Decision(
                    name,
                    trigger,
                    "skipped",
                    f"{why}: job {active[0]} is still running",
                    job_id=active[0],
                )
            )
        recent = [t for t in state.launches if now - t < DAY_SECONDS]
        if state.launches and now - state.launches[-1] < self.policy.cooldown_seconds:
            wait = self.policy.cooldown_seconds - (now - state.launches[-1])
            return self._log(
                Decision(name, trigger, "skipped", f"{why}: cooling down for another {wait:.0f}s")
            )
        if len(recent) >= self.policy.daily_cap:
            return self._log(
                Decision(
                    name,
                    trigger,
                    "skipped",
                    f"{why}: daily cap of {self.policy.daily_cap} jobs reached",
                )
            )
        try:
            rows, fresh = self.new_data(name, state)
        except FormatMismatch as error:  # training on it would fail too: say which file
            return self._log(Decision(name, trigger, "skipped", f"{why}: {error.detail}"))
        if rows < self.policy.min_new_rows:
            return self._log(
                Decision(
                    name,
                    trigger,
                    "skipped",
                    f"{why}: only {rows} new labelled rows under {TRAINING_PREFIX}{name}/ "
                    f"(at least {self.policy.min_new_rows} needed)",
                    details={"new_rows": rows},
                )
            )
        try:
            card = self.registry.card(name)
        except ModelNotFound:
            return self._log(
                Decision(
                    name, trigger, "skipped", f"{why}: {name!r} has no production model to retrain"
                )
            )
        stamp = clock.stamp(now) + "Z"
        job_key = f"{STAGING_PREFIX}{name}/{stamp}/"
        spec = JobSpec(
            model_name=name,
            data_uri=self.locate(f"{TRAINING_PREFIX}{name}/"),
            output_uri=self.locate(job_key),
            target=card.target,
            estimator=card.training.estimator,
            id_column=card.id_column,
        )
        if state.launching and now - state.launching < LAUNCH_LEASE_SECONDS:
            return self._log(
                Decision(name, trigger, "skipped", f"{why}: another trigger is starting a job")
            )
        # Reserve the launch with a conditional write on the state as read: of two triggers
        # racing here (two alarms, an alarm and the schedule) exactly one starts a job.
        state.launching = now
        try:
            self._save(name, state, token)
        except ConflictError:
            return self._log(
                Decision(name, trigger, "skipped", f"{why}: a concurrent trigger got there first")
            )
        try:
            status = self.runner.start(spec)
        except BaseException:
            self._update(name, lambda s: setattr(s, "launching", 0.0))
            raise

        def started(s: _State) -> None:
            s.launches = [*(t for t in s.launches if now - t < DAY_SECONDS), now]
            s.consumed.update(fresh)
            s.jobs[status.job_id] = {"output_uri": status.output_uri, "trigger": trigger}
            s.launching = 0.0

        self._update(name, started)
        return self._log(
            Decision(
                name,
                trigger,
                "started",
                f"{why}: {rows} new labelled rows",
                job_id=status.job_id,
                details={"new_rows": rows, "output_uri": status.output_uri},
            )
        )

    def _active_jobs(self, name: str, state: _State) -> list[str]:
        return [job.job_id for job in self.runner.active_jobs(name)]

    # -- completing -------------------------------------------------------------------------

    def pending(self, name: str) -> list[str]:
        """Jobs launched for ``name`` whose candidate has not been judged yet."""
        state = self._state(name)
        return [job for job in state.jobs if job not in state.completed]

    def poll(self, name: str, *, owner: str | None = None) -> list[Decision]:
        """Judge every finished job of ``name`` (the local loop calls it periodically; a
        schedule tick catches jobs whose completion events were lost)."""
        out = []
        for job_id in self.pending(name):
            try:
                status = self.runner.describe(job_id)
            except NotFound as error:  # never to be seen again: judge it failed, not pending
                status = JobStatus(job_id, name, "failed", "", error.detail)
            if status.done:
                out.append(self._finish(status, owner or self.owner))
        return out

    def complete(self, job_id: str, *, owner: str | None = None) -> Decision:
        """A job's completion (its event, or a wait that ended): judge its candidate once.

        A job still running is skipped; its completion comes later. ``owner`` names this
        delivery (see :mod:`skyscore.coordination.claims`): its own retry takes the claim back.
        """
        status = self.runner.describe(job_id)
        if not status.done:
            name = status.model_name or "unknown"
            why = f"job {job_id} is {status.state}"
            return _announce(Decision(name, "job", "skipped", why, job_id=job_id))
        return self._finish(status, owner or self.owner)

    def tick(
        self, models: Iterable[str] | None = None, *, owner: str | None = None
    ) -> list[Decision]:
        """A schedule tick: judge finished jobs, then consider retraining each model (every
        registered model unless ``models`` names them)."""
        names = list(models) if models else self.registry.list_models()
        decisions: list[Decision] = []
        for name in names:
            try:
                decisions.extend(self.poll(name, owner=owner))
                decisions.append(self.consider(name, "schedule", reason="scheduled check"))
            except ModelNotFound as error:
                decisions.append(_announce(Decision(name, "schedule", "skipped", error.detail)))
        return decisions

    def _finish(self, status: JobStatus, owner: str) -> Decision:
        """Judge a finished job exactly once: a claim on its id keeps concurrent duplicates
        apart; a crash before the verdict releases it for a retry."""
        name = status.model_name or "unknown"
        if status.job_id in self._state(name).completed:
            why = f"job {status.job_id} was already judged"
            return _announce(Decision(name, "job", "skipped", why, job_id=status.job_id))
        claim_key = f"{STATE_PREFIX}{name}/claims/{status.job_id}.json"
        claim = claims.acquire(self.store, claim_key, owner)
        if claim.outcome == "busy":  # a copy of this delivery judges it: retry, do not ack
            raise Busy(f"job {status.job_id} is being judged by a copy of delivery {owner}")
        if not claim.acquired:
            if claim.outcome == "finished":  # judged, but the bookkeeping was lost
                self._mark_judged(name, status.job_id)
            why = f"job {status.job_id} is {claim.outcome} by another delivery"
            return _announce(Decision(name, "job", "skipped", why, job_id=status.job_id))
        try:
            decision = self._judge_job(status)
            self._mark_judged(name, status.job_id)
        except BaseException:
            claims.release(self.store, claim_key)
            raise
        claims.settle(self.store, claim_key, owner, decision.action)
        return decision

    def _mark_judged(self, name: str, job_id: str) -> None:
        def judged(state: _State) -> None:
            if job_id not in state.completed:
                state.completed.append(job_id)

        self._update(name, judged)

    def _judge_job(self, status: JobStatus) -> Decision:
        """Materialize, register, gate, and promote or reject a finished job's candidate."""
        name = status.model_name
        if status.state != "completed":
            return self._log(
                Decision(
                    name,
                    "job",
                    "failed",
                    f"job {status.job_id} ended {status.state}: {status.message}",
                    job_id=status.job_id,
                )
            )
        try:
            self.runner.materialize(status, self.store)
            prefix = self._staging_key(status)
            card = card_from_json(self.store.read_bytes(prefix + "card.json"))
            onnx_bytes = self.store.read_bytes(prefix + "model.onnx")
            candidate_card = self.registry.register(
                card, onnx_bytes, name=name, reason=f"retraining job {status.job_id}"
            )
        except (SkyscoreError, msgspec.ValidationError) as error:
            return self._log(
                Decision(
                    name,
                    "job",
                    "failed",
                    f"candidate of job {status.job_id} is unusable: {error}",
                    job_id=status.job_id,
                )
            )
        try:
            return self.judge(name, candidate_card.version, job_id=status.job_id)
        except SkyscoreError as error:  # e.g. unreadable held-out data: never leave it unjudged
            self.registry.record(
                name,
                "rejected",
                candidate_card.version,
                reason=f"could not be judged: {error.detail}",
            )
            return self._log(
                Decision(
                    name,
                    "job",
                    "rejected",
                    f"candidate could not be judged: {error.detail}",
                    job_id=status.job_id,
                    version=candidate_card.version,
                )
            )

    def _staging_key(self, status: JobStatus) -> str:
        """The store key prefix under which a job's artifacts landed."""
        uri = status.output_uri.rstrip("/") + "/"
        key = self.store.key_for_uri(uri)
        if key is None:
            raise SkyscoreError(
                f"job output {status.output_uri} is outside the store {self.store.uri}"
            )
        return key

    def judge(self, name: str, version: str, *, job_id: str | None = None) -> Decision:
        """Run the quality gate on a registered version; promote it or record its rejection."""
        candidate = self.registry.get_predictor(name, version)
        try:
            current: Predictor | None = self.registry.get_predictor(name)
        except ModelNotFound:
            current = None
        numeric, categorical, labels = self.holdout(name, candidate)
        result = quality_gate(candidate, current, numeric, categorical, labels, self.gate)
        details = self._gate_details(result, candidate, current)
        if result.passed:
            try:
                self.registry.promote(
                    name,
                    version,
                    reason=f"quality gate passed: {result.reason}",
                    details=details,
                    expect=None if current is None else current.version,
                )
                action = "promoted"
            except AliasConflict as error:  # production moved while it was being judged
                self.registry.record(
                    name, "rejected", version, reason=error.detail, details=details
                )
                action = "rejected"
        else:
            self.registry.record(
                name,
                "rejected",
                version,
                reason=f"quality gate failed: {result.reason}",
                details=details,
            )
            action = "rejected"
        return self._log(
            Decision(
                name,
                "job" if job_id else "manual",
                action,
                result.reason,
                job_id=job_id,
                version=version,
                details=details,
            )
        )

    def _gate_details(
        self, result: GateResult, candidate: Predictor, current: Predictor | None
    ) -> dict[str, Any]:
        return {
            "candidate_version": candidate.version,
            "current_version": current.version if current else None,
            "gate": result.to_dict(),
            "metric": self.gate.metric,
            "margin": self.gate.margin,
        }

    def holdout(self, name: str, predictor: Predictor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The held-out rows of all labelled data for ``name`` (same rule as training)."""
        from skyscore.lifecycle.evaluation import read_labelled
        from skyscore.training.holdout import holdout_mask

        keys = [
            info.key
            for info in self.store.list(f"{TRAINING_PREFIX}{name}/")
            if info.key.lower().endswith(LABELLED_SUFFIXES)
        ]
        numeric, categorical, labels = read_labelled(self.store, keys, predictor)
        mask = holdout_mask(numeric, categorical)
        return numeric[mask], categorical[mask], labels[mask]

    # -- alarms -----------------------------------------------------------------------------

    def on_alarm(
        self,
        name: str,
        alarm: Alarm,
        *,
        reason: str = "",
        event_id: str | None = None,
        owner: str | None = None,
    ) -> Decision:
        """Roll back a fresh promotion on an error-rate or prediction-drift alarm; otherwise
        (or for input drift) consider retraining.

        ``event_id`` names the alarm's state change (alarm name and change time): one change
        can arrive several times (an SNS topic *and* an EventBridge rule, each at least once),
        and acting twice would roll back two versions. Given an id, it is acted on once.
        """
        if not event_id:
            return self._on_alarm(name, alarm, reason)
        owner = owner or self.owner
        digest = hashlib.sha256(event_id.encode()).hexdigest()[:32]
        claim_key = f"{STATE_PREFIX}{name}/alarms/{digest}.json"
        claim = claims.acquire(self.store, claim_key, owner)
        if claim.outcome == "busy":  # a copy of this delivery handles it: retry, do not ack
            raise Busy(f"alarm {event_id} is being handled by a copy of delivery {owner}")
        if not claim.acquired:
            return _announce(Decision(name, alarm, "skipped", f"alarm {event_id} already handled"))
        try:
            decision = self._on_alarm(name, alarm, reason)
        except BaseException:
            claims.release(self.store, claim_key)
            raise
        claims.settle(self.store, claim_key, owner, decision.action)
        return decision

    def _on_alarm(self, name: str, alarm: Alarm, reason: str) -> Decision:
        if alarm in ("error_rate", "prediction_drift"):
            promoted = self._last_promotion_age(name)
            has_previous = bool(self.registry.alias_history(name))
            if (
                promoted is not None
                and promoted <= self.policy.rollback_window_seconds
                and has_previous
            ):
                version = self.registry.rollback(
                    name,
                    reason=f"automatic rollback: {alarm} alarm {promoted:.0f}s after promotion"
                    + (f" ({reason})" if reason else ""),
                )
                return self._log(
                    Decision(
                        name,
                        alarm,
                        "rolled_back",
                        f"{alarm} alarm within {promoted:.0f}s of a promotion",
                        version=version,
                    )
                )
        trigger: Trigger = "error_rate" if alarm == "error_rate" else "drift"
        return self.consider(name, trigger, reason=reason or f"{alarm} alarm")

    def _last_promotion_age(self, name: str) -> float | None:
        for event in reversed(self.registry.history(name)):
            if event.get("action") == "promoted":
                at = parse_iso(str(event["at"]))
                return self.clock() - at.timestamp()
        return None


def _announce(decision: Decision) -> Decision:
    """Log a decision (recorded ones and duplicates alike) for the platform's log search."""
    log.info(
        "retraining %s: %s (%s) %s",
        decision.model,
        decision.action,
        decision.trigger,
        decision.reason,
    )
    return decision


def local_controller(home: LocalHome) -> tuple[RetrainController, LocalJobRunner]:
    """The controller over a local home: its blob store, registry and subprocess job runner."""
    from skyscore.adapters.local import LocalBlobStore, LocalJobRunner

    store = LocalBlobStore(home.root)
    runner = LocalJobRunner(home.root)
    return RetrainController(store, home.registry(), runner), runner
