"""The retraining loop on moto: schedule and alarms start SageMaker jobs; the job's artifact or
state-change event registers, gates and promotes or rejects the candidate, once.

moto's limits are worked around here, not in the product: schedules never fire (the handler is
called with the schedule's event), alarm actions do not publish (the test publishes the alarm
message to the SNS topic itself and reads the envelope moto delivers), and training jobs report
``Completed`` at once without an artifact (the test writes ``model.tar.gz`` where SageMaker would).
"""

from __future__ import annotations

import copy
import io
import json
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest

from aws_moto import (
    ACCOUNT,
    REGION,
    Aws,
    LambdaContext,
    drain,
    reference_event,
    sample_event,
    sns_event,
)
from skyscore.adapters.aws import parse_s3_uri
from skyscore.model.card import card_to_json
from skyscore.model.registry import ModelRegistry
from skyscore.training.train import TrainResult

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/skyscore-train:1"


def handler(name: str, event: dict[str, Any], request_id: str | None = None) -> dict[str, Any]:
    from functions.aws import retrain

    context = LambdaContext() if request_id is None else LambdaContext(aws_request_id=request_id)
    result: dict[str, Any] = getattr(retrain, name)(event, context)
    return result


@pytest.fixture
def labelled(aws: Aws, data_dir: Path) -> None:
    """New labelled rows for the cancer model under training/cancer/."""
    aws.s3.put_object(
        Bucket=aws.bucket,
        Key="training/cancer/2026-11.csv",
        Body=(data_dir / "breast_cancer.csv").read_bytes(),
    )


def sagemaker(aws: Aws) -> Any:
    import boto3

    return boto3.client("sagemaker")


def play_sagemaker(aws: Aws, job: str, result: TrainResult) -> str:
    """Write what a finished training job leaves behind: ``<output>/<job>/output/model.tar.gz``
    holding the entrypoint's ``model.onnx`` and ``card.json``. Returns the artifact key."""
    described = sagemaker(aws).describe_training_job(TrainingJobName=job)
    bucket, key = parse_s3_uri(described["ModelArtifacts"]["S3ModelArtifacts"])
    assert bucket == aws.bucket
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (
            ("model.onnx", result.onnx_bytes),
            ("card.json", card_to_json(result.card)),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=buffer.getvalue())
    return key


def artifact_notifications(aws: Aws) -> str:
    """The bucket notifies a queue of model.tar.gz under staging/ (as it notifies the function)."""
    url = aws.sqs.create_queue(QueueName="artifacts")["QueueUrl"]
    arn = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    rules = [{"Name": "prefix", "Value": "staging/"}, {"Name": "suffix", "Value": "model.tar.gz"}]
    aws.s3.put_bucket_notification_configuration(
        Bucket=aws.bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": rules}},
                }
            ]
        },
    )
    for message in drain(aws.sqs, url):  # the s3:TestEvent
        aws.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return str(url)


def metric_lines(output: str, name: str) -> list[dict[str, Any]]:
    out = []
    for line in output.splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            record = json.loads(line)
            if "_aws" in record:
                out.append(record)
    return out


