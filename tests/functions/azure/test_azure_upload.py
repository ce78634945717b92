"""Upload scoring on Azurite: Event Grid ``BlobCreated`` events (``func.EventGridEvent``), the
Event Grid-based blob trigger (``InputStream``) and events delivered to a Storage Queue score a
blob once; outputs equal a local run of the core byte for byte."""

from __future__ import annotations

import ast
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from azfunc import AzureApp, call, queue_message, reference_event

from demo_table import cancer_csv
from skyscore.batch import scorer as batch_module
from skyscore.batch.pipeline import score_path
from skyscore.model.predictor import Predictor
from skyscore.model.registry import ModelRegistry

OUTPUTS = ("", ".errors.jsonl", ".manifest.json")


def statuses(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The core's results the functions logged, in order."""
    out = []
    for record in caplog.records:
        if record.name == "skyscore.azure" and record.getMessage().startswith("upload "):
            result = ast.literal_eval(record.getMessage().split(": ", 1)[1])
            out.append(result["status"])
    caplog.clear()
    return out


def local_reference(tmp_path: Path, data: bytes, predictor: Predictor, name: str) -> Path:
    source = tmp_path / name
    source.write_bytes(data)
    target = tmp_path / f"{source.stem}.predictions{source.suffix}"
    score_path(source, target, predictor)
    return target


@pytest.fixture(autouse=True)
def _logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="skyscore.azure")


