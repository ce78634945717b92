"""Upload scoring against moto: S3 → SQS notifications delivered by moto are handed to the upload
function as the Lambda runtime would; outputs are compared with a local run of the core."""

from __future__ import annotations

import copy
import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from aws_moto import Aws, LambdaContext, drain, reference_event, sample_event
from demo_table import cancer_csv
from skyscore.batch import scorer as batch_module
from skyscore.batch.pipeline import score_path
from skyscore.model.predictor import Predictor
from skyscore.model.registry import ModelRegistry
from skyscore.training.train import TrainResult


def upload_handler(event: dict[str, Any], request_id: str | None = None) -> dict[str, Any]:
    from functions.aws import upload

    context = LambdaContext() if request_id is None else LambdaContext(aws_request_id=request_id)
    result: dict[str, Any] = upload.handler(event, context)
    return result


def notifications(aws: Aws, prefix: str = "incoming/") -> str:
    """Configure the bucket to notify an SQS queue (moto delivers these); returns its URL."""
    url = aws.sqs.create_queue(QueueName="s3-events")["QueueUrl"]
    arn = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    aws.s3.put_bucket_notification_configuration(
        Bucket=aws.bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
                }
            ]
        },
    )
    return str(url)


def received_events(aws: Aws, url: str) -> list[dict[str, Any]]:
    """Bodies of the notifications waiting in the queue (deleted once read)."""
    out = []
    for message in drain(aws.sqs, url):
        out.append(json.loads(message["Body"]))
        aws.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return out


def local_reference(tmp_path: Path, data: bytes, predictor: Predictor, name: str) -> Path:
    source = tmp_path / name
    source.write_bytes(data)
    target = tmp_path / f"{source.stem}.predictions{source.suffix}"
    score_path(source, target, predictor)
    return target


def test_s3_notification_scores_once(
    aws: Aws,
    cancer: ModelRegistry,
    demo_predictor: Predictor,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue = notifications(aws)
    test_events = received_events(aws, queue)
    assert [e.get("Event") for e in test_events] == ["s3:TestEvent"]
    assert upload_handler(test_events[0])["ignored"] == "s3:TestEvent"

    key = "incoming/cancer/clinic A+B 2026.csv"
    data = cancer_csv(data_dir)
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=data)
    aws.s3.put_object(Bucket=aws.bucket, Key="elsewhere/not-scored.csv", Body=data)
    events = received_events(aws, queue)
    assert len(events) == 1  # the prefix filter kept elsewhere/ out
    raw_key = events[0]["Records"][0]["s3"]["object"]["key"]
    assert raw_key != key and "+" in raw_key  # URL-encoded by S3 (moto does the same)

    answer = upload_handler(events[0])
    assert answer["results"][0]["status"] == "scored"
    out = "predictions/cancer/clinic A+B 2026.predictions.csv"
    assert answer["results"][0]["output"] == out

    reference = local_reference(tmp_path, data, demo_predictor, "clinic.csv")
    output = aws.s3.get_object(Bucket=aws.bucket, Key=out)
    assert output["Body"].read() == reference.read_bytes()
    errors = aws.s3.get_object(Bucket=aws.bucket, Key=out + ".errors.jsonl")["Body"].read()
    assert errors == reference.with_name(reference.name + ".errors.jsonl").read_bytes()
    assert [json.loads(line)["row"] for line in errors.splitlines()] == [4, 11]
    manifest = json.loads(
        aws.s3.get_object(Bucket=aws.bucket, Key=out + ".manifest.json")["Body"].read()
    )
    etag = aws.s3.head_object(Bucket=aws.bucket, Key=key)["ETag"].strip('"')
    assert manifest["input_version"].strip('"') == etag
    assert manifest["model"] == {
        "name": "cancer",
        "version": "1",
        "onnx_sha256": demo_predictor.card.onnx.sha256,
    }
    assert manifest["rows_scored"] == 567 and manifest["rows_failed"] == 2
    assert manifest["drift"]["rows"] == 567

    # The same event again (S3 delivers at least once): no second run, the same bytes.
    before = {
        k: aws.s3.head_object(Bucket=aws.bucket, Key=k)["ETag"]
        for k in (out, out + ".errors.jsonl", out + ".manifest.json")
    }

    def no_second_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a duplicate event scored the file again")

    monkeypatch.setattr(batch_module, "score_stream", no_second_run)
    again = upload_handler(copy.deepcopy(events[0]))
    assert again["results"][0]["status"] == "duplicate"
    after = {k: aws.s3.head_object(Bucket=aws.bucket, Key=k)["ETag"] for k in before}
    assert after == before
    monkeypatch.undo()

    # A new version of the file is a new event and is scored again; its errors are gone.
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=cancer_csv(data_dir, bad_rows=False))
    [event] = received_events(aws, queue)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    assert upload_handler(event)["results"][0]["status"] == "scored"
    fresh = json.loads(
        aws.s3.get_object(Bucket=aws.bucket, Key=out + ".manifest.json")["Body"].read()
    )
    assert fresh["rows_failed"] == 0 and fresh["input_version"].strip('"') != etag
    assert "Contents" not in aws.s3.list_objects_v2(Bucket=aws.bucket, Prefix=out + ".errors")


