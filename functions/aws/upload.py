"""Upload scoring: an object created under ``incoming/`` is scored into ``predictions/``.

Accepts the three shapes S3 delivers: a direct bucket notification (``Records[].s3``, keys
URL-encoded), the same notification as the body of an SQS message, and S3 → EventBridge
"Object Created" events. ``s3:TestEvent`` (sent when a notification is configured) is ignored.
Each object is one call to the core's :meth:`~skyscore.batch.scorer.BatchScorer.score_upload`, which
makes duplicate deliveries harmless and fans large files out through the work queue; the handler
and that call are traced in X-Ray (:mod:`functions.aws.tracing`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import S3Event, S3EventBridgeNotificationEvent
from functions.aws.common import logger, metrics, scorer, store
from functions.aws.tracing import tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from skyscore.batch.scorer import BatchResult


@dataclass(frozen=True, slots=True)
class ObjectEvent:
    """One "object created" notification, whatever envelope it came in."""

    bucket: str
    key: str
    etag: str | None
    encoded: bool  # S3 notifications URL-encode keys; EventBridge is not documented to


def is_test_event(event: Any) -> bool:
    """S3's ``s3:TestEvent``, sent when a bucket notification is created."""
    return isinstance(event, dict) and event.get("Event") == "s3:TestEvent"


def object_events(event: Any) -> Iterator[ObjectEvent]:
    """Created objects in an S3 notification or an S3 EventBridge event (others: none)."""
    if not isinstance(event, dict) or is_test_event(event):
        return
    if event.get("source") == "aws.s3" and event.get("detail-type") == "Object Created":
        detail = S3EventBridgeNotificationEvent(event).detail
        yield ObjectEvent(detail.bucket.name, detail.object.key, detail.object.etag or None, False)
        return
    if not isinstance(event.get("Records"), list):
        return
    for record in S3Event(event).records:
        if record.get("eventSource") != "aws:s3" and "s3" not in record:
            continue
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        item = record.s3.get_object
        yield ObjectEvent(record.s3.bucket.name, item.key, item.etag or None, True)


def store_key(item: ObjectEvent) -> str | None:
    """The store key an event names (decoded), or ``None`` for another bucket or prefix."""
    data = store()
    if item.bucket != data.bucket:
        return None
    decoded = unquote_plus(item.key)
    key = data.key_for(decoded)
    if not item.encoded and decoded != item.key and (key is None or not data.exists(key)):
        key = data.key_for(item.key)  # an EventBridge key that was not encoded after all
    return key


@tracer.capture_method(capture_response=False)  # a manifest is too large for a trace
def score_upload(key: str, etag: str | None, owner: str) -> BatchResult:
    """The core call for one object, traced: its subsegment holds the S3 and SQS calls."""
    result = scorer().score_upload(key, etag=etag, owner=owner)
    tracer.put_annotation("status", result.status)
    return result


def score_event(event: Any, owner: str) -> list[dict[str, Any]]:
    """Score every object an event names (the queue handler reuses this for S3 bodies)."""
    results = []
    for item in object_events(event):
        key = store_key(item)
        if key is None:
            logger.warning("ignored an object outside the data store", extra={"key": item.key})
            continue
        result = score_upload(key, item.etag, owner)
        logger.info(
            "upload %s: %s",
            key,
            result.status,
            extra={"detail": result.detail, "output": result.output, "job": result.job},
        )
        metrics.add_metric(name=f"uploads_{result.status}", unit=MetricUnit.Count, value=1)
        results.append({"key": key, "status": result.status, "output": result.output})
    return results


@metrics.log_metrics
@logger.inject_lambda_context(
    correlation_id_path='id || Records[0].responseElements."x-amz-request-id"'
)
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point for S3 notifications and S3 EventBridge events."""
    if is_test_event(event):
        logger.info("ignored s3:TestEvent")
        metrics.add_metric(name="s3_test_events", unit=MetricUnit.Count, value=1)
        return {"results": [], "ignored": "s3:TestEvent"}
    results = score_event(event, owner=context.aws_request_id)
    metrics.add_metric(name="upload_events", unit=MetricUnit.Count, value=1)
    return {"results": results}