def test_event_grid_blob_created_scores_once(
    azure_app: AzureApp,
    cancer: ModelRegistry,
    demo_predictor: Predictor,
    data_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = azure_app.store
    key = "incoming/cancer/clinic A+B 2026.csv"
    data = cancer_csv(data_dir)
    store.write_bytes(key, data)
    event = azure_app.blob_event(key)
    call("upload_event", event)
    assert statuses(caplog) == ["scored"]

    out = "predictions/cancer/clinic A+B 2026.predictions.csv"
    reference = local_reference(tmp_path, data, demo_predictor, "clinic.csv")
    assert store.read_bytes(out) == reference.read_bytes()
    errors = store.read_bytes(out + ".errors.jsonl")
    assert errors == reference.with_name(reference.name + ".errors.jsonl").read_bytes()
    assert [json.loads(line)["row"] for line in errors.splitlines()] == [4, 11]
    manifest = json.loads(store.read_bytes(out + ".manifest.json"))
    info = store.stat(key)
    assert info is not None and store.same_version(manifest["input_version"], info.version)
    assert manifest["model"]["name"] == "cancer" and manifest["model"]["version"] == "1"
    assert manifest["rows_scored"] == 567 and manifest["rows_failed"] == 2

    # The same event again (Event Grid delivers at least once), and the blob trigger for the
    # same blob: no second run, the same bytes, one manifest.
    before = {k: store.stat(out + k) for k in OUTPUTS}

    def no_second_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a duplicate event scored the file again")

    monkeypatch.setattr(batch_module, "score_stream", no_second_run)
    call("upload_event", event)
    call("upload_blob", azure_app.input_stream(key))
    assert statuses(caplog) == ["duplicate", "duplicate"]
    assert {k: store.stat(out + k) for k in OUTPUTS} == before
    manifests = [i.key for i in store.list("predictions/") if i.key.endswith(".manifest.json")]
    assert manifests == [out + ".manifest.json"]
    monkeypatch.undo()

    # A new version of the blob is a new event, scored again; the old event is now stale.
    store.write_bytes(key, cancer_csv(data_dir, bad_rows=False))
    call("upload_event", event)
    call("upload_event", azure_app.blob_event(key))
    assert statuses(caplog) == ["stale", "scored"]
    assert json.loads(store.read_bytes(out + ".manifest.json"))["rows_failed"] == 0
    assert not store.exists(out + ".errors.jsonl")


def test_blob_trigger_scores(
    azure_app: AzureApp,
    cancer: ModelRegistry,
    demo_predictor: Predictor,
    data_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = azure_app.store
    key = "incoming/batch.csv"  # the default model (SKYSCORE_MODEL)
    data = cancer_csv(data_dir, bad_rows=False)
    store.write_bytes(key, data)
    stream = azure_app.input_stream(key)
    call("upload_blob", stream)
    assert statuses(caplog) == ["scored"]
    reference = local_reference(tmp_path, data, demo_predictor, "batch.csv")
    assert store.read_bytes("predictions/batch.predictions.csv") == reference.read_bytes()
    # the blob trigger of an older version (the host retried after a new upload) is stale
    store.write_bytes(key, data + data.split(b"\n", 1)[1])
    call("upload_blob", stream)
    assert statuses(caplog) == ["stale"]


def test_events_delivered_to_a_storage_queue(
    azure_app: AzureApp, cancer: ModelRegistry, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Event Grid can deliver to a queue: one event per message (Event Grid or CloudEvents
    schema); an array is accepted as well."""
    store = azure_app.store
    keys = [f"incoming/cancer/q{i}.csv" for i in range(3)]
    for key in keys:
        store.write_bytes(key, cancer_csv(data_dir, bad_rows=False))
    first = azure_app.blob_event(keys[0])
    grid = {
        "id": first.id,
        "topic": first.topic,
        "subject": first.subject,
        "eventType": first.event_type,
        "data": first.get_json(),
        "dataVersion": "",
        "metadataVersion": "1",
        "eventTime": "2026-12-01T00:00:00Z",
    }
    second = azure_app.blob_event(keys[1])
    cloud = {
        "specversion": "1.0",
        "id": second.id,
        "type": second.event_type,
        "source": second.topic,
        "subject": second.subject,
        "data": second.get_json(),
    }
    third = azure_app.blob_event(keys[2])
    array = [{**grid, "subject": third.subject, "data": third.get_json(), "id": third.id}]
    for body in (grid, cloud, array):
        azure_app.queue.send(json.dumps(body).encode())
    for message in azure_app.queue.receive(10):
        call("work", queue_message(message))
        azure_app.queue.ack(message)
    assert sorted(statuses(caplog)) == ["scored"] * 3
    assert all(store.exists(f"predictions/cancer/q{i}.predictions.csv") for i in range(3))


def test_reference_event_is_accepted(
    azure_app: AzureApp, cancer: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """The verbatim public event names another account's container: ignored, not an error."""
    import azure.functions as func
    from functions.azure.function_app import event_object, objects_created

    payload = reference_event("eventgrid-storage-blob-created.json")
    [item] = objects_created(payload)
    assert (item.container, item.name, item.version, item.size) == (
        "testcontainer",
        "file1.txt",
        "0x8D4E44A24ABE7F1",
        447,
    )
    for raw in payload:  # the host hands each event of the array to the function
        event = func.EventGridEvent(
            id=raw["id"],
            data=raw["data"],
            topic=raw["topic"],
            subject=raw["subject"],
            event_type=raw["eventType"],
            event_time=None,
            data_version=raw["dataVersion"],
        )
        call("upload_event", event)
    assert statuses(caplog) == ["ignored"]
    # another event type names nothing; a subject-less event falls back to data.url
    assert event_object("Microsoft.Storage.BlobDeleted", payload[0]["subject"], {}) is None
    fallback = event_object(
        payload[0]["eventType"], "", {"url": "https://a.blob.core.windows.net/c/x%20y.csv"}
    )
    assert fallback is not None and (fallback.container, fallback.name) == ("c", "x y.csv")


def test_blobs_outside_incoming_and_unusable_files(
    azure_app: AzureApp, cancer: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    store = azure_app.store
    store.write_bytes("predictions/cancer/x.predictions.csv", b"row\n")
    call("upload_event", azure_app.blob_event("predictions/cancer/x.predictions.csv"))
    store.write_bytes("incoming/cancer/columns.csv", b"a,b\n1,2\n")
    call("upload_event", azure_app.blob_event("incoming/cancer/columns.csv"))
    assert statuses(caplog) == ["ignored", "failed"]
    manifest = json.loads(
        store.read_bytes("predictions/cancer/columns.predictions.csv.manifest.json")
    )
    assert manifest["status"] == "failed" and manifest["error"]["status"] == 422


def test_a_redelivered_event_takes_its_own_claim_back(
    azure_app: AzureApp, cancer: ModelRegistry, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Owners: another delivery (another event id) stands aside while a claim is held; the
    redelivery of the event that holds it (Event Grid retries with the same id) takes it."""
    from skyscore.coordination import claims

    store = azure_app.store
    key = "incoming/cancer/claimed.csv"
    store.write_bytes(key, cancer_csv(data_dir))
    info = store.stat(key)
    assert info is not None
    model = f"cancer@{cancer.resolve('cancer')}"
    digest = batch_module.BatchScorer._digest(key, info.version, model)
    # the first delivery's attempt crashed, its heartbeat stopped a minute ago
    crashed = time.time() - 60
    claims.acquire(
        store, f"work/claims/{digest}.json", "eventgrid:first-delivery", clock=lambda: crashed
    )
    call("upload_event", azure_app.blob_event(key, event_id="another-event"))
    call("upload_event", azure_app.blob_event(key, event_id="first-delivery"))
    assert statuses(caplog) == ["in_progress", "scored"]