def test_schedule_starts_a_job_whose_artifact_is_promoted_once(
    aws: Aws,
    cancer: ModelRegistry,
    labelled: None,
    demo_model: TrainResult,
    capsys: pytest.CaptureFixture[str],
) -> None:
    queue = artifact_notifications(aws)
    started = handler("scheduled", reference_event("eventbridge-scheduled-rule-event.json"))
    [decision] = started["decisions"]
    assert decision["action"] == "started", decision
    job = decision["job_id"]
    described = sagemaker(aws).describe_training_job(TrainingJobName=job)
    assert described["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert described["RoleArn"].endswith(":role/skyscore-training")
    # logistic regression cannot use a GPU: a CPU instance (xgboost would get ml.g5.xlarge)
    assert described["ResourceConfig"]["InstanceType"] == "ml.m5.large"
    [channel] = described["InputDataConfig"]
    assert channel["ChannelName"] == "train"
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{aws.bucket}/training/cancer/"
    assert described["OutputDataConfig"]["S3OutputPath"].startswith(
        f"s3://{aws.bucket}/staging/cancer/"
    )
    assert described["HyperParameters"] == {
        "target": "diagnosis",
        "name": "cancer",
        "estimator": "logreg",
        "id-column": "patient_id",
    }

    artifact = play_sagemaker(aws, job, demo_model)
    [message] = drain(aws.sqs, queue)
    s3_event = json.loads(message["Body"])
    assert unquote_plus(s3_event["Records"][0]["s3"]["object"]["key"]) == artifact
    assert artifact.startswith("staging/cancer/")
    judged = handler("job_event", s3_event)
    [verdict] = judged["decisions"]
    assert verdict["action"] == "promoted", verdict
    assert cancer.alias_target("cancer") == "2"
    assert metric_lines(capsys.readouterr().out, "retrain_promoted")

    # The job-state-change event for the same job arrives too: nothing happens twice.
    state_change = sample_event("sagemaker-training-job-state-change.json")
    state_change["detail"]["TrainingJobName"] = job
    again = handler("job_event", state_change)
    assert [d["action"] for d in again["decisions"]] == ["skipped"]
    assert cancer.list_versions("cancer") == ["1", "2"]

    # The next tick is inside the cool-down: no second job.
    aws.s3.put_object(
        Bucket=aws.bucket,
        Key="training/cancer/2026-12.csv",
        Body=aws.s3.get_object(Bucket=aws.bucket, Key="training/cancer/2026-11.csv")["Body"].read(),
    )
    later = handler("scheduled", reference_event("eventbridge-scheduler-event.json"))
    assert [d["action"] for d in later["decisions"]] == ["skipped"]
    assert "cooling down" in later["decisions"][0]["reason"]


def test_worse_candidate_is_rejected_with_its_reason(
    aws: Aws,
    cancer: ModelRegistry,
    labelled: None,
    worse_model: TrainResult,
    capsys: pytest.CaptureFixture[str],
) -> None:
    [decision] = handler("scheduled", sample_event("schedule.json"))["decisions"]
    job = decision["job_id"]
    play_sagemaker(aws, job, worse_model)
    event = sample_event("sagemaker-training-job-state-change.json")
    event["detail"]["TrainingJobName"] = job
    [verdict] = handler("job_event", event)["decisions"]
    assert verdict["action"] == "rejected"
    assert "no_worse_than_current" in verdict["reason"]
    assert cancer.alias_target("cancer") == "1"
    history = [e["action"] for e in cancer.history("cancer")]
    assert history[-1] == "rejected"
    [line] = metric_lines(capsys.readouterr().out, "retrain_rejected")
    assert line["model"] == "cancer"


def test_job_without_artifact_fails_cleanly(
    aws: Aws, cancer: ModelRegistry, labelled: None
) -> None:
    [decision] = handler("scheduled", sample_event("schedule.json"))["decisions"]
    event = sample_event("sagemaker-training-job-state-change.json")
    event["detail"]["TrainingJobName"] = decision["job_id"]
    [verdict] = handler("job_event", event)["decisions"]
    assert verdict["action"] == "failed"
    assert "unusable" in verdict["reason"]
    assert cancer.list_versions("cancer") == ["1"]


def test_a_schedule_tick_judges_a_job_whose_events_were_lost(
    aws: Aws,
    cancer: ModelRegistry,
    labelled: None,
    demo_model: TrainResult,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same controller path as a job event: SageMaker's model.tar.gz is unpacked by the
    runner, then registered, gated and promoted, and counted."""
    [decision] = handler("scheduled", sample_event("schedule.json"))["decisions"]
    job = decision["job_id"]
    play_sagemaker(aws, job, demo_model)
    later = handler("scheduled", sample_event("schedule.json"))["decisions"]
    assert [(d["action"], d["job_id"]) for d in later] == [("promoted", job), ("skipped", None)]
    assert cancer.alias_target("cancer") == "2"
    staged = decision["details"]["output_uri"].removeprefix(f"s3://{aws.bucket}/")
    assert aws.store.exists(staged + "model.onnx") and aws.store.exists(staged + "card.json")
    [promoted] = metric_lines(capsys.readouterr().out, "retrain_promoted")
    assert (promoted["model"], promoted["trigger"]) == ("cancer", "job")
    # the job's own event, arriving late, changes nothing
    event = sample_event("sagemaker-training-job-state-change.json")
    event["detail"]["TrainingJobName"] = job
    assert [d["action"] for d in handler("job_event", event)["decisions"]] == ["skipped"]
    assert cancer.list_versions("cancer") == ["1", "2"]


def test_never_two_jobs_in_flight(
    aws: Aws, cancer: ModelRegistry, labelled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKYSCORE_RETRAIN_COOLDOWN_SECONDS", "0")
    [first] = handler("scheduled", sample_event("schedule.json"))["decisions"]
    assert first["action"] == "started"
    # moto finishes jobs at once; make this one still be running, as on SageMaker
    from moto.backends import get_backend

    job = get_backend("sagemaker")[ACCOUNT][REGION].training_jobs[first["job_id"]]
    job.training_job_status = "InProgress"
    aws.s3.put_object(
        Bucket=aws.bucket,
        Key="training/cancer/more.csv",
        Body=aws.s3.get_object(Bucket=aws.bucket, Key="training/cancer/2026-11.csv")["Body"].read(),
    )
    [second] = handler("scheduled", sample_event("schedule.json"))["decisions"]
    assert second["action"] == "skipped"
    assert first["job_id"] in second["reason"]
    # its state-change event while running is not a completion
    event = sample_event("sagemaker-training-job-state-change.json")
    event["detail"].update(TrainingJobName=first["job_id"], TrainingJobStatus="InProgress")
    assert handler("job_event", event) == {"decisions": []}


def sns_topic(aws: Aws) -> tuple[str, str, str]:
    """The retrain topic with an SQS subscriber, so the test reads the envelope SNS sends."""
    import boto3

    sns = boto3.client("sns")
    topic = sns.create_topic(Name="skyscore-test-retrain")["TopicArn"]
    url = aws.sqs.create_queue(QueueName="retrain-topic-tap")["QueueUrl"]
    arn = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    subscription = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)["SubscriptionArn"]
    return topic, str(url), subscription


def alarm_message(
    name: str, description: str, changed_at: str, state: str = "ALARM"
) -> dict[str, Any]:
    """The JSON CloudWatch publishes for an alarm action (shape of the reference event)."""
    message = json.loads(
        reference_event("sns-cloudwatch-alarm-single-metric.json")["Records"][0]["Sns"]["Message"]
    )
    message.update(
        AlarmName=name,
        AlarmDescription=description,
        NewStateValue=state,
        OldStateValue="OK",
        StateChangeTime=changed_at,
        Region=REGION,
        AlarmArn=f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}",
    )
    message["Trigger"].update(
        MetricName="max_psi",
        Namespace="skyscore",
        Dimensions=[{"name": "model", "value": "cancer"}],
    )
    return message


def test_sns_drift_alarm_starts_retraining(aws: Aws, cancer: ModelRegistry, labelled: None) -> None:
    import boto3

    topic, tap, subscription = sns_topic(aws)
    message = alarm_message(
        "skyscore-test-cancer-drift",
        "skyscore model=cancer alarm=drift",
        "2026-11-24T11:00:00.000+0000",
    )
    boto3.client("sns").publish(TopicArn=topic, Message=json.dumps(message), Subject="ALARM")
    [delivered] = drain(aws.sqs, tap)
    envelope = json.loads(delivered["Body"])
    assert envelope["Type"] == "Notification"
    event = sns_event(envelope, subscription)
    [decision] = handler("alarm", event)["decisions"]
    assert decision["action"] == "started"
    assert decision["trigger"] == "drift"
    # SNS delivers at least once: the same notification again changes nothing
    assert [d["action"] for d in handler("alarm", copy.deepcopy(event))["decisions"]] == ["skipped"]


def test_error_rate_alarm_rolls_back_once_whichever_way_it_arrives(
    aws: Aws, cancer: ModelRegistry, demo_model: TrainResult
) -> None:
    import boto3

    card = cancer.register(demo_model.card, demo_model.onnx_bytes, name="cancer")
    cancer.promote("cancer", card.version)
    assert cancer.alias_target("cancer") == "2"
    eventbridge = sample_event("cloudwatch-alarm-state-change.json")
    changed_at = eventbridge["detail"]["state"]["timestamp"]
    [decision] = handler("alarm", eventbridge)["decisions"]
    assert decision["action"] == "rolled_back", decision
    assert cancer.alias_target("cancer") == "1"
    # the same state change through the SNS topic (the alarm's action) must not roll back again
    topic, tap, subscription = sns_topic(aws)
    message = alarm_message(
        eventbridge["detail"]["alarmName"],
        eventbridge["detail"]["configuration"]["description"],
        changed_at,
    )
    boto3.client("sns").publish(TopicArn=topic, Message=json.dumps(message))
    [delivered] = drain(aws.sqs, tap)
    [again] = handler("alarm", sns_event(json.loads(delivered["Body"]), subscription))["decisions"]
    assert again["action"] == "skipped"
    assert cancer.alias_target("cancer") == "1"


def test_reference_alarm_payloads(
    aws: Aws, cancer: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verbatim public payloads: alarms in ALARM that are configured as retrain triggers are
    acted on for the default model (here: nothing to retrain on, so recorded as skipped); an
    alarm that is not configured is operational and starts nothing; plain SNS messages are
    not alarms."""
    from functions.aws import common

    unconfigured = handler("alarm", reference_event("sns-cloudwatch-alarm-single-metric.json"))
    assert unconfigured == {"decisions": []}
    monkeypatch.setenv("SKYSCORE_RETRAIN_ALARMS", "EXAMPLE=drift,Test alert=drift")
    common.reset()
    sns = handler("alarm", reference_event("sns-cloudwatch-alarm-single-metric.json"))
    assert [d["action"] for d in sns["decisions"]] == ["skipped"]
    assert "new labelled rows" in sns["decisions"][0]["reason"]
    direct = handler("alarm", reference_event("cloudwatch-alarm-state-change-lambda-action.json"))
    assert [d["action"] for d in direct["decisions"]] == ["skipped"]
    assert handler("alarm", reference_event("sns-basic.json")) == {"decisions": []}
    ok = sample_event("cloudwatch-alarm-state-change.json")
    ok["detail"]["state"]["value"] = "OK"
    assert handler("alarm", ok) == {"decisions": []}
    assert (
        handler("alarm", sample_event("sns-alarm-drift.json"))["decisions"][0]["model"] == "cancer"
    )
