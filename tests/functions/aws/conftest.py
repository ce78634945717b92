"""Fixtures for the AWS handlers: a moto server, a configured data bucket and work queue, and a
registered model. The handlers are called the way the Lambda runtime calls them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from aws_moto import MAX_RECEIVES, ROOT, Aws, environment, moto_server, reset
from skyscore.adapters.aws import S3BlobStore
from skyscore.model.registry import ModelRegistry
from skyscore.training.train import TrainResult

if str(ROOT) not in sys.path:  # the Lambda package root holds functions/ beside skyscore/
    sys.path.insert(0, str(ROOT))

BUCKET = "skyscore-test-data"


@pytest.fixture(scope="session", autouse=True)
def tracing_disabled() -> Iterator[None]:
    """X-Ray off for every handler test: there is no daemon (the tracing test runs its own,
    in a child process)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
        yield


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Aws]:
    """A fresh account: the data bucket, the work queue with its dead-letter queue, and the
    functions' environment pointing at them."""
    from functions.aws import common

    reset(moto_url)
    for name, value in environment(moto_url, tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3 = boto3.client("s3")
    sqs = boto3.client("sqs")
    s3.create_bucket(Bucket=BUCKET)
    dlq_url = sqs.create_queue(QueueName="skyscore-test-work-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    queue_url = sqs.create_queue(
        QueueName="skyscore-test-work",
        Attributes={
            "RedrivePolicy": f'{{"deadLetterTargetArn": "{dlq_arn}", "maxReceiveCount": "{MAX_RECEIVES}"}}'
        },
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    monkeypatch.setenv("SKYSCORE_BUCKET", BUCKET)
    monkeypatch.setenv("SKYSCORE_MODEL", "cancer")
    monkeypatch.setenv("SKYSCORE_WORK_QUEUE_URL", queue_url)
    monkeypatch.setenv("SKYSCORE_REFRESH_SECONDS", "0")
    monkeypatch.setenv(
        "SKYSCORE_SAGEMAKER_ROLE_ARN", "arn:aws:iam::123456789012:role/skyscore-training"
    )
    monkeypatch.setenv(
        "SKYSCORE_TRAINING_IMAGE_URI",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/skyscore-train:1",
    )
    common.reset()
    yield Aws(
        moto_url, s3, sqs, BUCKET, queue_url, queue_arn, dlq_url, S3BlobStore(BUCKET, client=s3)
    )
    common.reset()


@pytest.fixture
def cancer(aws: Aws, demo_model: TrainResult) -> ModelRegistry:
    """The demo model registered in the bucket as ``cancer`` version 1, in production."""
    registry = aws.registry()
    card = registry.register(demo_model.card, demo_model.onnx_bytes, name="cancer")
    registry.promote("cancer", card.version)
    return registry
