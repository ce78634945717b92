"""Upload scoring and queue work on running functions-framework servers: Eventarc's storage
``finalized`` CloudEvent in binary and structured mode, Pub/Sub ``messagePublished`` events
(inline records, object pointers, storage notifications, fan-out parts through the real work
topic), the reference payloads, and replies that make Pub/Sub retry only when it can help."""

from __future__ import annotations

import json
from pathlib import Path

from gcpfunc import (
    GcpApp,
    logged,
    published,
    reference_event,
    statuses,
    wait_until,
)

from demo_table import cancer_csv
from skyscore.batch.pipeline import score_path
from skyscore.model.predictor import Predictor
from skyscore.model.registry import ModelRegistry

OUTPUTS = ("", ".errors.jsonl", ".manifest.json")


def local_reference(tmp_path: Path, data: bytes, predictor: Predictor, name: str) -> Path:
    source = tmp_path / name
    source.write_bytes(data)
    target = tmp_path / f"{source.stem}.predictions{source.suffix}"
    score_path(source, target, predictor)
    return target


def test_finalized_events_score_once_in_either_content_mode(
    gcp_app: GcpApp,
    cancer: ModelRegistry,
    demo_predictor: Predictor,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    store, upload = gcp_app.store, gcp_app.server("upload")
    key = "incoming/cancer/clinic A+B 2026.csv"
    data = cancer_csv(data_dir)
    store.write_bytes(key, data)
    event = gcp_app.finalized(key)
    answer = upload.post_event(event, mode="binary")
    assert answer.status == 200, answer.body[:300]
    assert statuses(upload) == ["scored"]

    out = "predictions/cancer/clinic A+B 2026.predictions.csv"
    reference = local_reference(tmp_path, data, demo_predictor, "clinic.csv")
    assert store.read_bytes(out) == reference.read_bytes()
    errors = store.read_bytes(out + ".errors.jsonl")
    assert errors == reference.with_name(reference.name + ".errors.jsonl").read_bytes()
    manifest = json.loads(store.read_bytes(out + ".manifest.json"))
    info = store.stat(key)
    assert info is not None and manifest["input_version"] == info.version
    assert (manifest["rows_scored"], manifest["rows_failed"]) == (567, 2)

    # The same event again in structured mode with the generation and size as JSON numbers
    # (older payloads): a duplicate, no second run, the same bytes.
    before = {k: store.stat(out + k) for k in OUTPUTS}
    again = dict(event)
    again["data"] = {**event["data"], "generation": int(info.version), "size": info.size}
    assert upload.post_event(again, mode="structured").status == 200
    assert upload.post_event(event, mode="binary").status == 200  # Eventarc redelivers
    assert statuses(upload) == ["duplicate", "duplicate"]
    assert {k: store.stat(out + k) for k in OUTPUTS} == before

    # A new generation is a new event, scored again; the old event is now stale.
    store.write_bytes(key, cancer_csv(data_dir, bad_rows=False))
    upload.post_event(event)
    upload.post_event(gcp_app.finalized(key))
    assert statuses(upload) == ["stale", "scored"]
    assert json.loads(store.read_bytes(out + ".manifest.json"))["rows_failed"] == 0
    assert not store.exists(out + ".errors.jsonl")


def test_reference_payloads_are_accepted(gcp_app: GcpApp, cancer: ModelRegistry) -> None:
    from functions.gcp.main import pubsub_message, storage_object

    # Eventarc's verbatim event names another project's bucket: ignored, acknowledged
    upload = gcp_app.server("upload")
    event = reference_event("storage-object-finalized-cloudevent.json")
    assert upload.post_event(event, mode="structured").status == 200
    assert upload.post_event(event, mode="binary").status == 200
    assert statuses(upload) == ["ignored", "ignored"]
    found = storage_object(event["data"])
    assert found is not None
    assert (found.container, found.name, found.version, found.size) == (
        "some-bucket",
        "folder/Test.cs",
        "1587627537231057",
        352,
    )
    # int64 fields as JSON numbers (the other public sample)
    complex_ = storage_object(reference_event("storage-object-data-complex.json"))
    assert complex_ is not None and (complex_.version, complex_.size) == ("96883251", 0)
    body, attributes, message_id = pubsub_message(
        reference_event("pubsub-message-published-data.json")
    )
    assert (body, attributes, message_id) == (
        b"test message 3",
        {"attr1": "attr1-value"},
        "message-id",
    )
    # the verbatim Pub/Sub event: not a work message, so no retry can help: acknowledged
    # (2xx), logged, and kept on the dead-letter topic
    dead = gcp_app.pubsub.new_subscription(gcp_app.dead_topic)
    work = gcp_app.server("work")
    answer = work.post_event(reference_event("pubsub-message-published-cloudevent.json"))
    assert answer.status == 200, answer.body[:300]
    assert any("rejected" in line for line in work.new_lines())
    subscriber = gcp_app.pubsub.subscriber()
    pulled = wait_until(
        lambda: (
            subscriber.pull(
                request={"subscription": gcp_app.pubsub.subscription_path(dead), "max_messages": 5},
                timeout=5,
            ).received_messages
        ),
        what="the dead-letter copy",
    )
    assert pulled[0].message.data == b"test message 3"
    # not a CloudEvent at all: the framework answers 400
    plain = work.request("POST", "/", b'{"a": 1}', {"content-type": "application/json"})
    assert plain.status == 400


def test_work_messages(
    gcp_app: GcpApp, cancer: ModelRegistry, data_dir: Path, demo_predictor: Predictor
) -> None:
    store, work = gcp_app.store, gcp_app.server("work")
    # inline records
    from skyscore.training.datasets import breast_cancer_frame

    rows = breast_cancer_frame().drop(columns=["diagnosis"]).head(4).to_dict(orient="records")
    message = {"kind": "records", "model": "cancer", "instances": rows, "id": "req-1"}
    answer = work.post_event(published(json.dumps(message).encode(), {"source": "test"}))
    assert answer.status == 200, answer.body[:300]
    out = store.read_bytes("predictions/queue/cancer/req-1.jsonl")
    assert len(out.splitlines()) == 4
    # an object pointer
    store.write_bytes("incoming/cancer/pointed.csv", cancer_csv(data_dir, bad_rows=False))
    pointer = {"kind": "object", "key": "incoming/cancer/pointed.csv"}
    assert work.post_event(published(json.dumps(pointer).encode())).status == 200
    assert store.exists("predictions/cancer/pointed.predictions.csv")
    # a Cloud Storage notification delivered to the work topic
    store.write_bytes("incoming/cancer/notified.csv", cancer_csv(data_dir, bad_rows=False))
    info = store.stat("incoming/cancer/notified.csv")
    assert info is not None
    notification = published(
        json.dumps({"bucket": gcp_app.bucket, "name": "incoming/cancer/notified.csv"}).encode(),
        {
            "eventType": "OBJECT_FINALIZE",
            "payloadFormat": "JSON_API_V1",
            "bucketId": gcp_app.bucket,
            "objectId": "incoming/cancer/notified.csv",
            "objectGeneration": info.version,
        },
    )
    assert work.post_event(notification, mode="structured").status == 200
    assert [s["status"] for s in logged(work.new_lines(), "upload")] == ["scored"]
    # malformed messages: acknowledged, never retried (the reply is 2xx)
    bad_base64 = published(b"")
    bad_base64["data"]["message"]["data"] = "not base64!"
    for event in (published(b"{nope"), published(b'{"kind": "what"}'), bad_base64):
        assert work.post_event(event).status == 200


def test_a_failure_that_a_retry_can_help_is_answered_with_an_error(
    gcp_app: GcpApp, cancer: ModelRegistry, data_dir: Path
) -> None:
    """The production alias is unreadable (a 5xx problem, an operator's to fix): the reply is
    500, so Pub/Sub redelivers it (and, after max_delivery_attempts, dead-letters it)."""
    gcp_app.store.write_bytes("incoming/cancer/x.csv", cancer_csv(data_dir, bad_rows=False))
    gcp_app.store.write_bytes("models/cancer/aliases/production.json", b"{corrupt")
    work = gcp_app.server("work")
    pointer = {"kind": "object", "key": "incoming/cancer/x.csv"}
    assert work.post_event(published(json.dumps(pointer).encode())).status == 500
    assert not gcp_app.store.exists("predictions/cancer/x.predictions.csv.manifest.json")


def test_a_large_upload_fans_out_through_the_work_topic(
    gcp_app: GcpApp,
    cancer: ModelRegistry,
    demo_predictor: Predictor,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """Parts are published to the real work topic; a push subscription delivers them to the
    running ``work`` function; the last part assembles the output, equal to a local run."""
    gcp_app.env.update(SKYSCORE_FANOUT_BYTES="20000", SKYSCORE_PART_BYTES="20000")
    work = gcp_app.server("work")
    gcp_app.pubsub.new_subscription(gcp_app.work_topic, push_endpoint=work.url + "/")
    upload = gcp_app.server("upload")
    key = "incoming/cancer/large.csv"
    data = cancer_csv(data_dir)
    gcp_app.store.write_bytes(key, data)
    assert upload.post_event(gcp_app.finalized(key)).status == 200
    assert statuses(upload) == ["fanned_out"]
    out = "predictions/cancer/large.predictions.csv"
    wait_until(lambda: gcp_app.store.exists(out + ".manifest.json"), 60, "the assembled output")
    reference = local_reference(tmp_path, data, demo_predictor, "large.csv")
    assert gcp_app.store.read_bytes(out) == reference.read_bytes()
    manifest = json.loads(gcp_app.store.read_bytes(out + ".manifest.json"))
    assert manifest["rows_scored"] == 567 and manifest.get("parts", 2) > 1


def test_storage_notification_payload_decodes(gcp_app: GcpApp) -> None:
    from functions.gcp.main import notification_object

    attributes = {
        "eventType": "OBJECT_FINALIZE",
        "payloadFormat": "NONE",
        "bucketId": "b",
        "objectId": "incoming/x.csv",
        "objectGeneration": "17",
    }
    found = notification_object(b"", attributes)
    assert found is not None and (found.container, found.name, found.version) == (
        "b",
        "incoming/x.csv",
        "17",
    )
    assert notification_object(b"", {**attributes, "eventType": "OBJECT_DELETE"}) is None
