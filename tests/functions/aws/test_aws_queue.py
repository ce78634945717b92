"""Queue scoring against moto: messages sent to SQS, received with boto3 and handed to the queue
function; failures are reported per message and poison messages end in the dead-letter queue."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aws_moto import (
    MAX_RECEIVES,
    Aws,
    LambdaContext,
    drain,
    reference_event,
    sample_event,
    sqs_event,
)
from skyscore.model.predictor import Predictor
from skyscore.model.registry import ModelRegistry


def queue_handler(event: dict[str, Any]) -> dict[str, Any]:
    from functions.aws import queue

    result: dict[str, Any] = queue.handler(event, LambdaContext())
    return result


def instances() -> list[dict[str, Any]]:
    body = json.loads(sample_event("sqs-work.json")["Records"][0]["body"])
    records: list[dict[str, Any]] = body["instances"]
    return records


def test_records_pointers_and_partial_failures(
    aws: Aws, cancer: ModelRegistry, demo_predictor: Predictor
) -> None:
    good, bad = instances()
    aws.s3.put_object(
        Bucket=aws.bucket,
        Key="incoming/cancer/batch.jsonl",
        Body=(json.dumps(good) + "\n").encode(),
    )
    bodies = [
        {"kind": "records", "model": "cancer", "id": "req-1", "instances": [good, bad, good]},
        {"kind": "object", "key": "incoming/cancer/batch.jsonl"},
        {"kind": "records", "model": "no-such-model", "instances": [good]},
        {"kind": "teleport"},
    ]
    for body in bodies:
        aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=json.dumps(body))
    aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody="Test message.")
    messages = drain(aws.sqs, aws.queue_url)
    assert len(messages) == 5
    answer = queue_handler(sqs_event(messages, aws.queue_arn))
    failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
    by_body = {m["MessageId"]: m["Body"] for m in messages}
    assert {by_body[i] for i in failed} == {
        json.dumps(bodies[2]),
        json.dumps(bodies[3]),
        "Test message.",
    }
    # inline records: good ones scored, the bad one in the error report (row = instance + 1)
    out = "predictions/queue/cancer/req-1.jsonl"
    lines = aws.s3.get_object(Bucket=aws.bucket, Key=out)["Body"].read().splitlines()
    predictions = [json.loads(line) for line in lines]
    assert [p["row"] for p in predictions] == [1, 3]
    expected = demo_predictor.predict_instances([good])[0]
    assert predictions[0]["label"] == expected["label"]
    errors = aws.s3.get_object(Bucket=aws.bucket, Key=out + ".errors.jsonl")["Body"].read()
    assert json.loads(errors.splitlines()[0])["row"] == 2
    # the object pointer was scored like an upload
    assert aws.s3.head_object(
        Bucket=aws.bucket, Key="predictions/cancer/batch.predictions.jsonl.manifest.json"
    )


def core_batches(output: str) -> list[dict[str, Any]]:
    """The core's per-batch EMF records (rows and drift, by model and version) in the logs."""
    out = []
    for line in output.splitlines():
        if line.startswith("{") and '"batches"' in line:
            record = json.loads(line)
            if "_aws" in record:
                out.append(record)
    return out


