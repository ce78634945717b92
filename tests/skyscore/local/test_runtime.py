"""The local runtime end to end: real HTTP on 127.0.0.1 and a real inbox directory."""

from __future__ import annotations

import csv
import io
import json
import logging
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest

from skyscore.adapters.local import LocalBlobStore
from skyscore.local.home import LocalHome
from skyscore.local.runtime import InboxWatcher, JsonFormatter, LocalRuntime, configure_logging
from skyscore.model.predictor import Predictor
from skyscore.model.registry import ModelRegistry
from skyscore.serving.dataplane import StaticModelProvider
from skyscore.training.train import TrainResult

WAIT_SECONDS = 30.0
POLL = 0.05


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def registry(tmp_path: Path, demo_model: TrainResult, hgb_model: TrainResult) -> ModelRegistry:
    """A home whose registry has cancer and fraud registered and promoted."""
    registry = ModelRegistry(LocalBlobStore(tmp_path / "home"), refresh_seconds=0)
    for model in (demo_model, hgb_model):
        card = registry.register(model.card, model.onnx_bytes)
        registry.promote(card.name, card.version)
    return registry


@pytest.fixture
def runtime(tmp_path: Path, registry: ModelRegistry) -> Iterator[LocalRuntime]:
    with LocalRuntime(
        tmp_path / "home",
        host="127.0.0.1",
        port=0,
        default_model="cancer",
        poll_seconds=POLL,
        registry=registry,
        max_body_bytes=64 * 1024,
    ) as running:
        yield running


