"""Queue scoring on Azurite: messages in the host's base64 encoding reach the ``work`` function
as ``QueueMessage``s; a failing message is retried and lands in ``<queue>-poison`` after
host.json's ``maxDequeueCount``; a large upload fans out through the queue and assembles."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import pytest
from azfunc import MAX_DEQUEUE, AzureApp, call, queue_message

from demo_table import cancer_csv
from skyscore.adapters.azure import AzureQueue
from skyscore.batch.pipeline import score_path
from skyscore.errors import SkyscoreError
from skyscore.model.predictor import Predictor
from skyscore.model.registry import ModelRegistry
from skyscore.training.train import TrainResult


def run_host(queue: AzureQueue, *, rounds: int = 50, duplicate_first: bool = False) -> list[str]:
    """Play the Functions host's queue listener: receive (visibility timeout), invoke ``work``,
    delete on success, make visible again on failure; messages delivered more than
    ``maxDequeueCount`` times go to ``<queue>-poison``. Returns the outcomes."""
    outcomes: list[str] = []
    duplicated = False
    for _ in range(rounds):
        messages = queue.receive(16, visibility_timeout=60)
        if not messages:
            break
        for message in messages:
            try:
                call("work", queue_message(message))
                if duplicate_first and not duplicated:
                    duplicated = True  # at-least-once: the same message delivered twice
                    call("work", queue_message(message))
            except SkyscoreError as error:
                outcomes.append(f"failed {error.status}")
                queue.release(message)
                continue
            outcomes.append("ok")
            queue.ack(message)
    return outcomes


def test_inline_records_and_object_pointers(
    azure_app: AzureApp, cancer: ModelRegistry, demo_model: TrainResult, data_dir: Path
) -> None:
    from skyscore.training.datasets import breast_cancer_frame

    instances = breast_cancer_frame().drop(columns=["diagnosis"]).head(5).to_dict(orient="records")
    azure_app.queue.send(
        json.dumps(
            {"kind": "records", "model": "cancer", "instances": instances, "id": "req-1"}
        ).encode()
    )
    azure_app.store.write_bytes("incoming/cancer/pointed.csv", cancer_csv(data_dir, bad_rows=False))
    azure_app.queue.send(
        json.dumps({"kind": "object", "key": "incoming/cancer/pointed.csv"}).encode()
    )
    raw = azure_app.azurite.queue_service().get_queue_client(azure_app.queue_name).peek_messages(2)
    assert json.loads(base64.b64decode(raw[0].content))["kind"] == "records"  # the host's base64
    assert run_host(azure_app.queue) == ["ok", "ok"]
    store = azure_app.store
    records = store.read_bytes("predictions/queue/cancer/req-1.jsonl").splitlines()
    assert len(records) == 5, records
    assert json.loads(records[0])["patient_id"] == "P0000", records[0]
    assert store.exists("predictions/cancer/pointed.predictions.csv")


def test_poison_messages_end_in_the_poison_queue(
    azure_app: AzureApp, cancer: ModelRegistry
) -> None:
    azure_app.queue.send(b'{"kind": "mystery"}')
    azure_app.queue.send(b"not json at all")
    outcomes = run_host(azure_app.queue)
    assert outcomes == ["failed 400"] * (2 * MAX_DEQUEUE)  # each tried maxDequeueCount times
    assert azure_app.queue.receive() == []
    assert azure_app.queue.dead_letter is not None
    poisoned = sorted(m.body for m in azure_app.queue.dead_letter.receive(10))
    assert poisoned == sorted([b'{"kind": "mystery"}', b"not json at all"])


def test_function_raises_so_the_host_retries(azure_app: AzureApp, cancer: ModelRegistry) -> None:
    import azure.functions as func

    with pytest.raises(SkyscoreError) as raised:
        call("work", func.QueueMessage(id="m-1", body=b'{"kind": "mystery"}'))
    assert raised.value.status == 400


@pytest.mark.parametrize("fmt", ["csv"])
def test_large_upload_fans_out_through_the_queue_and_assembles(
    azure_app: AzureApp,
    hgb_model: TrainResult,
    hgb_predictor: Predictor,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
) -> None:
    from skyscore.runtime.wiring import reset_cores

    registry = azure_app.registry()
    card = registry.register(hgb_model.card, hgb_model.onnx_bytes, name="fraud")
    registry.promote("fraud", card.version)
    text = (data_dir / "synthetic.csv").read_text()
    lines = text.splitlines()
    lines[7] = lines[7].replace(lines[7].split(",")[1], "oops", 1)  # one bad row
    data = ("\n".join(lines) + "\n").encode()
    monkeypatch.setenv("SKYSCORE_FANOUT_BYTES", str(len(data) // 3))
    monkeypatch.setenv("SKYSCORE_PART_BYTES", str(len(data) // 7))
    reset_cores()
    key = f"incoming/fraud/big.{fmt}"
    azure_app.store.write_bytes(key, data)
    event = azure_app.blob_event(key)
    call("upload_event", event)
    call("upload_event", event)  # a duplicate does not split the file twice
    outcomes = run_host(azure_app.queue, duplicate_first=True)
    assert len(outcomes) >= 5 and set(outcomes) == {"ok"}
    source = tmp_path / f"big.{fmt}"
    source.write_bytes(data)
    reference = tmp_path / f"big.predictions.{fmt}"
    score_path(source, reference, hgb_predictor)
    out = f"predictions/fraud/big.predictions.{fmt}"
    assert azure_app.store.read_bytes(out) == reference.read_bytes()
    errors = azure_app.store.read_bytes(out + ".errors.jsonl")
    assert errors == reference.with_name(reference.name + ".errors.jsonl").read_bytes()
    manifest = json.loads(azure_app.store.read_bytes(out + ".manifest.json"))
    assert manifest["fanout"]["parts"] >= 5
    rows = list(csv.DictReader(io.StringIO(text)))
    assert manifest["rows_read"] == len(rows)
