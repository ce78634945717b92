"""Retraining: the schedule, the alarms and the SageMaker job's completion.

* ``scheduled``: EventBridge schedule (rule or Scheduler) → judge missed jobs, consider each model.
* ``alarm``: a CloudWatch alarm in ``ALARM`` state, as an SNS notification (the retrain topic),
  an EventBridge "CloudWatch Alarm State Change" event, or a Lambda alarm action → roll back a
  fresh promotion (error rate, prediction drift) or consider retraining (drift).
* ``job_event``: "SageMaker Training Job State Change" or the job's ``model.tar.gz`` landing
  under ``staging/`` → unpack, register, gate, promote or reject; once, whichever comes first.

Each is one call to the core's :class:`~skyscore.lifecycle.retrain.RetrainController`, which records every
decision with its reason and counts it as a metric; the handlers and that call are traced in
X-Ray (:mod:`functions.aws.tracing`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, S3Event, SNSEvent
from aws_lambda_powertools.utilities.data_classes.cloud_watch_alarm_event import (
    CloudWatchAlarmConfiguration,
    CloudWatchAlarmData,
)
from functions.aws.common import controller, env, logger, retrain_models, store
from functions.aws.tracing import tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from skyscore.lifecycle.retrain import Alarm, Decision

_TOKENS = re.compile(r"\b(model|alarm)=([A-Za-z0-9_.-]+)")
_KINDS = ("drift", "prediction_drift", "error_rate")
_FINAL_JOB_STATES = ("Completed", "Failed", "Stopped")


@dataclass(frozen=True, slots=True)
class AlarmSignal:
    """An alarm that changed state, reduced to what the retraining loop needs."""

    name: str
    state: str
    model: str | None
    kind: str
    reason: str
    changed_at: str = ""

    @property
    def event_id(self) -> str:
        """The state change's identity, the same whichever way it was delivered."""
        return f"{self.name}@{_instant(self.changed_at)}" if self.changed_at else ""


def _instant(stamp: str) -> str:
    """CloudWatch time stamps (``2026-11-24T11:05:00.000+0000``) in one canonical form."""
    from datetime import UTC, datetime

    for pattern in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return datetime.strptime(stamp, pattern).astimezone(UTC).isoformat()
        except ValueError:
            continue
    return stamp


def _kind(description: str, metric_names: list[str], alarm_name: str) -> str:
    tokens: dict[str, str] = dict(_TOKENS.findall(description))
    named = tokens.get("alarm", "")
    if named in _KINDS:
        return named
    words = " ".join([*metric_names, alarm_name]).lower()
    if "prediction_psi" in words or "prediction-drift" in words or "prediction_drift" in words:
        return "prediction_drift"
    if "psi" in words or "drift" in words:
        return "drift"
    if "error" in words:
        return "error_rate"
    return "drift"  # any other alarm on the retrain topic asks for a retraining check


def _signal(
    name: str,
    state: str,
    description: str,
    metrics: list[tuple[str, dict[str, str]]],
    reason: str,
    changed_at: str,
) -> AlarmSignal:
    tokens = dict(_TOKENS.findall(description))
    model = tokens.get("model")
    for _, dimensions in metrics:
        model = model or dimensions.get("model")
    kind = _kind(description, [metric for metric, _ in metrics], name)
    default = env("SKYSCORE_MODEL", "") or None
    return AlarmSignal(name, state, model or default, kind, reason, changed_at)


def _config_metrics(
    configuration: CloudWatchAlarmConfiguration,
) -> list[tuple[str, dict[str, str]]]:
    out = []
    for item in configuration.metrics or ():
        if "metricStat" not in item:  # a metric-math expression
            continue
        metric = item.metric_stat.metric or {}
        if metric.get("name"):
            dims = {str(k): str(v) for k, v in (metric.get("dimensions") or {}).items()}
            out.append((str(metric["name"]), dims))
    return out


