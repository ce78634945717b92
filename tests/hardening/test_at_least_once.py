"""At-least-once delivery is safe (issue 18.3): the same upload event delivered 2-5 times, in
sequence and concurrently, to each deployment's real handler against its emulator gives exactly
one output and one manifest, byte-identical to what a single delivery gives; so does a queue
message delivered twice.

Deployments: the local runtime (the same file dropped into the inbox again, the same key
scored from several threads), AWS (the upload and queue Lambda handlers on moto), Azure
(``upload_event``, ``upload_blob`` and ``work`` on Azurite).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hardening_kit import (
    CONCURRENT,
    MODEL,
    OK_FOR_A_DUPLICATE,
    SEQUENTIAL,
    aws_account,
    azure_account,
    azure_function,
    cancer_rows,
    check_one_result,
    comparable,
    lambda_context,
    out_key,
    run_threads,
)

from skyscore.errors import Busy
from skyscore.training.train import TrainResult


def check_statuses(statuses: list[Any]) -> None:
    """One delivery scored; every other one stood aside; none raised."""
    errors = [s for s in statuses if isinstance(s, BaseException)]
    assert not errors, errors
    assert statuses.count("scored") == 1, statuses
    assert set(statuses) - {"scored"} <= OK_FOR_A_DUPLICATE, statuses


# --------------------------------------------------------------------------------------------
# local runtime
# --------------------------------------------------------------------------------------------


def _wait(predicate: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return found


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*")) if p.is_file()}


def test_local_inbox_same_file_dropped_again_and_same_key_scored_concurrently(
    demo_model: TrainResult, data_dir: Path, tmp_path: Path
) -> None:
    from skyscore.adapters.local import LocalBlobStore
    from skyscore.local.runtime import LocalRuntime
    from skyscore.model.registry import ModelRegistry

    home = tmp_path / "home"
    registry = ModelRegistry(LocalBlobStore(home), refresh_seconds=0)
    card = registry.register(demo_model.card, demo_model.onnx_bytes, name=MODEL)
    registry.promote(MODEL, card.version)
    table = cancer_rows(data_dir)
    staging = tmp_path / "staging.csv"
    staging.write_bytes(table)
    with LocalRuntime(
        home,
        port=0,
        default_model=MODEL,
        poll_seconds=0.05,
        registry=registry,
        log_to_stderr=False,
        retraining=False,
    ) as runtime:
        predictions = runtime.home.predictions / MODEL
        manifest = predictions / "clinic.predictions.csv.manifest.json"
        processed = runtime.home.root / "processed" / MODEL

        def drop() -> None:  # written elsewhere, renamed in: the documented way
            shutil.copyfile(staging, runtime.home.inbox / "clinic.csv.part")
            (runtime.home.inbox / "clinic.csv.part").rename(runtime.home.inbox / "clinic.csv")

        drop()
        _wait(manifest.exists, "the first drop's manifest")
        single = _snapshot(predictions)
        for copies in range(2, SEQUENTIAL + 2):  # the same file again, 2..4 deliveries in all
            drop()
            _wait(lambda n=copies: len(list(processed.iterdir())) == n, f"drop {copies} taken")
            assert _snapshot(predictions) == single, f"drop {copies} changed the outputs"
        assert not list(runtime.home.inbox.iterdir())

        # the same key scored by several workers at once (a second watcher, a manual run)
        key = f"processed/{MODEL}/concurrent.csv"
        (runtime.home.root / key).write_bytes(table)
        statuses = run_threads(
            CONCURRENT,
            lambda i: runtime.watcher.scorer.score_upload(key, owner=f"worker-{i}").status,
        )
        check_statuses(statuses)
        names = sorted(p.relative_to(runtime.home.root).as_posix() for p in predictions.iterdir())
        check_one_result(names, "concurrent.csv")
        check_one_result(names, "clinic.csv")
        output = predictions / "concurrent.predictions.csv"
        assert output.read_bytes() == single["clinic.predictions.csv"]
        assert comparable(output.with_name(output.name + ".manifest.json").read_bytes()) == (
            comparable(single["clinic.predictions.csv.manifest.json"])
        )


# --------------------------------------------------------------------------------------------
# AWS on moto
# --------------------------------------------------------------------------------------------


def _aws_upload(event: dict[str, Any], request_id: str | None = None) -> str:
    from functions.aws import upload

    answer = upload.handler(json.loads(json.dumps(event)), lambda_context(request_id))
    [result] = answer["results"]
    return str(result["status"])


def test_aws_upload_and_queue_redelivery(
    moto_url: str, demo_model: TrainResult, data_dir: Path, tmp_path: Path
) -> None:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from aws_moto import drain, sqs_event

    table = cancer_rows(data_dir)
    with aws_account(moto_url, tmp_path, demo_model) as aws:
        # one delivery: the reference
        single_event = aws.put(f"incoming/{MODEL}/single.csv", table)
        assert _aws_upload(single_event) == "scored"
        single_out = aws.read(out_key("single.csv"))
        single_manifest = aws.read(out_key("single.csv") + ".manifest.json")

        # the same S3 notification again and again (new invocations each time)
        event = aws.put(f"incoming/{MODEL}/sequential.csv", table)
        assert _aws_upload(event) == "scored"
        manifest_key = out_key("sequential.csv") + ".manifest.json"
        first_manifest = aws.read(manifest_key)
        for _ in range(SEQUENTIAL):
            assert _aws_upload(event) == "duplicate"
            assert aws.read(manifest_key) == first_manifest  # untouched, byte for byte
        # and an async retry of the invocation that scored it (same request id)
        assert _aws_upload(event, "retry-of-the-first") == "duplicate"

        # the same notification to several concurrent invocations
        event = aws.put(f"incoming/{MODEL}/concurrent.csv", table)
        check_statuses(run_threads(CONCURRENT, lambda i: _aws_upload(event)))

        # a work-queue message received twice (its visibility timeout ran out), in sequence,
        # then one delivered to concurrent pollers
        from functions.aws import queue

        for name in ("queued.csv", "queued-concurrent.csv"):
            aws.s3.put_object(Bucket=aws.bucket, Key=f"incoming/{MODEL}/{name}", Body=table)
            aws.sqs.send_message(
                QueueUrl=aws.queue_url,
                MessageBody=json.dumps({"kind": "object", "key": f"incoming/{MODEL}/{name}"}),
            )
        messages = drain(aws.sqs, aws.queue_url)
        assert len(messages) == 2
        sequential, concurrent = sorted(messages, key=lambda m: "concurrent" in m["Body"])
        batch = sqs_event([sequential], aws.queue_arn)
        for _ in range(2):
            answer = queue.handler(json.loads(json.dumps(batch)), lambda_context())
            assert answer == {"batchItemFailures": []}
        # copies of one message (one message id) to concurrent pollers: one scores, a copy that
        # overlaps it is Busy (a batch item failure: SQS redelivers it), and its redelivery is a
        # duplicate; the outputs are a single run's
        [raw] = sqs_event([concurrent], aws.queue_arn)["Records"]
        statuses = run_threads(
            CONCURRENT, lambda i: queue.record_handler(SQSRecord(dict(raw)))["status"]
        )
        busy = [s for s in statuses if isinstance(s, Busy)]
        check_statuses([s for s in statuses if not isinstance(s, Busy)])
        for _ in busy:
            assert queue.record_handler(SQSRecord(dict(raw)))["status"] == "duplicate"
        answer = queue.handler(sqs_event([concurrent], aws.queue_arn), lambda_context())
        assert answer == {"batchItemFailures": []}

        keys = aws.keys(f"predictions/{MODEL}/")
        for name in ("single.csv", "sequential.csv", "concurrent.csv", "queued.csv"):
            check_one_result(keys, name)
            assert aws.read(out_key(name)) == single_out, name
            assert comparable(aws.read(out_key(name) + ".manifest.json")) == comparable(
                single_manifest
            )
        check_one_result(keys, "queued-concurrent.csv")
        assert aws.read(out_key("queued-concurrent.csv")) == single_out


# --------------------------------------------------------------------------------------------
# Azure on Azurite
# --------------------------------------------------------------------------------------------


def test_azure_event_grid_blob_trigger_and_queue_redelivery(
    azurite_connection: str, demo_model: TrainResult, data_dir: Path
) -> None:
    from azure.functions.queue import QueueMessage

    table = cancer_rows(data_dir)
    upload_event = azure_function("upload_event")
    upload_blob = azure_function("upload_blob")
    work = azure_function("work")
    with azure_account(azurite_connection, demo_model) as azure:
        from skyscore.runtime.wiring import reset_cores

        def scored(name: str) -> str:
            """The status the core gives ``name`` now (what a further delivery would do)."""
            from functions.azure import function_app

            key = f"incoming/{MODEL}/{name}"
            item = function_app.event_object(
                "Microsoft.Storage.BlobCreated",
                f"/blobServices/default/containers/{azure.container}/blobs/{key}",
                {"eTag": azure.store.stat(key).version},
            )
            assert item is not None
            return str(function_app.core().object_created(item, owner="probe").status)

        reset_cores()
        key = f"incoming/{MODEL}/single.csv"
        azure.store.write_bytes(key, table)
        upload_event(azure.blob_event(key))
        single_out = azure.store.read_bytes(out_key("single.csv"))
        single_manifest = azure.store.read_bytes(out_key("single.csv") + ".manifest.json")

        # Event Grid redelivers the same event (same id), and sends it twice (new ids)
        key = f"incoming/{MODEL}/sequential.csv"
        azure.store.write_bytes(key, table)
        event = azure.blob_event(key, event_id="evt-1")
        upload_event(event)
        first_manifest = azure.store.read_bytes(out_key("sequential.csv") + ".manifest.json")
        for again in (event, azure.blob_event(key), azure.blob_event(key, event_id="evt-1")):
            upload_event(again)
            assert azure.store.read_bytes(out_key("sequential.csv") + ".manifest.json") == (
                first_manifest
            )
        assert scored("sequential.csv") == "duplicate"

        # Event Grid and the blob trigger fire for one blob, several instances at once
        key = f"incoming/{MODEL}/concurrent.csv"
        azure.store.write_bytes(key, table)
        events = [azure.blob_event(key) for _ in range(3)]
        streams = [azure.input_stream(key) for _ in range(2)]
        deliveries = [lambda e=e: upload_event(e) for e in events] + [
            lambda s=s: upload_blob(s) for s in streams
        ]
        failures = [r for r in run_threads(len(deliveries), lambda i: deliveries[i]()) if r]
        assert not failures, failures
        assert scored("concurrent.csv") == "duplicate"

        # a Storage Queue message delivered twice (its visibility timeout ran out)
        key = f"incoming/{MODEL}/queued.csv"
        azure.store.write_bytes(key, table)
        body = json.dumps({"kind": "object", "key": key}).encode()
        for dequeue_count in (1, 2):
            work(QueueMessage(id="msg-1", body=body, dequeue_count=dequeue_count, pop_receipt="r"))
        key = f"incoming/{MODEL}/queued-concurrent.csv"
        azure.store.write_bytes(key, table)
        body = json.dumps({"kind": "object", "key": key}).encode()
        # copies of two message ids at once: a copy that overlaps its own id's live attempt is
        # Busy (the host makes it visible again); the redelivery finds the work done
        results = run_threads(
            CONCURRENT,
            lambda i: work(QueueMessage(id=f"msg-{i % 2}", body=body, dequeue_count=1)),
        )
        busy = [r for r in results if isinstance(r, Busy)]
        assert not [r for r in results if r and not isinstance(r, Busy)], results
        for i, _ in enumerate(busy):
            work(QueueMessage(id=f"msg-{i % 2}", body=body, dequeue_count=2))

        keys = azure.keys(f"predictions/{MODEL}/")
        for name in (
            "single.csv",
            "sequential.csv",
            "concurrent.csv",
            "queued.csv",
            "queued-concurrent.csv",
        ):
            check_one_result(keys, name)
            assert azure.store.read_bytes(out_key(name)) == single_out, name
            manifest = azure.store.read_bytes(out_key(name) + ".manifest.json")
            assert comparable(manifest) == comparable(single_manifest), name
            assert scored(name) == "duplicate", name


@pytest.fixture(autouse=True)
def _no_fanout(monkeypatch: pytest.MonkeyPatch) -> None:
    """These inputs are small: one run each, never split (fan-out has its own tests)."""
    monkeypatch.delenv("SKYSCORE_FANOUT_BYTES", raising=False)


def test_copies_of_one_message_delivered_concurrently_are_scored_once(
    demo_model: TrainResult, data_dir: Path, tmp_path: Path
) -> None:
    """SQS standard queues and Pub/Sub may hand two consumers copies of one message at once;
    both carry the message id the handlers use as the claim owner. One copy scores; every other
    is a duplicate or Busy (retryable: not acknowledged while the first may still fail), and
    the redelivery of a Busy copy is a duplicate. Metrics and the drift hook fire once."""
    from skyscore.adapters.local import LocalBlobStore
    from skyscore.batch.scorer import BatchScorer
    from skyscore.model.registry import ModelRegistry
    from skyscore.monitoring.metrics import InMemoryMetrics

    store = LocalBlobStore(tmp_path / "store")
    registry = ModelRegistry(store, refresh_seconds=0)
    card = registry.register(demo_model.card, demo_model.onnx_bytes, name=MODEL)
    registry.promote(MODEL, card.version)
    key = f"incoming/{MODEL}/copies.csv"
    store.write_bytes(key, cancer_rows(data_dir, repeat=4))
    metrics = InMemoryMetrics()
    drift_calls: list[str] = []
    scorer = BatchScorer(
        store, registry, metrics=metrics, on_drift=lambda *args: drift_calls.append(args[0])
    )
    body = json.dumps({"kind": "object", "key": key}).encode()
    statuses = run_threads(
        CONCURRENT, lambda i: scorer.handle_message(body, owner="message-id-1").status
    )
    busy = [s for s in statuses if isinstance(s, Busy)]
    assert busy, f"no copy overlapped the first one: the test showed nothing ({statuses})"
    check_statuses([s for s in statuses if not isinstance(s, Busy)])
    assert all(error.retryable and error.status == 503 for error in busy)
    for _ in busy:  # each Busy copy comes back after its visibility timeout
        assert scorer.handle_message(body, owner="message-id-1").status == "duplicate"
    assert metrics.values("batches", model=MODEL) == [1]
    assert len(drift_calls) <= 1