def test_inline_records_record_drift_and_metrics_once_per_batch_like_objects(
    aws: Aws, cancer: ModelRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    """Inline records take the object pointer's core path: a manifest with drift, one EMF
    record of rows and drift per batch, and a duplicate message (a client's resend, under a
    new message id) scores and counts nothing."""
    good, bad = instances()
    aws.s3.put_object(
        Bucket=aws.bucket,
        Key="incoming/cancer/pointer.jsonl",
        Body=(json.dumps(good) + "\n" + json.dumps(good) + "\n").encode(),
    )
    records = {"kind": "records", "model": "cancer", "id": "req-7", "instances": [good, bad, good]}
    pointer = {"kind": "object", "key": "incoming/cancer/pointer.jsonl"}
    for body in (records, pointer):
        aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=json.dumps(body))
    answer = queue_handler(sqs_event(drain(aws.sqs, aws.queue_url), aws.queue_arn))
    assert answer == {"batchItemFailures": []}
    for manifest_key in (
        "predictions/queue/cancer/req-7.jsonl.manifest.json",
        "predictions/cancer/pointer.predictions.jsonl.manifest.json",
    ):
        manifest = json.loads(aws.store.read_bytes(manifest_key))
        assert manifest["drift"]["rows"] == 2, manifest_key
        assert manifest["drift"]["model_version"] == "1"
        assert {"max_psi", "prediction_psi", "features", "status"} <= set(manifest["drift"])
    batches = core_batches(capsys.readouterr().out)
    assert len(batches) == 2  # one per batch, from the core
    for record in batches:
        assert (record["model"], record["version"]) == ("cancer", "1")
        assert record["batches"] == 1 and record["rows_scored"] == 2
        assert {"max_psi", "prediction_psi", "missing_rate", "out_of_range_rate"} <= set(record)
        assert record["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["model", "version"]]

    aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=json.dumps(records))
    again = queue_handler(sqs_event(drain(aws.sqs, aws.queue_url), aws.queue_arn))
    assert again == {"batchItemFailures": []}
    assert core_batches(capsys.readouterr().out) == []


def test_poison_messages_end_in_the_dead_letter_queue(aws: Aws, cancer: ModelRegistry) -> None:
    """SQS's redrive policy moves a message after maxReceiveCount failed receives; the function
    only reports the failure each time."""
    aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody='{"kind": "part", "job": "nope"}')
    receives = 0
    while messages := aws.sqs.receive_message(
        QueueUrl=aws.queue_url, VisibilityTimeout=0, AttributeNames=["All"]
    ).get("Messages", []):  # visibility 0: as if each failed receive had timed out
        receives += 1
        assert messages[0]["Attributes"]["ApproximateReceiveCount"] == str(receives)
        answer = queue_handler(sqs_event(messages, aws.queue_arn))
        assert [f["itemIdentifier"] for f in answer["batchItemFailures"]] == [
            messages[0]["MessageId"]
        ]
        assert receives <= MAX_RECEIVES
    assert receives == MAX_RECEIVES
    dead = drain(aws.sqs, aws.dlq_url)
    assert [m["Body"] for m in dead] == ['{"kind": "part", "job": "nope"}']


def test_s3_notification_through_sqs(aws: Aws, cancer: ModelRegistry) -> None:
    """An S3 event that arrives as an SQS body (bucket → queue) is scored the same way."""
    good, _ = instances()
    key = "incoming/cancer/via queue.jsonl"
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=(json.dumps(good) + "\n").encode())
    s3_event = sample_event("s3-object-created.json")
    s3_event["Records"][0]["s3"]["bucket"]["name"] = aws.bucket
    s3_event["Records"][0]["s3"]["object"].update(key="incoming/cancer/via+queue.jsonl", eTag=None)
    for body in (s3_event, sample_event("s3-test-event.json")):
        aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=json.dumps(body))
    answer = queue_handler(sqs_event(drain(aws.sqs, aws.queue_url), aws.queue_arn))
    assert answer == {"batchItemFailures": []}
    assert aws.s3.head_object(
        Bucket=aws.bucket, Key="predictions/cancer/via queue.predictions.jsonl.manifest.json"
    )


def test_reference_and_sample_batches(aws: Aws, cancer: ModelRegistry) -> None:
    """The public SQS payload holds two messages this service cannot use: both reported."""
    event = reference_event("sqs-basic.json")
    answer = queue_handler(event)
    assert sorted(f["itemIdentifier"] for f in answer["batchItemFailures"]) == sorted(
        r["messageId"] for r in event["Records"]
    )
    sample = sample_event("sqs-work.json")
    answer = queue_handler(sample)
    # the records message succeeds; the pointer names an object that is not in this bucket
    assert answer["batchItemFailures"] == []
