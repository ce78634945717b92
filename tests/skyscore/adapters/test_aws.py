"""The AWS adapters against moto server: S3 blob store (streaming, multipart, conditional
writes), SQS queue, SageMaker job runner."""

from __future__ import annotations

import io
import json
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from aws_moto import ACCOUNT, REGION, environment, moto_server, reset
from skyscore.adapters.aws import (
    MIN_PART_BYTES,
    S3BlobStore,
    SageMakerJobRunner,
    SQSQueue,
    parse_s3_uri,
)
from skyscore.errors import ConflictError, NotFound, SkyscoreError
from skyscore.model.card import card_to_json
from skyscore.model.registry import ModelRegistry
from skyscore.ports import JobSpec, JobStatus
from skyscore.training.train import TrainResult

BUCKET = "skyscore-adapter-test"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def s3(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    reset(moto_url)
    for name, value in environment(moto_url, tmp_path).items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def store(s3: Any) -> S3BlobStore:
    return S3BlobStore(BUCKET, "root/", client=s3, part_bytes=MIN_PART_BYTES)


# ------------------------------------------------------------------------------ S3
def test_blob_store_contract(store: S3BlobStore, s3: Any) -> None:
    assert store.uri == f"s3://{BUCKET}/root/"
    assert store.stat("a/b.txt") is None and not store.exists("a/b.txt")
    with pytest.raises(NotFound):
        store.read_bytes("a/b.txt")
    with pytest.raises(NotFound), store.open_read("a/b.txt"):
        pass
    store.write_bytes("a/b.txt", b"hello")
    store.write_bytes("a/c.txt", b"world!")
    store.write_bytes("z.txt", b"")
    assert s3.get_object(Bucket=BUCKET, Key="root/a/b.txt")["Body"].read() == b"hello"
    info = store.stat("a/b.txt")
    assert (
        info is not None
        and info.size == 5
        and info.version == s3.head_object(Bucket=BUCKET, Key="root/a/b.txt")["ETag"]
    )
    assert [i.key for i in store.list()] == ["a/b.txt", "a/c.txt", "z.txt"]
    assert [i.key for i in store.list("a/")] == ["a/b.txt", "a/c.txt"]
    with store.open_read("a/c.txt") as handle:
        assert handle.read(3) == b"wor" and handle.read() == b"ld!"
    with store.open_range("a/c.txt", 1, 4) as handle:
        assert handle.read() == b"orl"
    with store.open_range("a/c.txt", 2, 2) as handle:
        assert handle.read() == b""
    with store.open_range("a/c.txt", 4, 20) as handle:
        assert handle.read() == b"d!"  # past the end: short, as from a file
    with store.open_range("a/c.txt", 6, 20) as handle:
        assert handle.read() == b""
    with pytest.raises(NotFound), store.open_range("a/missing.txt", 0, 4):
        pass
    store.delete("a/b.txt")
    store.delete("a/b.txt")  # missing: fine
    assert not store.exists("a/b.txt")
    with pytest.raises(ValueError):
        store.write_bytes("/abs", b"")
    assert store.key_for("root/a/c.txt") == "a/c.txt" and store.key_for("other/x") is None


def test_parquet_rows_are_counted_from_ranged_gets(store: S3BlobStore) -> None:
    """The retraining policy counts Parquet rows from the footer: two ranged GETs at most."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from skyscore.formats import parquet_meta

    buffer = io.BytesIO()
    table = pa.table({"x": list(range(5_000)), "s": [str(i) for i in range(5_000)]})
    table = table.replace_schema_metadata({"pad": "p" * (parquet_meta.SPECULATIVE_TAIL + 10)})
    pq.write_table(table, buffer, row_group_size=700)
    store.write_bytes("training/m/big-footer.parquet", buffer.getvalue())
    assert parquet_meta.count_rows(store, "training/m/big-footer.parquet") == 5_000


def test_if_absent_is_enforced_by_s3(store: S3BlobStore) -> None:
    store.write_bytes("claim", b"first", if_absent=True)
    with pytest.raises(ConflictError):
        store.write_bytes("claim", b"second", if_absent=True)
    assert store.read_bytes("claim") == b"first"
    winners: list[int] = []

    def race(i: int) -> None:
        try:
            store.write_bytes("race", str(i).encode(), if_absent=True)
            winners.append(i)
        except ConflictError:
            pass

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert store.read_bytes("race") == str(winners[0]).encode()


def test_open_write_streams_a_multipart_upload(store: S3BlobStore, s3: Any) -> None:
    chunk = bytes(range(256)) * 4096  # 1 MiB
    with store.open_write("big.bin") as sink:
        for _ in range(12):
            sink.write(chunk)
        assert not store.exists("big.bin")  # not visible before the block ends
    head = s3.head_object(Bucket=BUCKET, Key="root/big.bin")
    assert head["ContentLength"] == 12 << 20
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 5 + 5 + 2 MiB
    assert store.read_bytes("big.bin") == chunk * 12
    with store.open_write("small.txt") as sink:
        sink.write(b"tiny")
    assert not s3.head_object(Bucket=BUCKET, Key="root/small.txt")["ETag"].strip('"').count("-")


def test_open_write_aborts_on_error(store: S3BlobStore, s3: Any) -> None:
    store.write_bytes("keep.bin", b"old")
    with pytest.raises(RuntimeError), store.open_write("keep.bin") as sink:
        sink.write(b"x" * (6 << 20))  # one part already uploaded
        raise RuntimeError("scoring failed half way")
    assert store.read_bytes("keep.bin") == b"old"
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def test_registry_on_s3(store: S3BlobStore, demo_model: TrainResult) -> None:
    registry = ModelRegistry(store, refresh_seconds=0)
    first = registry.register(demo_model.card, demo_model.onnx_bytes)
    second = registry.register(demo_model.card, demo_model.onnx_bytes)
    assert (first.version, second.version) == ("1", "2")
    registry.promote("cancer", "2")
    assert registry.get_predictor("cancer").version == "2"
    store.write_bytes("models/cancer/2/model.onnx", demo_model.onnx_bytes + b"tampered")
    registry.clear_cache()
    with pytest.raises(SkyscoreError):
        registry.get_predictor("cancer", "2")


# ------------------------------------------------------------------------------ SQS
def test_sqs_queue(s3: Any) -> None:
    sqs = boto3.client("sqs")
    dlq = sqs.create_queue(QueueName="adapter-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    url = sqs.create_queue(
        QueueName="adapter-q",
        Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})
        },
    )["QueueUrl"]
    queue = SQSQueue(url)
    sent = queue.send(b'{"kind": "records"}', {"origin": "test"})
    binary = queue.send(b"\xff\x00\xfe")
    messages = queue.receive(10, visibility_timeout=30)
    by_id = {m.id: m for m in messages}
    assert by_id[sent].body == b'{"kind": "records"}'
    assert by_id[sent].attributes["origin"] == "test"
    assert by_id[binary].body == b"\xff\x00\xfe"
    assert queue.receive(10) == []  # hidden while in flight
    queue.release(by_id[sent])
    queue.ack(by_id[binary])
    [again] = queue.receive(10, visibility_timeout=0)
    assert again.id == sent and again.receive_count == 2
    assert queue.receive(10, visibility_timeout=0) == []  # third receive: redriven by SQS
    dead = SQSQueue(dlq).receive(10)
    assert [m.body for m in dead] == [b'{"kind": "records"}']


# ------------------------------------------------------------------------------ SageMaker
ROLE = f"arn:aws:iam::{ACCOUNT}:role/skyscore-training"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/skyscore-train:1"


def spec(name: str = "fraud", **changes: Any) -> JobSpec:
    values: dict[str, Any] = {
        "model_name": name,
        "data_uri": f"s3://{BUCKET}/training/{name}/",
        "output_uri": f"s3://{BUCKET}/staging/{name}/20261124T000000Z/",
        "target": "is_fraud",
        "estimator": "hgb",
        "id_column": "txn_id",
    }
    values.update(changes)
    return JobSpec(**values)


def test_instance_type_follows_the_estimator() -> None:
    """A GPU instance only for an estimator that can use one; a spec's own choice wins."""
    runner = SageMakerJobRunner(
        ROLE, IMAGE, instance_type="ml.c5.xlarge", gpu_instance_type="ml.g6.xlarge"
    )
    assert runner.instance_type_for(spec()) == "ml.c5.xlarge"
    assert runner.instance_type_for(replace(spec(), estimator="logreg")) == "ml.c5.xlarge"
    assert runner.instance_type_for(replace(spec(), estimator="xgboost")) == "ml.g6.xlarge"
    assert (
        runner.instance_type_for(
            replace(spec(), estimator="xgboost", instance_type="ml.p4d.24xlarge")
        )
        == "ml.p4d.24xlarge"
    )


def test_sagemaker_job_runner(s3: Any) -> None:
    runner = SageMakerJobRunner(ROLE, IMAGE)
    started = runner.start(spec())
    assert started.state == "pending" and started.model_name == "fraud"
    assert len(started.job_id) <= 63 and started.job_id.startswith("skyscore-fraud-")
    job = boto3.client("sagemaker").describe_training_job(TrainingJobName=started.job_id)
    assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert job["AlgorithmSpecification"]["TrainingInputMode"] == "File"
    assert job["RoleArn"] == ROLE
    assert job["ResourceConfig"]["InstanceType"] == "ml.m5.large"  # hgb: CPU
    assert job["InputDataConfig"][0]["ChannelName"] == "train"
    assert (
        job["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"]
        == f"s3://{BUCKET}/training/fraud/"
    )
    assert job["OutputDataConfig"]["S3OutputPath"] == spec().output_uri
    assert job["HyperParameters"] == {
        "target": "is_fraud",
        "name": "fraud",
        "estimator": "hgb",
        "id-column": "txn_id",
    }
    described = runner.describe(started.job_id)
    assert described.state == "completed" and described.model_name == "fraud"  # moto: at once
    assert described.output_uri == spec().output_uri
    other = runner.start(spec("fraud2", instance_type="ml.p3.2xlarge"))
    assert [j.job_id for j in runner.list_jobs("fraud")] == [started.job_id]
    assert [j.job_id for j in runner.list_jobs("fraud2")] == [other.job_id]
    assert runner.describe(other.job_id).state == "completed"
    with pytest.raises(NotFound):
        runner.describe("skyscore-nope-1")
    with pytest.raises(ValueError):
        runner.start(spec(data_uri="/local/path"))


def test_job_names_stay_within_sagemaker_limits() -> None:
    runner = SageMakerJobRunner(
        ROLE, IMAGE, client=object(), clock=lambda: datetime(2026, 1, 2, tzinfo=UTC)
    )
    long_name = "a_very.long-model_name" * 5
    from skyscore.adapters.aws import _job_name

    name = _job_name(runner.job_prefix, long_name, datetime(2026, 1, 2, tzinfo=UTC))
    assert len(name) <= 63 and name.endswith("-20260102000000000")
    assert all(c.isalnum() or c == "-" for c in name)


def test_active_jobs_asks_sagemaker_for_running_ones() -> None:
    client = boto3.client("sagemaker", region_name=REGION, endpoint_url="http://127.0.0.1:9")
    runner = SageMakerJobRunner(ROLE, IMAGE, client=client)
    with Stubber(client) as stub:
        stub.add_response(
            "list_training_jobs",
            {
                "TrainingJobSummaries": [
                    {
                        "TrainingJobName": "skyscore-fraud-20260102000000000",
                        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/skyscore-fraud-20260102000000000",
                        "CreationTime": datetime(2026, 1, 2, tzinfo=UTC),
                        "TrainingJobStatus": "InProgress",
                    }
                ]
            },
            {
                "NameContains": "skyscore-fraud",
                "SortBy": "CreationTime",
                "SortOrder": "Descending",
                "StatusEquals": "InProgress",
            },
        )
        stub.add_response(
            "describe_training_job",
            {
                "TrainingJobName": "skyscore-fraud-20260102000000000",
                "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/skyscore-fraud-20260102000000000",
                "TrainingJobStatus": "InProgress",
                "SecondaryStatus": "Training",
                "HyperParameters": {"name": "fraud"},
                "AlgorithmSpecification": {"TrainingInputMode": "File"},
                "ModelArtifacts": {"S3ModelArtifacts": ""},
                "ResourceConfig": {"InstanceCount": 1, "VolumeSizeInGB": 30},
                "StoppingCondition": {},
                "CreationTime": datetime(2026, 1, 2, tzinfo=UTC),
                "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/staging/fraud/x/"},
            },
        )
        stub.add_response("list_training_jobs", {"TrainingJobSummaries": []})
        [active] = runner.active_jobs("fraud")
    assert active.state == "running" and active.message == "Training"


