"""AWS event shapes → the core's types, in one module (Powertools' data classes parse them).

* S3 notifications (``Records[].s3``: keys URL-encoded) and S3 → EventBridge "Object Created"
  (Powertools decodes its key the same way) → :class:`ObjectCreated`; ``s3:TestEvent`` → none.
* CloudWatch alarms as an SNS notification, an EventBridge state change or a Lambda alarm
  action → :class:`AlarmSignal`.
* SageMaker "Training Job State Change" events, or the job's ``model.tar.gz`` landing in the
  bucket → training job names.
* API Gateway HTTP API (payload 2.0), function URLs and REST API (payload 1.0) →
  :class:`~skyscore.serving.dataplane.Request`.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import (
    EventBridgeEvent,
    S3Event,
    S3EventBridgeNotificationEvent,
    SNSEvent,
)
from aws_lambda_powertools.utilities.data_classes.cloud_watch_alarm_event import (
    CloudWatchAlarmData,
)

from skyscore.errors import BadRequest
from skyscore.runtime.events import AlarmSignal, ObjectCreated

if TYPE_CHECKING:
    from skyscore.serving.dataplane import Request

FINAL_JOB_STATES = ("Completed", "Failed", "Stopped")


def is_test_event(event: Any) -> bool:
    """S3's ``s3:TestEvent``, sent when a bucket notification is created."""
    return isinstance(event, dict) and event.get("Event") == "s3:TestEvent"


def objects_created(event: Any) -> Iterator[ObjectCreated]:
    """Created objects in an S3 notification or an S3 EventBridge event (others: none)."""
    if not isinstance(event, dict) or is_test_event(event):
        return
    if event.get("source") == "aws.s3" and event.get("detail-type") == "Object Created":
        detail = S3EventBridgeNotificationEvent(event).detail
        item = detail.object
        yield ObjectCreated(detail.bucket.name, item.key, item.etag or None, item.size)
        return
    if not isinstance(event.get("Records"), list):
        return
    for record in S3Event(event).records:
        if record.get("eventSource") != "aws:s3" and "s3" not in record:
            continue
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        obj = record.s3.get_object
        yield ObjectCreated(
            record.s3.bucket.name, unquote_plus(obj.key), obj.etag or None, obj.get("size")
        )


def _stamp(text: str) -> str:
    """CloudWatch time stamps (``2026-11-24T11:05:00.000+0000``) in one canonical form, so the
    same state change has one id whichever way it was delivered."""
    from datetime import UTC, datetime

    for pattern in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return datetime.strptime(text, pattern).astimezone(UTC).isoformat()
        except ValueError:
            continue
    return text


def _signal(
    name: str, state: str, description: str, model: str | None, reason: str, at: str
) -> AlarmSignal:
    return AlarmSignal(
        name=name,
        firing=state == "ALARM",
        model=model,
        changed_at=at,
        reason=reason,
        description=description,
        event_id=f"{name}@{_stamp(at)}" if at else "",
    )


def _dimension_model(dimensions: Any) -> str | None:
    if isinstance(dimensions, dict):
        value = dimensions.get("model")
        return str(value) if value else None
    for item in dimensions or ():
        if isinstance(item, dict) and (item.get("name") or item.get("Name")) == "model":
            return str(item.get("value") or item.get("Value"))
    return None


def alarm_signals(event: Any) -> Iterator[AlarmSignal]:
    """Alarm state changes in an SNS, EventBridge or Lambda-alarm-action event."""
    if not isinstance(event, dict):
        return
    if event.get("source") == "aws.cloudwatch":
        # a Lambda alarm action carries ``alarmData``, an EventBridge state change ``detail``
        data = CloudWatchAlarmData(event.get("alarmData") or event.get("detail") or {})
        configuration = data.configuration
        model = None
        for item in configuration.metrics or ():
            if "metricStat" in item:
                model = model or _dimension_model((item.metric_stat.metric or {}).get("dimensions"))
        yield _signal(
            data.alarm_name,
            data.state.value,
            configuration.description or "",
            model,
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
        trigger = alarm.get("Trigger") or {}
        model = _dimension_model(trigger.get("Dimensions"))
        for item in trigger.get("Metrics") or ():
            metric = ((item or {}).get("MetricStat") or {}).get("Metric") or {}
            model = model or _dimension_model(metric.get("Dimensions"))
        yield _signal(
            str(alarm.get("AlarmName")),
            str(alarm.get("NewStateValue", "")),
            str(alarm.get("AlarmDescription") or ""),
            model,
            str(alarm.get("NewStateReason", "")),
            str(alarm.get("StateChangeTime", "")),
        )


def finished_jobs(event: Any) -> Iterator[str]:
    """Training job names in a SageMaker state-change event (final states only)."""
    if isinstance(event, dict) and event.get("source") == "aws.sagemaker":
        detail = EventBridgeEvent(event).detail
        if detail.get("TrainingJobStatus") in FINAL_JOB_STATES and detail.get("TrainingJobName"):
            yield str(detail["TrainingJobName"])


def decode_body(body: str | None, base64_encoded: bool) -> bytes:
    """The request body's bytes; invalid base64 is the client's error, not a crash."""
    text = body or ""
    if not base64_encoded:
        return text.encode("utf-8")
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise BadRequest("the request body is not valid base64") from None


def http_request(event: dict[str, Any]) -> Request:
    """An API Gateway / function URL event as the dataplane's request (400 when malformed)."""
    from skyscore.serving.dataplane import Request

    try:
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        query = {str(k): str(v) for k, v in (event.get("queryStringParameters") or {}).items()}
        if event.get("version") == "2.0" or "rawPath" in event:
            method = str(event["requestContext"]["http"]["method"])
            path = str(event.get("rawPath") or "/")
        else:
            method = str(event["httpMethod"])
            path = str(event.get("path") or "/")
    except (KeyError, TypeError, AttributeError):
        raise BadRequest("not an API Gateway or function URL request event") from None
    body = decode_body(event.get("body"), bool(event.get("isBase64Encoded")))
    return Request(method, path, headers, body, query=query)
