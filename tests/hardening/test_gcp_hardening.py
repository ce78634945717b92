"""Hardening on Google Cloud (issue 18.3, 18.4, 18.5, 18.7): the functions in
``functions/gcp/main.py`` on running functions-framework servers (and called in-process),
against fake-gcs-server and the Pub/Sub emulator.

* At-least-once: the same storage ``finalized`` CloudEvent delivered 2-5 times in sequence and
  at once (threads posting to two running ``upload`` servers, and direct calls in this
  process), and the same Pub/Sub ``messagePublished`` work message twice and at once → one
  output and one manifest, byte-identical to a single delivery's.
* Faults: the storage endpoint cut in the middle of a large file (reading the input or
  writing the output; an outage or a blip) behind a cutting proxy in front of a
  fake-gcs-server of the test's own → no partial output that looks complete, and the retry
  (or the SDK's own resumed download) gives the whole file. A tampered model is refused while
  the ``http`` function keeps serving production.
* Load: the ``http`` function's server under a bounded loopback load: zero errors, p50/p99 and
  throughput printed, the server's memory flat.
* Secrets: the metadata server's bearer token (what Vertex AI is called with) never appears
  in the logs of an end-to-end run: upload, HTTP prediction, alert-triggered retrain — in the
  servers' logs, and at DEBUG in this process.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bench.load import demo_body, run_load
from gcpfunc import FunctionServer, GcpApp, function_env, logged, published, vertex_fake
from hardening_kit import (
    CONCURRENT,
    MODEL,
    OK_FOR_A_DUPLICATE,
    SEQUENTIAL,
    FaultProxy,
    cancer_rows,
    check_one_result,
    comparable,
    fake_gcs_behind,
    leaks,
    looks_complete,
    out_key,
    run_threads,
    tree_rss_bytes,
)

from skyscore.errors import Busy, IntegrityError
from skyscore.model.registry import ModelRegistry
from skyscore.training.train import TrainResult

JSON = {"content-type": "application/json"}


def all_at_once(calls: list[Callable[..., Any]]) -> list[Any]:
    """Each call in a thread of its own, released together; results in order."""
    return run_threads(len(calls), lambda i: calls[i]())


def keys_under(app: GcpApp, prefix: str) -> list[str]:
    return sorted(info.key for info in app.store.list(prefix))


def upload_statuses(lines: list[str]) -> list[str]:
    return [str(item["status"]) for item in logged(lines, "upload")]


def direct_statuses(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The upload results the functions called in this process logged (then forgotten)."""
    lines = [f"{r.name} {r.getMessage()}" for r in caplog.records if r.name == "skyscore.gcp"]
    caplog.clear()
    return upload_statuses(lines)


def message_statuses(lines: list[str]) -> list[str]:
    """``message <id>: <status> <detail>`` lines of the ``work`` function."""
    found = []
    for line in lines:
        _, sep, rest = line.partition("skyscore.gcp message ")
        if sep and ": " in rest:
            found.append(rest.split(": ", 1)[1].split(" ", 1)[0])
    return found