def artifact(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_materialize_unpacks_model_tar_gz(s3: Any, demo_model: TrainResult) -> None:
    store = S3BlobStore(BUCKET, client=s3)
    runner = SageMakerJobRunner(ROLE, IMAGE)
    status = JobStatus(
        "skyscore-cancer-1", "cancer", "completed", f"s3://{BUCKET}/staging/cancer/t1/"
    )
    with pytest.raises(NotFound):
        runner.materialize(status, store)
    bucket, key = parse_s3_uri(runner.artifact_uri(status))
    assert key == "staging/cancer/t1/skyscore-cancer-1/output/model.tar.gz"
    assert SageMakerJobRunner.job_for_artifact(key) == "skyscore-cancer-1"
    assert SageMakerJobRunner.job_for_artifact("staging/cancer/t1/model.onnx") is None
    s3.put_object(Bucket=bucket, Key=key, Body=artifact({"./model.onnx": demo_model.onnx_bytes}))
    with pytest.raises(SkyscoreError, match=r"card\.json"):
        runner.materialize(status, store)
    card = card_to_json(demo_model.card)
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=artifact({"model.onnx": demo_model.onnx_bytes, "card.json": card, "extra.txt": b"x"}),
    )
    runner.materialize(status, store)
    assert store.read_bytes("staging/cancer/t1/card.json") == card
    assert store.read_bytes("staging/cancer/t1/model.onnx") == demo_model.onnx_bytes
    assert not store.exists("staging/cancer/t1/extra.txt")
    runner.materialize(status, store)  # idempotent
    outside = JobStatus("j", "cancer", "completed", "s3://another-bucket/staging/")
    with pytest.raises(SkyscoreError, match="outside"):
        runner.materialize(outside, store)