def _sns_metrics(trigger: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """Metrics of a classic alarm notification's ``Trigger`` (single metric or metric math)."""
    metrics = []
    if trigger.get("MetricName"):
        dims = {str(d.get("name")): str(d.get("value")) for d in trigger.get("Dimensions") or ()}
        metrics.append((str(trigger["MetricName"]), dims))
    for item in trigger.get("Metrics") or ():
        metric = ((item or {}).get("MetricStat") or {}).get("Metric") or {}
        if metric.get("MetricName"):
            dims = {
                str(d.get("name") or d.get("Name")): str(d.get("value") or d.get("Value"))
                for d in metric.get("Dimensions") or ()
            }
            metrics.append((str(metric["MetricName"]), dims))
    return metrics


def alarm_signals(event: Any) -> Iterator[AlarmSignal]:
    """Alarm state changes in an SNS, EventBridge or Lambda-alarm-action event."""
    if not isinstance(event, dict):
        return
    if event.get("source") == "aws.cloudwatch":
        # a Lambda alarm action carries ``alarmData``, an EventBridge state change ``detail``:
        # the same object either way
        data = CloudWatchAlarmData(event.get("alarmData") or event.get("detail") or {})
        configuration = data.configuration
        yield _signal(
            data.alarm_name,
            data.state.value,
            configuration.description or "",
            _config_metrics(configuration),
            data.state.reason,
            data.state.timestamp,
        )
        return
    if not isinstance(event.get("Records"), list):
        return
    for record in SNSEvent(event).records:
        if "Sns" not in record:
            continue
        try:
            alarm = json.loads(record.sns.message)
        except (TypeError, ValueError):
            continue
        if not isinstance(alarm, dict) or "AlarmName" not in alarm:
            continue  # a plain SNS message, not an alarm notification
        yield _signal(
            str(alarm.get("AlarmName")),
            str(alarm.get("NewStateValue", "")),
            str(alarm.get("AlarmDescription") or ""),
            _sns_metrics(alarm.get("Trigger") or {}),
            str(alarm.get("NewStateReason", "")),
            str(alarm.get("StateChangeTime", "")),
        )


def _traced(decision: Decision) -> Decision:
    """Annotate the current subsegment with the verdict (searchable in X-Ray)."""
    tracer.put_annotation("model", decision.model)
    tracer.put_annotation("action", decision.action)
    return decision


@tracer.capture_method(capture_response=False)  # the handler's response holds the decisions
def tick(owner: str) -> list[Decision]:
    """The core's schedule tick, traced."""
    return controller().tick(retrain_models(), owner=owner)


@tracer.capture_method(capture_response=False)
def act_on_alarm(model: str, signal: AlarmSignal, owner: str) -> Decision:
    """The core's alarm handling, traced."""
    return _traced(
        controller().on_alarm(
            model,
            cast("Alarm", signal.kind),
            reason=f"alarm {signal.name}",
            event_id=signal.event_id or None,
            owner=owner,
        )
    )


@tracer.capture_method(capture_response=False)
def complete(job_id: str, owner: str) -> Decision:
    """The core's judging of a finished job, traced (unpacking, registering, gating)."""
    return _traced(controller().complete(job_id, owner=owner))


@logger.inject_lambda_context(correlation_id_path="id")
@tracer.capture_lambda_handler
def scheduled(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """EventBridge schedule: judge jobs whose events were missed, then consider each model."""
    decisions = tick(context.aws_request_id)
    return {"decisions": [d.to_dict() for d in decisions]}


@logger.inject_lambda_context(
    correlation_id_path="id || Records[0].Sns.MessageId || alarmData.alarmName"
)
@tracer.capture_lambda_handler
def alarm(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """A CloudWatch alarm: act on ``ALARM`` states only (``OK`` and missing data are news, not
    triggers)."""
    decisions = []
    for signal in alarm_signals(event):
        if signal.state != "ALARM":
            logger.info("alarm %s is %s: nothing to do", signal.name, signal.state)
            continue
        if not signal.model:
            logger.warning("alarm %s names no model and SKYSCORE_MODEL is unset", signal.name)
            continue
        decisions.append(act_on_alarm(signal.model, signal, context.aws_request_id).to_dict())
    return {"decisions": decisions}


def finished_jobs(event: Any) -> Iterator[str]:
    """Training job names in a SageMaker state-change event (final states) or in S3
    notifications of a job's ``model.tar.gz``."""
    from skyscore.adapters.aws import SageMakerJobRunner

    if not isinstance(event, dict):
        return
    if event.get("source") == "aws.sagemaker":
        detail = EventBridgeEvent(event).detail
        if detail.get("TrainingJobStatus") in _FINAL_JOB_STATES and detail.get("TrainingJobName"):
            yield str(detail["TrainingJobName"])
        return
    if not isinstance(event.get("Records"), list):
        return
    data = store()
    for record in S3Event(event).records:
        if "s3" not in record or record.s3.bucket.name != data.bucket:
            continue
        key = data.key_for(unquote_plus(record.s3.get_object.key))
        job = None if key is None else SageMakerJobRunner.job_for_artifact(key)
        if job is not None:
            yield job


@logger.inject_lambda_context(
    correlation_id_path='id || Records[0].responseElements."x-amz-request-id"'
)
@tracer.capture_lambda_handler
def job_event(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """A training job finished: its candidate is judged exactly once."""
    decisions = [
        complete(job_id, context.aws_request_id).to_dict() for job_id in finished_jobs(event)
    ]
    return {"decisions": decisions}