def test_stale_and_concurrent_duplicates(aws: Aws, cancer: ModelRegistry, data_dir: Path) -> None:
    queue = notifications(aws)
    received_events(aws, queue)
    key = "incoming/cancer/twice.csv"
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=cancer_csv(data_dir))
    [first] = received_events(aws, queue)
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=cancer_csv(data_dir, bad_rows=False))
    [second] = received_events(aws, queue)
    # the first event names an ETag that is gone: its object was replaced, the second scores it
    assert upload_handler(first)["results"][0]["status"] == "stale"
    # a duplicate delivered while another invocation holds the claim stands aside
    from skyscore.coordination import claims

    etag = aws.s3.head_object(Bucket=aws.bucket, Key=key)["ETag"]
    model = f"cancer@{cancer.resolve('cancer')}"
    digest = batch_module.BatchScorer._digest(key, etag, model)
    # that invocation crashed a minute ago (Lambda's first async retry comes a minute later)
    crashed = time.time() - 60
    claims.acquire(
        aws.store, f"work/claims/{digest}.json", "another-invocation", clock=lambda: crashed
    )
    assert upload_handler(second)["results"][0]["status"] == "in_progress"
    # the retry of the invocation that holds the claim (same request id) takes it back
    answer = upload_handler(second, request_id="another-invocation")
    assert answer["results"][0]["status"] == "scored"


def test_eventbridge_object_created(
    aws: Aws, cancer: ModelRegistry, demo_predictor: Predictor, data_dir: Path, tmp_path: Path
) -> None:
    rows = list(csv.DictReader(io.StringIO(cancer_csv(data_dir, bad_rows=False).decode())))
    data = "".join(
        json.dumps(
            {k: (v if k in ("patient_id", "size_band") else float(v)) for k, v in row.items()}
        )
        + "\n"
        for row in rows
    ).encode()
    key = "incoming/cancer/clinic B.jsonl"
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=data)
    event = copy.deepcopy(reference_event("s3-eventbridge-object-created.json"))
    event["detail"]["bucket"]["name"] = aws.bucket
    event["resources"] = [f"arn:aws:s3:::{aws.bucket}"]
    event["detail"]["object"].update(
        key=key,
        size=len(data),
        etag=aws.s3.head_object(Bucket=aws.bucket, Key=key)["ETag"].strip('"'),
    )
    answer = upload_handler(event)
    assert answer["results"][0]["status"] == "scored"
    out = "predictions/cancer/clinic B.predictions.jsonl"
    reference = local_reference(tmp_path, data, demo_predictor, "clinic.jsonl")
    assert aws.s3.get_object(Bucket=aws.bucket, Key=out)["Body"].read() == reference.read_bytes()


def test_reference_and_sample_events_are_accepted(aws: Aws, cancer: ModelRegistry) -> None:
    """Verbatim payloads: other buckets and keys outside incoming/ are ignored, not errors."""
    for name in ("s3-object-created-put.json", "s3-eventbridge-object-created.json"):
        results = upload_handler(reference_event(name))["results"]
        assert [r["status"] for r in results] == ["ignored"], results
    assert upload_handler(sample_event("s3-test-event.json"))["ignored"] == "s3:TestEvent"
    event = sample_event("s3-object-created.json")
    event["Records"][0]["s3"]["bucket"]["name"] = aws.bucket
    # the sample names an object that does not exist here: nothing to score
    assert upload_handler(event)["results"][0]["status"] == "ignored"


