"""Cross-cloud parity: the same file and the same HTTP body give byte-identical predictions on
every deployment — the local runtime (inbox + HTTP server), AWS (the Lambda handlers on moto),
Azure (the function app on Azurite) and Google Cloud (functions-framework on fake-gcs-server).

Each cloud is driven through its own handler, as its platform calls it, against its own
emulator; only the bytes that come out are compared. A cloud that is not deployable here fails
its case (never a skip).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from skyscore.training.train import TrainResult

MODEL = "cancer"
INPUT_NAME = "clinic 2026-12.csv"
WAIT_SECONDS = 60.0


def _table(data_dir: Path) -> bytes:
    """The demo table without its label, with one bad row (so the error report is compared)."""
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO((data_dir / "breast_cancer.csv").read_text())))
    for row in rows:
        row.pop("diagnosis")
    rows[7]["mean_radius"] = "n/a"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows[:200])
    return out.getvalue().encode()


def _body(data_dir: Path) -> bytes:
    """An own-route request with three records of the demo table."""
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO((data_dir / "breast_cancer.csv").read_text())))[:3]

    def value(text: str) -> float | str:
        try:
            return float(text)
        except ValueError:
            return text

    instances = [{k: value(v) for k, v in row.items() if k != "diagnosis"} for row in rows]
    return json.dumps({"instances": instances}).encode()


def _wait(predicate: Callable[[], bytes | None], what: str) -> bytes:
    deadline = time.monotonic() + WAIT_SECONDS
    while (found := predicate()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return found


# One driver per deployment: (predictions, error report, HTTP body) for the same inputs.
Outcome = tuple[bytes, bytes, bytes]


def _local(model: TrainResult, table: bytes, body: bytes, tmp: Path) -> Outcome:
    from skyscore.adapters.local import LocalBlobStore
    from skyscore.local.runtime import LocalRuntime
    from skyscore.model.registry import ModelRegistry

    home = tmp / "home"
    registry = ModelRegistry(LocalBlobStore(home), refresh_seconds=0)
    card = registry.register(model.card, model.onnx_bytes, name=MODEL)
    registry.promote(MODEL, card.version)
    with LocalRuntime(
        home, host="127.0.0.1", port=0, default_model=MODEL, poll_seconds=0.05, registry=registry
    ) as runtime:
        request = urllib.request.Request(
            f"{runtime.url}/v1/models/{MODEL}/predict",
            data=body,
            method="POST",
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = response.read()
        (runtime.home.inbox / INPUT_NAME).write_bytes(table)
        predictions = runtime.home.predictions / MODEL

        def scored() -> bytes | None:
            for path in predictions.glob("*.predictions.csv"):
                if path.with_name(path.name + ".manifest.json").exists():
                    return path.read_bytes()
            return None

        out = _wait(scored, "the local inbox's predictions")
        [errors] = list(predictions.glob("*.predictions.csv.errors.jsonl"))
        return out, errors.read_bytes(), answer


def _aws(model: TrainResult, table: bytes, body: bytes, tmp: Path) -> Outcome:
    import boto3

    from aws_moto import LambdaContext, environment, moto_server, sample_event
    from skyscore.adapters.aws import S3BlobStore
    from skyscore.model.registry import ModelRegistry
    from skyscore.runtime.wiring import reset_cores

    bucket = f"parity-{uuid.uuid4().hex[:12]}"
    with moto_server() as url, pytest.MonkeyPatch.context() as patch:
        for name, value in environment(url, tmp).items():
            patch.setenv(name, value)
        patch.setenv("SKYSCORE_BUCKET", bucket)
        patch.setenv("SKYSCORE_MODEL", MODEL)
        patch.setenv("SKYSCORE_REFRESH_SECONDS", "0")
        for name in ("SKYSCORE_PREFIX", "SKYSCORE_WORK_QUEUE_URL", "AWS_PROFILE"):
            patch.delenv(name, raising=False)
        reset_cores()
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=bucket)
        registry = ModelRegistry(S3BlobStore(bucket), refresh_seconds=0)
        card = registry.register(model.card, model.onnx_bytes, name=MODEL)
        registry.promote(MODEL, card.version)
        key = f"incoming/{MODEL}/{INPUT_NAME}"
        put = s3.put_object(Bucket=bucket, Key=key, Body=table)

        from functions.aws import http, upload

        event = sample_event("s3-object-created.json")
        record = event["Records"][0]["s3"]
        record["bucket"]["name"] = bucket
        record["object"].update(
            key=key.replace(" ", "+"), size=len(table), eTag=put["ETag"].strip('"')
        )
        upload.handler(event, LambdaContext())
        stem = INPUT_NAME.rsplit(".", 1)[0]
        out_key = f"predictions/{MODEL}/{stem}.predictions.csv"
        out = s3.get_object(Bucket=bucket, Key=out_key)["Body"].read()
        errors = s3.get_object(Bucket=bucket, Key=out_key + ".errors.jsonl")["Body"].read()

        request = sample_event("http-api-predict.json")
        path = f"/v1/models/{MODEL}/predict"
        request["rawPath"] = request["requestContext"]["http"]["path"] = path
        request["requestContext"]["http"]["method"] = "POST"
        request["headers"] = {"content-type": "application/json"}
        request["body"] = base64.b64encode(body).decode()
        request["isBase64Encoded"] = True
        response = http.handler(request, LambdaContext())
        assert response["statusCode"] == 200, response
        answer = (
            base64.b64decode(response["body"])
            if response.get("isBase64Encoded")
            else response["body"].encode()
        )
        reset_cores()
        return out, errors, answer


def _azure(model: TrainResult, table: bytes, body: bytes, tmp: Path) -> Outcome:
    import azure.functions as func

    from azurite import shared_azurite
    from skyscore.adapters.azure import AzureBlobStore
    from skyscore.model.registry import ModelRegistry
    from skyscore.runtime.wiring import reset_cores

    server = shared_azurite()
    container = server.new_container()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SKYSCORE_STORAGE", server.connection_string)
        patch.setenv("SKYSCORE_CONTAINER", container)
        patch.setenv("SKYSCORE_MODEL", MODEL)
        patch.setenv("SKYSCORE_REFRESH_SECONDS", "0")
        for name in ("SKYSCORE_PREFIX", "SKYSCORE_QUEUE"):
            patch.delenv(name, raising=False)
        reset_cores()
        store = AzureBlobStore(container, connection_string=server.connection_string)
        registry = ModelRegistry(store, refresh_seconds=0)
        card = registry.register(model.card, model.onnx_bytes, name=MODEL)
        registry.promote(MODEL, card.version)
        key = f"incoming/{MODEL}/{INPUT_NAME}"
        store.write_bytes(key, table)
        info = store.stat(key)
        assert info is not None

        from azurite import app_functions

        functions = app_functions()
        event = func.EventGridEvent(
            id=str(uuid.uuid4()),
            data={
                "api": "PutBlob",
                "contentType": "text/csv",
                "contentLength": info.size,
                "blobType": "BlockBlob",
                "eTag": info.version.strip('"'),
                "url": store.uri_for(key),
            },
            topic="/subscriptions/x/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a",
            subject=f"/blobServices/default/containers/{container}/blobs/{key}",
            event_type="Microsoft.Storage.BlobCreated",
            event_time=None,
            data_version="",
        )
        functions["upload_event"].get_user_function()(event)
        stem = INPUT_NAME.rsplit(".", 1)[0]
        out_key = f"predictions/{MODEL}/{stem}.predictions.csv"
        out = store.read_bytes(out_key)
        errors = store.read_bytes(out_key + ".errors.jsonl")

        request = func.HttpRequest(
            "POST",
            f"http://localhost:7071/v1/models/{MODEL}/predict",
            headers={"content-type": "application/json"},
            body=body,
        )
        response = functions["http"].get_user_function()(request)
        assert response.status_code == 200, response.get_body()
        reset_cores()
        server.blob_service().delete_container(container)
        return out, errors, response.get_body()


def _gcp(model: TrainResult, table: bytes, body: bytes, tmp: Path) -> Outcome:
    import functions_framework
    from cloudevents.http import CloudEvent

    from fake_gcs import shared_fake_gcs
    from skyscore.model.registry import ModelRegistry
    from skyscore.runtime.wiring import reset_cores

    server = shared_fake_gcs()
    bucket = server.new_bucket("parity")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", server.endpoint)
        patch.setenv("SKYSCORE_BUCKET", bucket)
        patch.setenv("SKYSCORE_MODEL", MODEL)
        patch.setenv("SKYSCORE_REFRESH_SECONDS", "0")
        for name in ("SKYSCORE_PREFIX", "SKYSCORE_TOPIC"):
            patch.delenv(name, raising=False)
        reset_cores()
        store = server.store(bucket)
        registry = ModelRegistry(store, refresh_seconds=0)
        card = registry.register(model.card, model.onnx_bytes, name=MODEL)
        registry.promote(MODEL, card.version)
        key = f"incoming/{MODEL}/{INPUT_NAME}"
        store.write_bytes(key, table)
        info = store.stat(key)
        assert info is not None

        from functions.gcp import main

        main.upload(
            CloudEvent(
                {
                    "type": "google.cloud.storage.object.v1.finalized",
                    "id": str(uuid.uuid4()),
                    "source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
                },
                {"bucket": bucket, "name": key, "generation": info.version, "size": str(info.size)},
            )
        )
        stem = INPUT_NAME.rsplit(".", 1)[0]
        out_key = f"predictions/{MODEL}/{stem}.predictions.csv"
        out, errors = store.read_bytes(out_key), store.read_bytes(out_key + ".errors.jsonl")
        client = functions_framework.create_app("http", main.__file__).test_client()
        response = client.post(
            f"/v1/models/{MODEL}/predict", data=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 200, response.data
        reset_cores()
        return out, errors, bytes(response.data)


DRIVERS: dict[str, Callable[[TrainResult, bytes, bytes, Path], Outcome]] = {
    "aws": _aws,
    "azure": _azure,
    "gcp": _gcp,
}


@pytest.fixture(scope="module")
def local_outcome(demo_model: TrainResult, data_dir: Path, tmp_path_factory: Any) -> Outcome:
    return _local(demo_model, _table(data_dir), _body(data_dir), tmp_path_factory.mktemp("local"))


@pytest.fixture
def _fresh_cores() -> Iterator[None]:
    from skyscore.runtime.wiring import reset_cores

    reset_cores()
    yield
    reset_cores()


def test_the_local_outcome_is_real(local_outcome: Outcome) -> None:
    """The reference itself: predictions for 199 good rows, one error naming the bad row."""
    predictions, errors, answer = local_outcome
    assert predictions.count(b"\n") == 1 + 199
    [error] = [json.loads(line) for line in errors.splitlines()]
    assert "mean_radius" in json.dumps(error)
    assert len(json.loads(answer)["predictions"]) == 3


@pytest.mark.parametrize("cloud", sorted(DRIVERS))
def test_same_inputs_give_byte_identical_outputs(
    cloud: str,
    local_outcome: Outcome,
    demo_model: TrainResult,
    data_dir: Path,
    tmp_path: Path,
    _fresh_cores: None,
) -> None:
    outcome = DRIVERS[cloud](demo_model, _table(data_dir), _body(data_dir), tmp_path)
    for what, local, theirs in zip(
        ("predictions", "error report", "HTTP response"), local_outcome, outcome, strict=True
    ):
        assert theirs == local, f"{cloud}'s {what} differs from the local runtime's"
