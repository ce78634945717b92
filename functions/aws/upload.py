"""Upload scoring: an object created under ``incoming/`` is scored into ``predictions/``.

Accepts a direct S3 bucket notification, the same notification inside an SQS message (see
``queue.py``) and S3 → EventBridge "Object Created" events; ``s3:TestEvent`` is ignored. Each
object is one call to :meth:`skyscore.runtime.core.Core.object_created`, which makes duplicate
deliveries harmless and fans large files out through the work queue; traced in X-Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from functions.aws.common import core, logger, metrics
from functions.aws.events import is_test_event, objects_created
from functions.aws.tracing import tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from skyscore.batch.scorer import BatchResult
    from skyscore.runtime.events import ObjectCreated


@tracer.capture_method(capture_response=False)  # a manifest is too large for a trace
def score(item: ObjectCreated, owner: str) -> BatchResult:
    """The core call for one object, traced: its subsegment holds the S3 and SQS calls."""
    result = core().object_created(item, owner=owner)
    tracer.put_annotation("status", result.status)
    return result


def score_event(event: Any, owner: str) -> list[dict[str, Any]]:
    """Score every object an event names (the queue handler reuses this for S3 bodies)."""
    results = []
    for item in objects_created(event):
        result = score(item, owner)
        results.append({"key": result.key, "status": result.status, "output": result.output})
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
        return {"results": [], "ignored": "s3:TestEvent"}
    results = score_event(event, owner=context.aws_request_id)
    metrics.add_metric(name="upload_events", unit=MetricUnit.Count, value=1)
    return {"results": results}