@pytest.mark.parametrize(
    ("name", "body", "status"),
    [
        ("notes.txt", b"hello\n", 415),
        ("binary.csv", b"PAR1\x00\x01binary", 415),
        ("columns.csv", b"a,b\n1,2\n", 422),
    ],
)
def test_unusable_files_get_a_failure_manifest(
    aws: Aws, cancer: ModelRegistry, name: str, body: bytes, status: int
) -> None:
    key = f"incoming/cancer/{name}"
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=body)
    event = sample_event("s3-object-created.json")
    event["Records"][0]["s3"]["bucket"]["name"] = aws.bucket
    event["Records"][0]["s3"]["object"].update(key=key, eTag=None)
    answer = upload_handler(event)
    assert answer["results"][0]["status"] == "failed"
    stem, _, ext = name.rpartition(".")
    manifest_key = f"predictions/cancer/{stem}.predictions.{ext}.manifest.json"
    manifest = json.loads(aws.s3.get_object(Bucket=aws.bucket, Key=manifest_key)["Body"].read())
    assert manifest["status"] == "failed"
    assert manifest["error"]["status"] == status
    # the same event again fails the same way and leaves the manifest as it was; a fixed
    # re-upload (a new version) would be scored: a failure stays retryable
    assert upload_handler(event)["results"][0]["status"] == "failed"
    again = aws.s3.get_object(Bucket=aws.bucket, Key=manifest_key)["Body"].read()
    assert json.loads(again) == manifest


def test_unknown_model_fails_with_a_reason(aws: Aws, cancer: ModelRegistry, data_dir: Path) -> None:
    key = "incoming/nosuchmodel/file.csv"
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=cancer_csv(data_dir))
    event = sample_event("s3-object-created.json")
    event["Records"][0]["s3"]["bucket"]["name"] = aws.bucket
    event["Records"][0]["s3"]["object"].update(key=key, eTag=None)
    assert upload_handler(event)["results"][0]["status"] == "failed"
    manifest = json.loads(
        aws.s3.get_object(
            Bucket=aws.bucket, Key="predictions/nosuchmodel/file.predictions.csv.manifest.json"
        )["Body"].read()
    )
    assert manifest["error"]["status"] == 404


