"""One port contract, run over every adapter: local, S3 (moto), Azure Blob/Queue (Azurite) and
GCS (fake-gcs-server), Pub/Sub (the gcloud emulator). Each backend's fixtures start its real server on 127.0.0.1; an adapter,
present or future, joins by adding its fixture name to the lists below."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aws_moto import environment, moto_server
from skyscore.adapters.aws import S3BlobStore, SQSQueue
from skyscore.adapters.local import LocalBlobStore, LocalQueue
from skyscore.ports import BlobStore, QueuePort

BLOB_STORES = ["local", "moto", "azurite", "fakegcs"]
QUEUES = ["local", "moto", "azurite", "pubsub"]


@pytest.fixture(scope="session")
def contract_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server of the contract suite's own, with the environment boto3 reads."""
    with moto_server() as url, pytest.MonkeyPatch.context() as patch:
        for name, value in environment(url, tmp_path_factory.mktemp("aws")).items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        yield url


@pytest.fixture
def local_blob_store(tmp_path: Path) -> BlobStore:
    return LocalBlobStore(tmp_path / "store")


@pytest.fixture
def moto_blob_store(contract_moto: str) -> BlobStore:
    import boto3

    bucket = f"contract-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return S3BlobStore(bucket, "root")


@pytest.fixture
def local_queue(tmp_path: Path) -> QueuePort:
    dead = LocalQueue(tmp_path / "queues", "work-dlq")
    return LocalQueue(tmp_path / "queues", "work", max_receives=2, dead_letter=dead)


@pytest.fixture
def moto_queue(contract_moto: str) -> QueuePort:
    import boto3

    sqs = boto3.client("sqs")
    name = f"contract-{uuid.uuid4().hex[:12]}"
    dead = SQSQueue(sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"])
    return SQSQueue(sqs.create_queue(QueueName=name)["QueueUrl"], max_receives=2, dead_letter=dead)


@pytest.fixture(params=BLOB_STORES)
def blob_store(request: pytest.FixtureRequest) -> BlobStore:
    """Every blob store adapter, each against its real server."""
    store: BlobStore = request.getfixturevalue(f"{request.param}_blob_store")
    return store


@pytest.fixture(params=QUEUES)
def queue_port(request: pytest.FixtureRequest) -> QueuePort:
    """Every queue adapter, each against its real server."""
    queue: QueuePort = request.getfixturevalue(f"{request.param}_queue")
    return queue


# The emulator fixtures of the other clouds live in tests/azurite.py and tests/fake_gcs.py.
try:
    from azurite import azurite_blob_store, azurite_queue
except ImportError as missing:  # never a skip: a missing adapter fails its contract cases
    _azure_missing = str(missing)

    @pytest.fixture
    def azurite_blob_store() -> BlobStore:
        pytest.fail(f"the Azure adapter's fixtures are missing: {_azure_missing}")

    @pytest.fixture
    def azurite_queue() -> QueuePort:
        pytest.fail(f"the Azure adapter's fixtures are missing: {_azure_missing}")


try:
    from fake_gcs import fakegcs_blob_store
except ImportError as missing:
    _gcs_missing = str(missing)

    @pytest.fixture
    def fakegcs_blob_store() -> BlobStore:
        pytest.fail(f"the GCS adapter's fixtures are missing: {_gcs_missing}")


try:
    from pubsub_emulator import pubsub_queue
except ImportError as missing:
    _pubsub_missing = str(missing)

    @pytest.fixture
    def pubsub_queue() -> QueuePort:
        pytest.fail(f"the Pub/Sub adapter's fixtures are missing: {_pubsub_missing}")