def http(
    runtime: LocalRuntime,
    method: str,
    path: str,
    payload: Any = None,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request with urllib: (status, headers, decoded JSON body or raw bytes)."""
    if body is None and payload is not None:
        body = json.dumps(payload).encode()
    request = urllib.request.Request(
        runtime.url + path,
        data=body,
        method=method,
        headers=headers if headers is not None else {"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, head, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, head, raw = error.code, dict(error.headers), error.read()
    head = {k.lower(): v for k, v in head.items()}
    try:
        return status, head, json.loads(raw) if raw else None
    except ValueError:
        return status, head, raw


@pytest.fixture(scope="module")
def cancer_csv(data_dir: Path) -> str:
    """Ten demo rows as CSV; rows 3 and 7 are broken."""
    with (data_dir / "breast_cancer.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [row for _, row in zip(range(10), reader, strict=False)]
    for row in rows:
        del row["diagnosis"]
    rows[2]["mean_radius"] = "abc"
    rows[6]["worst_area"] = "big"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def instances(predictor: Predictor, text: str, n: int) -> list[dict[str, Any]]:
    rows = list(csv.DictReader(io.StringIO(text)))[:n]
    out = []
    for row in rows:
        record: dict[str, Any] = dict(row)
        for column in predictor.card.numeric_features:
            record[column] = float(row[column])
        out.append(record)
    return out


def drop(target: Path, data: str | bytes) -> None:
    """Write then rename, as a careful producer does."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    part.write_bytes(data.encode() if isinstance(data, str) else data)
    part.rename(target)


# ------------------------------------------------------------------------------ HTTP
def test_predict_over_http(
    runtime: LocalRuntime, demo_predictor: Predictor, cancer_csv: str
) -> None:
    assert runtime.url.startswith("http://127.0.0.1:") and not runtime.url.endswith(":0")
    rows = instances(demo_predictor, cancer_csv, 2)
    status, headers, body = http(runtime, "POST", "/v1/models/cancer/predict", {"instances": rows})
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert body["model"] == "cancer" and body["version"] == "1"
    assert body["predictions"] == demo_predictor.predict_instances(rows)


def test_errors_over_http(
    runtime: LocalRuntime, demo_predictor: Predictor, cancer_csv: str
) -> None:
    rows = instances(demo_predictor, cancer_csv, 2)
    rows[1]["mean_texture"] = "soft"
    status, headers, body = http(runtime, "POST", "/v1/models/cancer/predict", {"instances": rows})
    assert status == 422
    assert headers["content-type"] == "application/problem+json"
    assert (body["row"], body["field"]) == (1, "mean_texture")
    status, _, body = http(runtime, "POST", "/v1/models/cancer/predict", body=b"{oops")
    assert status == 400 and "JSON" in body["detail"]
    status, _, body = http(
        runtime,
        "POST",
        "/v1/models/cancer/predict",
        {"instances": []},
        headers={"Content-Type": "text/plain"},
    )
    assert status == 415
    status, _, body = http(runtime, "GET", "/v2/models/nope")
    assert status == 404 and body["error"] == body["detail"]
    status, headers, body = http(runtime, "DELETE", "/v1/models")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, _, body = http(runtime, "POST", "/v1/models/cancer/predict", body=b" " * (65 * 1024))
    assert status == 413 and body["max_body_bytes"] == 64 * 1024


def test_v2_and_openapi_over_http(runtime: LocalRuntime, hgb_predictor: Predictor) -> None:
    assert http(runtime, "GET", "/v2/health/live")[2] == {"live": True}
    assert http(runtime, "GET", "/v2/health/ready")[2] == {"ready": True}
    assert http(runtime, "GET", "/v2/models/fraud/ready")[0] == 200
    status, _, metadata = http(runtime, "GET", "/v2/models/fraud")
    assert status == 200 and metadata["platform"] == "onnx"
    inputs = [
        {
            "name": t["name"],
            "shape": [1],
            "datatype": t["datatype"],
            "data": [0.5 if t["datatype"] == "FP32" else "web"],
        }
        for t in metadata["inputs"]
    ]
    status, _, body = http(runtime, "POST", "/v2/models/fraud/infer", {"inputs": inputs})
    assert status == 200, body
    assert {o["name"] for o in body["outputs"]} == {"label", "probabilities"}
    status, _, listing = http(runtime, "GET", "/v1/models")
    assert {m["name"] for m in listing["models"]} == {"cancer", "fraud"}
    status, _, document = http(runtime, "GET", "/openapi.json")
    assert status == 200 and "/v2/models/{name}/infer" in document["paths"]


def test_keep_alive_head_and_chunked(
    runtime: LocalRuntime, demo_predictor: Predictor, cancer_csv: str
) -> None:
    connection = HTTPConnection("127.0.0.1", runtime.port, timeout=10)
    try:
        for _ in range(3):  # one connection, several requests
            connection.request("GET", "/v2/health/live")
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read()) == {"live": True}
        connection.request("HEAD", "/v2/health/live")
        response = connection.getresponse()
        assert response.status == 200
        assert int(response.headers["Content-Length"]) > 0
        assert response.read() == b""
        payload = json.dumps({"instances": instances(demo_predictor, cancer_csv, 1)}).encode()
        chunks = iter([payload[:50], payload[50:]])
        connection.request(
            "POST",
            "/v1/models/cancer/predict",
            body=chunks,
            headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        assert response.status == 200, response.read()
        assert len(json.loads(response.read())["predictions"]) == 1
    finally:
        connection.close()


def test_an_oversized_body_gets_413_and_the_connection_survives(runtime: LocalRuntime) -> None:
    connection = HTTPConnection("127.0.0.1", runtime.port, timeout=10)
    try:
        connection.request(
            "POST",
            "/v1/models/cancer/predict",
            body=b" " * (1 << 20),
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["max_body_bytes"] == 64 * 1024
        connection.request("GET", "/v2/health/live")  # the same connection
        assert connection.getresponse().status == 200
    finally:
        connection.close()


def test_protocol_errors_are_problem_json(runtime: LocalRuntime) -> None:
    with socket.create_connection(("127.0.0.1", runtime.port), timeout=10) as raw:
        raw.sendall(b"NONSENSE\r\n\r\n")
        reply = b""
        while chunk := raw.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") or head.startswith(b"HTTP/1.0 400")
    assert b"application/problem+json" in head
    assert json.loads(body)["status"] == 400


def test_one_json_log_line_per_request(
    runtime: LocalRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="skyscore.local"):
        http(runtime, "GET", "/v2/health/live")
        http(runtime, "GET", "/nowhere")
        wait_for(
            lambda: len([r for r in caplog.records if r.getMessage() == "request"]) >= 2, "logs"
        )
    records = [r for r in caplog.records if r.getMessage() == "request"]
    fields = [r.fields for r in records]  # type: ignore[attr-defined]
    assert [(f["path"], f["status"]) for f in fields] == [
        ("/v2/health/live", 200),
        ("/nowhere", 404),
    ]
    assert all(f["duration_ms"] >= 0 and f["method"] == "GET" for f in fields)
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["message"] == "request" and line["status"] == 200 and line["level"] == "INFO"


def test_configure_logging_defers_to_the_application() -> None:
    # pytest has handlers on the root logger: an application's own setup wins
    assert logging.getLogger().handlers
    assert configure_logging() is False


# ------------------------------------------------------------------------------ the inbox
def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_inbox_scores_reports_and_deduplicates(runtime: LocalRuntime, cancer_csv: str) -> None:
    home = runtime.home.root
    predictions = home / "predictions" / "cancer"
    drop(home / "inbox" / "batch.csv", cancer_csv)
    manifest_path = predictions / "batch.predictions.csv.manifest.json"
    wait_for((home / "processed" / "cancer" / "batch.csv").exists, "the input to be processed")
    wait_for(manifest_path.exists, "the manifest")

    assert _files(predictions) == [
        "batch.predictions.csv",
        "batch.predictions.csv.errors.jsonl",
        "batch.predictions.csv.manifest.json",
        "batch.predictions.csv.report.html",
    ]
    manifest = json.loads(manifest_path.read_text())
    assert (manifest["rows_read"], manifest["rows_scored"], manifest["rows_failed"]) == (10, 8, 2)
    assert manifest["model"]["name"] == "cancer" and manifest["model"]["version"] == "1"
    assert manifest["input_key"] == "processed/cancer/batch.csv"
    errors = [
        json.loads(line)
        for line in (predictions / "batch.predictions.csv.errors.jsonl").read_text().splitlines()
    ]
    assert [(e["row"], e["column"]) for e in errors] == [(3, "mean_radius"), (7, "worst_area")]
    output = list(csv.DictReader(io.StringIO((predictions / "batch.predictions.csv").read_text())))
    assert len(output) == 8
    assert [int(r["row"]) for r in output] == [1, 2, 4, 5, 6, 8, 9, 10]
    assert not (home / "inbox" / "batch.csv").exists()

    before = {name: (predictions / name).read_bytes() for name in _files(predictions)}
    mtimes = {name: (predictions / name).stat().st_mtime_ns for name in before}
    drop(home / "inbox" / "cancer" / "batch.csv", cancer_csv)  # the same file, again
    processed = home / "processed" / "cancer"
    wait_for(lambda: len(_files(processed)) == 2, "the duplicate to be processed")
    time.sleep(10 * POLL)
    after = {name: (predictions / name).read_bytes() for name in _files(predictions)}
    assert after == before
    assert {name: (predictions / name).stat().st_mtime_ns for name in after} == mtimes
    assert _files(processed) == ["batch-1.csv", "batch.csv"]
    assert _files(home / "failed") == []


def test_a_second_file_of_the_same_name_keeps_the_first_ones_results(
    runtime: LocalRuntime, cancer_csv: str
) -> None:
    """Issue 20, item 3: outputs are keyed by the input's own name in processed/, never by the
    dropped name alone, so a different batch.csv does not overwrite the first one's results."""
    home = runtime.home.root
    predictions = home / "predictions" / "cancer"
    drop(home / "inbox" / "batch.csv", cancer_csv)
    first = predictions / "batch.predictions.csv.manifest.json"
    wait_for(first.exists, "the first file")
    first_output = (predictions / "batch.predictions.csv").read_bytes()
    other = "\n".join(cancer_csv.splitlines()[:4]) + "\n"  # different bytes, same name
    drop(home / "inbox" / "batch.csv", other)
    second = predictions / "batch-1.predictions.csv.manifest.json"
    wait_for(second.exists, "the second file")
    assert (predictions / "batch.predictions.csv").read_bytes() == first_output
    assert json.loads(second.read_text())["rows_read"] == 3


def test_a_new_version_rescores(
    runtime: LocalRuntime, registry: ModelRegistry, demo_model: TrainResult, cancer_csv: str
) -> None:
    home = runtime.home.root
    drop(home / "inbox" / "again.csv", cancer_csv)
    manifest_path = home / "predictions" / "cancer" / "again.predictions.csv.manifest.json"
    wait_for(manifest_path.exists, "the first scoring")
    card = registry.register(demo_model.card, demo_model.onnx_bytes)
    registry.promote("cancer", card.version)
    drop(home / "inbox" / "again.csv", cancer_csv)
    wait_for(
        lambda: json.loads(manifest_path.read_text())["model"]["version"] == card.version,
        "a re-score with the new production version",
    )


def test_file_level_errors_go_to_failed(runtime: LocalRuntime, cancer_csv: str) -> None:
    home = runtime.home.root
    inbox = home / "inbox"
    drop(inbox / "zipped.csv", b"PK\x03\x04" + bytes(range(256)) * 4)
    drop(inbox / "ghost" / "rows.csv", cancer_csv)
    drop(inbox / "notes.txt", "hello")
    failed = home / "failed"
    wait_for(lambda: len(_files(failed)) == 6, "three failures and their reasons")
    assert _files(failed) == [
        "notes.txt",
        "notes.txt.error.json",
        "rows.csv",
        "rows.csv.error.json",
        "zipped.csv",
        "zipped.csv.error.json",
    ]
    mismatch = json.loads((failed / "zipped.csv.error.json").read_text())
    assert mismatch["problem"]["type"].endswith("/format-mismatch")
    assert "CSV" in mismatch["reason"] and mismatch["model"] == "cancer"
    unknown = json.loads((failed / "rows.csv.error.json").read_text())
    assert unknown["model"] == "ghost" and unknown["problem"]["status"] == 404
    unsupported = json.loads((failed / "notes.txt.error.json").read_text())
    assert unsupported["problem"]["type"].endswith("/unsupported-format")
    # as on the clouds, a file that reached the scorer has a failure manifest and no output
    written = [p for p in (home / "predictions").rglob("*") if p.is_file()]
    assert [p.name for p in written] == ["zipped.predictions.csv.manifest.json"]
    assert json.loads(written[0].read_text())["status"] == "failed"
    # the runtime is still healthy: a good file after the bad ones is scored
    drop(inbox / "fine.csv", cancer_csv)
    fine = home / "predictions" / "cancer" / "fine.predictions.csv.manifest.json"
    wait_for(fine.exists, "a good file")


def test_ignored_names_are_left_alone(runtime: LocalRuntime, cancer_csv: str) -> None:
    inbox = runtime.home.root / "inbox"
    for name in (".hidden.csv", "upload.csv.part", "upload.csv.tmp", "x.csv~"):
        (inbox / name).write_text(cancer_csv)
    drop(inbox / "marker.csv", cancer_csv)
    wait_for((runtime.home.root / "processed" / "cancer" / "marker.csv").exists, "the marker")
    time.sleep(5 * POLL)
    assert _files(inbox) == [".hidden.csv", "upload.csv.part", "upload.csv.tmp", "x.csv~"]


# ------------------------------------------------------------------------------ the watcher alone
def test_watcher_waits_for_a_stable_file(
    tmp_path: Path, demo_predictor: Predictor, cancer_csv: str
) -> None:
    home = LocalHome(tmp_path).ensure()
    watcher = InboxWatcher(home, StaticModelProvider([demo_predictor]), poll_seconds=0.01)
    target = home.inbox / "growing.csv"
    lines = cancer_csv.splitlines(keepends=True)
    target.write_text("".join(lines[:4]))
    assert watcher.poll() == []  # first sighting
    with target.open("a") as handle:
        handle.write("".join(lines[4:]))
    assert watcher.poll() == []  # it changed: wait again
    outcomes = watcher.poll()
    assert [(o.status, o.rows_scored, o.rows_failed, o.model) for o in outcomes] == [
        ("scored", 8, 2, "cancer")  # the only model is the default
    ]
    assert outcomes[0].moved_to == str(tmp_path / "processed" / "cancer" / "growing.csv")
    assert watcher.poll() == []


def test_watcher_without_a_default_model_fails_clearly(
    tmp_path: Path, demo_predictor: Predictor, hgb_predictor: Predictor, cancer_csv: str
) -> None:
    home = LocalHome(tmp_path).ensure()
    watcher = InboxWatcher(home, StaticModelProvider([demo_predictor, hgb_predictor]))
    (home.inbox / "which.csv").write_text(cancer_csv)
    watcher.poll()
    (outcome,) = watcher.poll()
    assert outcome.status == "failed"
    assert "inbox/<model>/" in (outcome.detail or "")
    reason = json.loads((tmp_path / "failed" / "which.csv.error.json").read_text())
    assert reason["problem"]["status"] == 400


def test_watcher_survives_an_unmovable_file(
    tmp_path: Path, demo_predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = LocalHome(tmp_path).ensure()
    watcher = InboxWatcher(home, StaticModelProvider([demo_predictor]))
    (home.inbox / "bad.txt").write_text("x")
    watcher.poll()

    def refuse(src: Any, dst: Any) -> None:
        raise PermissionError("read-only")

    monkeypatch.setattr("skyscore.local.inbox.os.replace", refuse)
    (outcome,) = watcher.poll()
    assert outcome.status == "stuck"
    assert watcher.poll() == [] and watcher.poll() == []  # not retried while unchanged
    monkeypatch.undo()
    (home.inbox / "bad.txt").write_text("changed")
    watcher.poll()
    (outcome,) = watcher.poll()
    assert outcome.status == "failed"


def test_start_stop_and_port_reuse(tmp_path: Path, registry: ModelRegistry) -> None:
    runtime = LocalRuntime(tmp_path / "home", port=0, registry=registry, watch_inbox=False)
    runtime.start()
    port = runtime.port
    with pytest.raises(RuntimeError):
        runtime.start()
    assert http(runtime, "GET", "/v2/health/live")[0] == 200
    runtime.stop()
    runtime.stop()  # idempotent
    assert runtime.wait(timeout=0.1)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    for name in ("inbox", "predictions", "processed", "failed"):
        assert (tmp_path / "home" / name).is_dir()