def run_work_queue(aws: Aws, *, duplicate_first: bool = False) -> list[dict[str, Any]]:
    """Play the SQS event source mapping: receive, invoke the queue function, delete what
    succeeded; until the queue is empty."""
    from functions.aws import queue

    answers = []
    duplicated = False
    while messages := drain(aws.sqs, aws.queue_url)[:10]:
        for start in range(0, len(messages), 3):
            batch = messages[start : start + 3]
            event = sqs_event_for(aws, batch)
            answer = queue.handler(event, LambdaContext())
            answers.append(answer)
            failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
            assert not failed, answer
            if duplicate_first and not duplicated:
                duplicated = True  # SQS delivered this batch twice
                answers.append(queue.handler(event, LambdaContext()))
            for message in batch:
                aws.sqs.delete_message(
                    QueueUrl=aws.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
    return answers


def sqs_event_for(aws: Aws, messages: list[dict[str, Any]]) -> dict[str, Any]:
    from aws_moto import sqs_event

    return sqs_event(messages, aws.queue_arn)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_large_upload_fans_out_and_assembles(
    aws: Aws,
    hgb_model: TrainResult,
    hgb_predictor: Predictor,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
) -> None:
    registry = aws.registry()
    card = registry.register(hgb_model.card, hgb_model.onnx_bytes, name="fraud")
    registry.promote("fraud", card.version)
    text = (data_dir / "synthetic.csv").read_text()
    lines = text.splitlines()
    lines[7] = lines[7].replace(lines[7].split(",")[1], "oops", 1)  # one bad row
    if fmt == "csv":
        data = ("\n".join(lines) + "\n").encode()
    else:
        rows = csv.DictReader(io.StringIO("\n".join(lines) + "\n"))
        data = b"".join(json.dumps(dict(row)).encode() + b"\n" for row in rows)
        data = _typed_jsonl(data, hgb_model)
    monkeypatch.setenv("SKYSCORE_FANOUT_BYTES", str(len(data) // 3))
    monkeypatch.setenv("SKYSCORE_PART_BYTES", str(len(data) // 7))
    from functions.aws import common

    common.reset()
    key = f"incoming/fraud/big.{fmt}"
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=data)
    event = sample_event("s3-object-created.json")
    event["Records"][0]["s3"]["bucket"]["name"] = aws.bucket
    event["Records"][0]["s3"]["object"].update(
        key=key, eTag=aws.s3.head_object(Bucket=aws.bucket, Key=key)["ETag"].strip('"')
    )
    answer = upload_handler(event)
    assert answer["results"][0]["status"] == "fanned_out"
    # a duplicate of the upload event does not split the file twice
    assert upload_handler(event)["results"][0]["status"] == "duplicate"

    answers = run_work_queue(aws, duplicate_first=True)
    assert len(answers) >= 3  # parts went through the queue function in several batches
    out = f"predictions/fraud/big.predictions.{fmt}"
    reference = local_reference(tmp_path, data, hgb_predictor, f"big.{fmt}")
    assembled = aws.s3.get_object(Bucket=aws.bucket, Key=out)["Body"].read()
    assert assembled == reference.read_bytes()
    errors = aws.s3.get_object(Bucket=aws.bucket, Key=out + ".errors.jsonl")["Body"].read()
    assert errors == reference.with_name(reference.name + ".errors.jsonl").read_bytes()
    manifest = json.loads(
        aws.s3.get_object(Bucket=aws.bucket, Key=out + ".manifest.json")["Body"].read()
    )
    local_manifest = json.loads(reference.with_name(reference.name + ".manifest.json").read_text())
    for field in ("rows_read", "rows_scored", "rows_failed", "output_bytes"):
        assert manifest[field] == local_manifest[field], field
    assert manifest["fanout"]["parts"] >= 5
    assert manifest["first_errors"] == local_manifest["first_errors"]
    # drift merged from the parts equals drift over the whole file
    from skyscore.monitoring.batch import score_file

    _, drift = score_file(tmp_path / f"big.{fmt}", tmp_path / f"again.{fmt}", hgb_predictor)
    assert manifest["drift"]["features"] == json.loads(json.dumps(drift["features"]))
    assert manifest["drift"]["prediction_counts"] == drift["prediction_counts"]
    # the work files are gone; only the plan and the assembled marker remain
    work = aws.s3.list_objects_v2(Bucket=aws.bucket, Prefix="work/batch/").get("Contents", [])
    assert sorted(k["Key"].rsplit("/", 1)[1] for k in work) == [
        "assemble.claim",
        "assembled.json",
        "plan.json",
    ]


def _typed_jsonl(data: bytes, model: TrainResult) -> bytes:
    """JSON Lines with numbers as numbers (CSV text turned into typed JSON values)."""
    numeric = set(model.card.numeric_features)
    out = []
    for line in data.splitlines():
        record = json.loads(line)
        typed = {}
        for name, value in record.items():
            if name in numeric:
                try:
                    typed[name] = float(value)
                except ValueError:
                    typed[name] = value
            else:
                typed[name] = value
        out.append(json.dumps(typed).encode())
    return b"\n".join(out) + b"\n"


def test_keys_with_plus_and_percent_decode_alike(
    aws: Aws, cancer: ModelRegistry, data_dir: Path
) -> None:
    """S3 notifications URL-encode keys; EventBridge events are decoded by Powertools the same
    way, so ``a+b%.csv`` is one object whichever envelope names it (issue 14, item 7)."""
    from urllib.parse import quote_plus

    from functions.aws.events import objects_created

    key = "incoming/cancer/a+b %25 c.csv"
    notification = sample_event("s3-object-created.json")
    notification["Records"][0]["s3"]["bucket"]["name"] = aws.bucket
    notification["Records"][0]["s3"]["object"]["key"] = quote_plus(key)
    bridge = copy.deepcopy(reference_event("s3-eventbridge-object-created.json"))
    bridge["detail"]["bucket"]["name"] = aws.bucket
    bridge["detail"]["object"]["key"] = quote_plus(key)
    [one] = objects_created(notification)
    [two] = objects_created(bridge)
    assert one.name == two.name == key
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=cancer_csv(data_dir))
    notification["Records"][0]["s3"]["object"]["eTag"] = None
    assert upload_handler(notification)["results"][0]["status"] == "scored"