@pytest.fixture
def in_process(gcp_deployment: GcpApp, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``functions.gcp.main`` with this process's environment set as the servers' is, and a
    fresh core: its functions can be called directly, as the framework calls them."""
    from skyscore.runtime.wiring import reset_cores

    for name in list(os.environ):
        if name.startswith(("SKYSCORE_", "GOOGLE_")):
            monkeypatch.delenv(name)
    for name, value in gcp_deployment.env.items():
        if name.startswith(("SKYSCORE_", "GCE_", "STORAGE_", "PUBSUB_", "CLOUDSDK_")):
            monkeypatch.setenv(name, value)
    reset_cores()
    from functions.gcp import main

    yield main
    reset_cores()


def cloud_event(event: dict[str, Any]) -> Any:
    """The CloudEvent object functions-framework hands a function."""
    from cloudevents.http import CloudEvent

    return CloudEvent({k: v for k, v in event.items() if k != "data"}, event.get("data"))


# --------------------------------------------------------------------------------------------
# 18.3 at-least-once
# --------------------------------------------------------------------------------------------


def test_gcp_finalized_event_and_work_message_redelivered(
    gcp_deployment: GcpApp,
    in_process: Any,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = gcp_deployment
    caplog.set_level(logging.INFO, logger="skyscore.gcp")
    table = cancer_rows(data_dir)
    upload = app.server("upload")
    second = FunctionServer("upload", app.env)  # another instance of the same function
    app.servers["upload-2"] = second
    work = app.server("work")

    def put(name: str) -> dict[str, Any]:
        key = f"incoming/{MODEL}/{name}"
        app.store.write_bytes(key, table)
        event: dict[str, Any] = app.finalized(key)
        return event

    # one delivery: the reference
    assert upload.post_event(put("single.csv")).status == 200
    assert upload_statuses(upload.new_lines()) == ["scored"]
    single_out = app.store.read_bytes(out_key("single.csv"))
    single_manifest = app.store.read_bytes(out_key("single.csv") + ".manifest.json")

    # Eventarc redelivers the same event (same id) 1 + SEQUENTIAL times, in either mode, and
    # a direct call gets it once more
    event = put("sequential.csv")
    manifest_key = out_key("sequential.csv") + ".manifest.json"
    assert upload.post_event(event).status == 200
    first_manifest = app.store.read_bytes(manifest_key)
    for copy_number in range(SEQUENTIAL):
        mode = "structured" if copy_number % 2 else "binary"
        assert upload.post_event(event, mode=mode).status == 200
        assert app.store.read_bytes(manifest_key) == first_manifest  # byte for byte
    in_process.upload(cloud_event(event))
    assert upload_statuses(upload.new_lines()) == ["scored"] + ["duplicate"] * SEQUENTIAL
    assert direct_statuses(caplog) == ["duplicate"]

    # one object's event to two instances and this process at once: the same event (same
    # id) and fresh ids (the trigger sent it again)
    for name, same_id in (("concurrent.csv", False), ("concurrent-same-id.csv", True)):
        event = put(name)
        events = [
            event if same_id else {**event, "id": str(uuid.uuid4())} for _ in range(CONCURRENT)
        ]
        deliveries: list[Callable[..., Any]] = [
            lambda e=events[0]: upload.post_event(e).status,
            lambda e=events[1]: upload.post_event(e, mode="structured").status,
            lambda e=events[2]: second.post_event(e).status,
            lambda e=events[3]: second.post_event(e).status,
            lambda e=events[4]: in_process.upload(cloud_event(e)) or 200,
        ]
        direct_statuses(caplog)
        replies = all_at_once(deliveries)
        # a copy that overlaps the live attempt of its own event id is Busy: a 500 (or the
        # exception, in process), so Eventarc delivers it again; the redelivery is a duplicate
        busy = [r for r in replies if r != 200]
        if same_id:
            assert all(r == 500 or isinstance(r, Busy) for r in busy), replies
            for _ in busy:
                assert upload.post_event(event).status == 200
        else:
            assert busy == [], replies
        found = (
            upload_statuses(upload.new_lines())
            + upload_statuses(second.new_lines())
            + direct_statuses(caplog)
        )
        assert len(found) == CONCURRENT, found
        assert set(found) - {"scored"} <= OK_FOR_A_DUPLICATE, found
        assert found.count("scored") == 1, found  # one claim owner or one live attempt

    # a Pub/Sub work message delivered twice (no ack in time), then copies to concurrent
    # instances; the same for a storage notification on the work topic
    for name in ("queued.csv", "queued-concurrent.csv"):
        app.store.write_bytes(f"incoming/{MODEL}/{name}", table)
    pointer = {"kind": "object", "key": f"incoming/{MODEL}/queued.csv"}
    message = published(json.dumps(pointer).encode(), message_id="1000001")
    for _ in range(2):
        assert work.post_event(message).status == 200
    assert message_statuses(work.new_lines()) == ["scored", "duplicate"]
    pointer = {"kind": "object", "key": f"incoming/{MODEL}/queued-concurrent.csv"}
    message = published(json.dumps(pointer).encode(), message_id="1000002")
    replies = run_threads(CONCURRENT, lambda i: work.post_event(message).status)
    assert 200 in replies and set(replies) <= {200, 500}, replies  # 500: Busy, redelivered
    for _ in range(replies.count(500)):
        assert work.post_event(message).status == 200
    assert work.post_event(message).status == 200  # and once more, after they all answered
    assert message_statuses(work.new_lines())[-1] == "duplicate"

    key = f"incoming/{MODEL}/notified.csv"
    app.store.write_bytes(key, table)
    info = app.store.stat(key)
    assert info is not None
    notification = published(
        json.dumps({"bucket": app.bucket, "name": key, "size": str(info.size)}).encode(),
        {
            "eventType": "OBJECT_FINALIZE",
            "payloadFormat": "JSON_API_V1",
            "bucketId": app.bucket,
            "objectId": key,
            "objectGeneration": info.version,
        },
        message_id="1000003",
    )
    assert [work.post_event(notification).status for _ in range(2)] == [200, 200]
    assert upload_statuses(work.new_lines()) == ["scored", "duplicate"]

    keys = keys_under(app, f"predictions/{MODEL}/")
    names = [
        "single.csv",
        "sequential.csv",
        "concurrent.csv",
        "concurrent-same-id.csv",
        "queued.csv",
        "queued-concurrent.csv",
        "notified.csv",
    ]
    for name in names:
        check_one_result(keys, name)
        assert app.store.read_bytes(out_key(name)) == single_out, name
        manifest = app.store.read_bytes(out_key(name) + ".manifest.json")
        assert comparable(manifest) == comparable(single_manifest), name
    print(
        f"GCP at-least-once: {len(names)} inputs, "
        f"{1 + 1 + SEQUENTIAL + 1 + 2 * CONCURRENT + 2 + CONCURRENT + 1 + 2} deliveries, "
        "one output and one manifest each, byte-identical"
    )


# --------------------------------------------------------------------------------------------
# 18.4 faults
# --------------------------------------------------------------------------------------------

REPEAT = 40  # ~5.7 MB, ~22,800 rows: several MB of transfer to cut into
CHUNK = 256 << 10  # ranged reads and resumable-upload chunks of 256 KiB: many requests


@pytest.fixture(scope="module")
def gcs_behind_proxy() -> Iterator[tuple[Any, FaultProxy]]:
    """A fake-gcs-server of this module's own behind a cutting proxy (its upload sessions and
    media links name the proxy, so nothing the function sends goes around it)."""
    proxy = FaultProxy(0).start()
    try:
        with fake_gcs_behind(proxy) as gcs:
            yield gcs, proxy
    finally:
        proxy.stop()


@pytest.mark.parametrize(
    ("direction", "after", "back_after"),
    [
        ("down", 2_000_000, 1.5),
        ("down", 2_000_000, 0.05),
        ("up", 300_000, 1.5),
        ("up", 300_000, 0.05),
    ],
    ids=[
        "outage-while-reading-the-input",
        "blip-while-reading-the-input",
        "outage-while-writing-the-output",
        "blip-while-writing-the-output",
    ],
)
def test_gcp_storage_cut_mid_file_fails_cleanly_and_the_retry_is_complete(
    gcs_behind_proxy: tuple[Any, FaultProxy],
    demo_model: TrainResult,
    data_dir: Path,
    direction: str,
    after: int,
    back_after: float,
) -> None:
    """The ``upload`` function on a server whose ``STORAGE_EMULATOR_HOST`` is the proxy.

    The storage SDK retries a failed read for up to 120 s (its default deadline), resuming a
    download from the last byte it received, so an outage of 1.5 s while reading is ridden
    through: the function scores the whole file at once. Writing the output is not retried by
    the SDK (an unconditional upload, or our resumable session's chunks): the invocation fails
    (500, so Eventarc redelivers), nothing that looks complete is left, and the redelivery
    scores the whole file. Either way: the output an undisturbed run gives, 0 rows lost."""
    from pubsub_emulator import shared_pubsub

    gcs, proxy = gcs_behind_proxy
    pubsub = shared_pubsub()
    bucket = gcs.new_bucket("faults")
    store = gcs.store(bucket)  # the test's own client, straight to the server
    registry = ModelRegistry(store, refresh_seconds=0)
    card = registry.register(demo_model.card, demo_model.onnx_bytes, name=MODEL)
    registry.promote(MODEL, card.version)
    table = cancer_rows(data_dir, REPEAT)
    with vertex_fake() as vertex:
        env = function_env(
            gcs,
            pubsub,
            vertex,
            bucket,
            STORAGE_EMULATOR_HOST=proxy.url,
            SKYSCORE_GCS_CHUNK_BYTES=str(CHUNK),
        )
        app = GcpApp(gcs, pubsub, bucket, store, "", "", vertex, env)
        try:
            upload = app.server("upload")
            store.write_bytes(f"incoming/{MODEL}/reference.csv", table)
            assert upload.post_event(app.finalized(f"incoming/{MODEL}/reference.csv")).status == 200
            assert upload_statuses(upload.new_lines()) == ["scored"]
            out = out_key("reference.csv")
            expected = store.read_bytes(out)
            expected_manifest = store.read_bytes(out + ".manifest.json")
            assert expected.count(b"\n") == 1 + 569 * REPEAT - 2 * REPEAT
            assert len(table if direction == "down" else expected) > after  # enough to cut into

            key = f"incoming/{MODEL}/large.csv"
            store.write_bytes(key, table)
            event = app.finalized(key)
            output = out_key("large.csv")
            cuts = proxy.cuts
            proxy.cut_after(after, direction, back_after=back_after)
            started = time.monotonic()
            answer = upload.post_event(event)
            took = time.monotonic() - started
            assert proxy.cuts == cuts + 1, "the endpoint was never cut: the test proved nothing"
            found = upload_statuses(upload.new_lines())
            outcome = found[0] if answer.status == 200 and found else f"HTTP {answer.status}"
            print(
                f"GCP: cut {direction} after {after:,} bytes, back after {back_after} s: "
                f"{outcome} in {took:.1f} s"
            )
            time.sleep(max(0.0, back_after - took) + 0.3)
            proxy.start()  # the endpoint is back (a no-op once it is)
            if outcome != "scored":
                assert answer.status >= 500, (answer.status, answer.body[:300])
                keys = keys_under(app, f"predictions/{MODEL}/")
                assert looks_complete(keys, output, store.read_bytes) == [], keys
                # Eventarc redelivers the same event: the whole file
                assert upload.post_event(event).status == 200
                assert upload_statuses(upload.new_lines()) == ["scored"]
            assert store.read_bytes(output) == expected
            manifest = store.read_bytes(output + ".manifest.json")
            assert comparable(manifest) == comparable(expected_manifest)
            assert upload.post_event(event).status == 200
            assert upload_statuses(upload.new_lines()) == ["duplicate"]
        finally:
            app.stop()


def test_gcp_tampered_model_is_refused_while_production_keeps_serving(
    gcp_deployment: GcpApp, demo_model: TrainResult
) -> None:
    app = gcp_deployment
    http = app.server("http")
    body = demo_body()
    first = http.request("POST", f"/v1/models/{MODEL}/predict", body, JSON)
    assert first.status == 200 and first.json()["version"] == "1", first.body[:300]
    registry = app.registry()
    registry.register(demo_model.card, demo_model.onnx_bytes, name=MODEL)
    key = f"models/{MODEL}/2/model.onnx"
    data = bytearray(app.store.read_bytes(key))
    data[len(data) // 2] ^= 0xFF  # one byte: the card keeps the old sha256
    app.store.write_bytes(key, bytes(data))
    with pytest.raises(IntegrityError):
        registry.promote(MODEL, "2", reason="a tampered artifact")
    with pytest.raises(IntegrityError):
        registry.get_predictor(MODEL, "2")
    assert registry.alias_target(MODEL) == "1"
    for _ in range(3):
        again = http.request("POST", f"/v1/models/{MODEL}/predict", body, JSON)
        assert (again.status, again.body) == (first.status, first.body)


# --------------------------------------------------------------------------------------------
# 18.5 load
# --------------------------------------------------------------------------------------------

CLIENTS = int(os.environ.get("SKYSCORE_LOAD_CLIENTS", "20"))
SECONDS = float(os.environ.get("SKYSCORE_LOAD_SECONDS", "8"))
MAX_RSS_GROWTH_MB = 20.0


def test_gcp_http_function_holds_a_bounded_load(
    gcp_deployment: GcpApp, record_property: pytest.RecordProperty
) -> None:
    """``SKYSCORE_LOAD_CLIENTS`` keep-alive clients (default 20) for ``SKYSCORE_LOAD_SECONDS``
    (default 8) against the ``http`` function's functions-framework server (gunicorn, one
    worker, its default threads): every request answered 200, and the server's memory (the
    arbiter and worker processes together) grows less than 20 MB after a warm-up run."""
    http = gcp_deployment.server("http")
    path, body = f"/v1/models/{MODEL}/predict", demo_body()
    warm = run_load(http.url, path, body, clients=CLIENTS, seconds=2.0, warmup_seconds=1.0)
    assert warm.errors == 0, warm.first_errors
    rss_start = tree_rss_bytes(http.process.pid)
    result = run_load(http.url, path, body, clients=CLIENTS, seconds=SECONDS, warmup_seconds=0.0)
    rss_end = tree_rss_bytes(http.process.pid)
    growth = (rss_end - rss_start) / 2**20
    line = (
        f"functions-framework http: {result.line().split(', RSS')[0]}, server RSS "
        f"{rss_start / 2**20:.1f} -> {rss_end / 2**20:.1f} MB ({growth:+.1f} MB)"
    )
    print(line)
    record_property("load", json.dumps({**result.__dict__, "server_rss_growth_mb": growth}))
    assert result.errors == 0, result.first_errors
    assert result.requests > CLIENTS * SECONDS, line  # it really ran
    assert rss_start > 50 * 2**20, "the server's memory was not found"
    assert growth < MAX_RSS_GROWTH_MB, line


# --------------------------------------------------------------------------------------------
# 18.7 secrets
# --------------------------------------------------------------------------------------------


def _incident(policy: str) -> bytes:
    from gcpfunc import reference_event

    payload = reference_event("monitoring-alert-incident-v1.2.json")
    payload["incident"].update(policy_name=policy, state="open", incident_id="0.secrets")
    payload["incident"]["metric"]["labels"] = {"model": MODEL}
    return json.dumps(payload).encode()


def test_gcp_end_to_end_logs_hold_no_token(
    gcp_deployment: GcpApp,
    in_process: Any,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Upload, HTTP prediction and an alert-triggered retrain, in this process at DEBUG (every
    logger, google-auth's and the storage SDK's included, with the SDKs' own request logging
    on: ``GOOGLE_SDK_PYTHON_LOGGING_SCOPE``) and on running servers (their whole output, the
    same SDK logging on); then a Scheduler tick, whose Vertex AI calls carry the token. The
    metadata server's token is random and long (``gcp_deployment``), so any leak is found.
    The emulators take no credentials: the token is the only secret of the run."""
    from gcpfunc import DRIFT_POLICY, ERROR_POLICY

    app = gcp_deployment
    token = app.vertex.token
    table = (data_dir / "breast_cancer.csv").read_bytes()
    app.store.write_bytes(f"training/{MODEL}/2026-11.csv", table)
    app.env["GOOGLE_SDK_PYTHON_LOGGING_SCOPE"] = "google"
    caplog.set_level(logging.DEBUG)

    # in this process: an upload and an open drift incident (a Vertex AI job is created)
    key = f"incoming/{MODEL}/clinic.csv"
    app.store.write_bytes(key, table)
    in_process.upload(cloud_event(app.finalized(key)))
    assert app.store.exists(out_key("clinic.csv") + ".manifest.json")
    in_process.alerts(cloud_event(published(_incident(DRIFT_POLICY))))
    assert app.vertex.errors == [] and len(app.vertex.jobs) == 1, app.vertex.errors
    assert app.vertex.tokens_issued >= 1

    # on servers: an upload, a prediction, an error-rate incident, a Scheduler tick
    upload, http = app.server("upload"), app.server("http")
    alerts, schedule = app.server("alerts"), app.server("retrain_schedule")
    key = f"incoming/{MODEL}/clinic-2.csv"
    app.store.write_bytes(key, table)
    assert upload.post_event(app.finalized(key)).status == 200
    assert upload_statuses(upload.new_lines()) == ["scored"]
    answer = http.request("POST", f"/v1/models/{MODEL}/predict", demo_body(), JSON)
    assert answer.status == 200, answer.body[:300]
    assert alerts.post_event(published(_incident(ERROR_POLICY))).status == 200
    tick = schedule.request(
        "POST",
        "/",
        b"",
        {
            "X-CloudScheduler": "true",
            "X-CloudScheduler-JobName": "skyscore-retrain",
            "X-CloudScheduler-ScheduleTime": "2026-12-01T00:00:00Z",
        },
    )
    assert tick.status == 200, tick.body[:300]
    assert app.vertex.errors == [], app.vertex.errors
    calls = [r for r in app.vertex.requests if r["headers"].get("authorization")]
    assert len(calls) >= 3, "the functions did not call Vertex AI with the token"
    assert app.vertex.tokens_issued >= 2  # fetched in this process and in a server

    out, err = capfd.readouterr()
    records = "\n".join(
        f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''} {r.__dict__!r}"
        for r in caplog.records
    )
    texts = {
        "log records": records + caplog.text,
        "stdout": out,
        "stderr": err,
        **{f"{name} server": server.log() for name, server in app.servers.items()},
    }
    assert len(caplog.records) > 10 and any(r.levelno == logging.DEBUG for r in caplog.records)
    assert upload.log() and alerts.log() and schedule.log()  # the servers did log
    assert leaks(texts, {"metadata-server bearer token": token}) == []
