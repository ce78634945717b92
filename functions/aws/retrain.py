"""Retraining: the schedule, the alarms and the SageMaker job's completion.

* ``scheduled``: EventBridge schedule (rule or Scheduler) → :meth:`Core.schedule`.
* ``alarm``: a CloudWatch alarm as an SNS notification, an EventBridge state change or a Lambda
  alarm action → :meth:`Core.alarm`, which acts only on firing alarms configured as retraining
  triggers (``SKYSCORE_RETRAIN_ALARMS``); operational alarms page people instead.
* ``job_event``: "SageMaker Training Job State Change", or the job's ``model.tar.gz`` landing
  under ``staging/`` → :meth:`Core.job_finished`, once, whichever comes first.

Traced in X-Ray (:mod:`functions.aws.tracing`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from functions.aws.common import core, logger
from functions.aws.events import alarm_signals, finished_jobs, objects_created
from functions.aws.tracing import tracer

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


@logger.inject_lambda_context(correlation_id_path="id")
@tracer.capture_lambda_handler
def scheduled(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """EventBridge schedule: judge jobs whose events were missed, then consider each model."""
    decisions = core().schedule(owner=context.aws_request_id)
    return {"decisions": [d.to_dict() for d in decisions]}


@logger.inject_lambda_context(
    correlation_id_path="id || Records[0].Sns.MessageId || alarmData.alarmName"
)
@tracer.capture_lambda_handler
def alarm(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """A CloudWatch alarm state change."""
    decisions = []
    for signal in alarm_signals(event):
        decision = core().alarm(signal, owner=context.aws_request_id)
        if decision is not None:
            decisions.append(decision.to_dict())
    return {"decisions": decisions}


def _jobs(event: Any) -> Iterator[str]:
    """Jobs named by a state-change event or by their artifact's S3 notification."""
    from skyscore.adapters.aws import SageMakerJobRunner

    yield from finished_jobs(event)
    store = core().store
    for item in objects_created(event):
        key = store.key_for_object(item.container, item.name)
        job = None if key is None else SageMakerJobRunner.job_for_artifact(key)
        if job is not None:
            yield job


@logger.inject_lambda_context(
    correlation_id_path='id || Records[0].responseElements."x-amz-request-id"'
)
@tracer.capture_lambda_handler
def job_event(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """A training job finished: its candidate is judged exactly once."""
    the_core = core()
    decisions = [
        the_core.job_finished(job, owner=context.aws_request_id).to_dict() for job in _jobs(event)
    ]
    return {"decisions": decisions}
