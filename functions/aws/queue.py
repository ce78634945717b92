"""Queue scoring: SQS batches with partial failure reporting (``ReportBatchItemFailures``).

A message is an object pointer (``{"kind": "object", "key"}``), inline records
(``{"kind": "records", "model", "instances"}``), a fan-out part (``{"kind": "part", ...}``,
sent by the upload handler) or an S3 notification delivered through SQS. Each is one core call;
a message that fails is reported back alone, retried by SQS, and moved to the dead-letter
queue by the redrive policy after ``maxReceiveCount`` receives.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from functions.aws.common import core, logger, metrics
from functions.aws.events import is_test_event, objects_created
from functions.aws.upload import score_event

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext

# A batch whose every message failed is still answered with the list (not an exception): poison
# messages are the queue's business (redrive to the DLQ), not invocation errors that would feed
# the error-rate alarm and roll a model back.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def record_handler(record: SQSRecord) -> dict[str, Any]:
    """Handle one message; raising marks it failed (and only it)."""
    body = record.body or ""
    with logger.append_context_keys(message_id=record.message_id):
        parsed: Any = None
        if body.lstrip().startswith("{"):
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        if is_test_event(parsed):
            logger.info("ignored s3:TestEvent")
            return {"status": "ignored"}
        if isinstance(parsed, dict) and "kind" not in parsed and any(objects_created(parsed)):
            return {"results": score_event(parsed, owner=record.message_id)}
        result = core().message(body.encode("utf-8"), owner=record.message_id)
        return {"status": result.status, "output": result.output}


@metrics.log_metrics
@logger.inject_lambda_context(correlation_id_path="Records[0].messageId")
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point: ``{"batchItemFailures": [...]}`` names the messages to retry."""
    records = event.get("Records") or []
    metrics.add_metric(name="messages_received", unit=MetricUnit.Count, value=len(records))
    answer = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return dict(answer)
