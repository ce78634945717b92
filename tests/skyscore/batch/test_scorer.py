"""Object scoring in a blob store (the logic every cloud's upload and queue handlers share), on
the local blob store: idempotency, failure manifests, fan-out and exact assembly."""

from __future__ import annotations

import hashlib
import io
import json
import random
import time
from pathlib import Path

import msgspec
import pytest

from skyscore.adapters.local import LocalBlobStore
from skyscore.batch.pipeline import score_path
from skyscore.batch.scorer import BatchScorer, Layout, renumber_csv, renumber_jsonl
from skyscore.coordination import claims
from skyscore.errors import Busy
from skyscore.model.registry import ModelRegistry
from skyscore.monitoring.metrics import InMemoryMetrics
from tiny_model import tiny_model


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "store")


@pytest.fixture
def registry(store: LocalBlobStore) -> ModelRegistry:
    card, data = tiny_model(0.3, name="tiny")
    card = msgspec.structs.replace(card, id_column="note")  # a free-text pass-through column
    registry = ModelRegistry(store, refresh_seconds=0)
    registry.register(card, data)
    registry.promote("tiny", "1")
    return registry


def table(rows: int, *, seed: int = 3, multiline: bool = True) -> bytes:
    """CSV rows for the tiny model; some notes hold quotes and newlines, some rows are bad."""
    rng = random.Random(seed)
    lines = ["x1,x2,color,note"]
    for i in range(rows):
        x1 = "bad" if i % 97 == 5 else f"{rng.uniform(-1, 1):.4f}"
        note = f"n{i}"
        if multiline and i % 13 == 0:
            note = f'"line one of {i}\nline ""two""\nthree"'
        lines.append(f"{x1},{rng.uniform(-1, 1):.4f},{rng.choice(['red', 'green', 'blue'])},{note}")
    return ("\n".join(lines) + "\n").encode()


def single_run(tmp_path: Path, data: bytes, registry: ModelRegistry, name: str) -> Path:
    source = tmp_path / name
    source.write_bytes(data)
    target = tmp_path / f"single.{name}"
    score_path(source, target, registry.get_predictor("tiny"))
    return target


def test_layout() -> None:
    layout = Layout()
    keys = layout.output_keys("incoming/tiny/a b/data.v2.csv")
    assert keys.output == "predictions/tiny/a b/data.v2.predictions.csv"
    assert keys.errors == keys.output + ".errors.jsonl"
    assert keys.manifest == keys.output + ".manifest.json"
    assert layout.output_keys("incoming/README").output == "predictions/README.predictions"
    assert layout.model_for("incoming/tiny/x.csv", None) == "tiny"
    assert layout.model_for("incoming/x.csv", "dflt") == "dflt"
    with pytest.raises(Exception, match="no default model"):
        layout.model_for("incoming/x.csv", None)


def test_upload_is_scored_once_per_version(
    store: LocalBlobStore, registry: ModelRegistry, tmp_path: Path
) -> None:
    metrics = InMemoryMetrics()
    scorer = BatchScorer(store, registry, metrics=metrics)
    data = table(300, multiline=False)
    store.write_bytes("incoming/tiny/a.csv", data)
    first = scorer.score_upload("incoming/tiny/a.csv", owner="delivery-1")
    assert first.status == "scored"
    reference = single_run(tmp_path, data, registry, "a.csv")
    assert store.read_bytes("predictions/tiny/a.predictions.csv") == reference.read_bytes()
    assert metrics.values("rows_scored", model="tiny") == [first.manifest["rows_scored"]]  # type: ignore[index]
    again = scorer.score_upload("incoming/tiny/a.csv", owner="delivery-2")
    assert again.status == "duplicate"
    assert metrics.values("batches") == [1]  # no second run
    assert scorer.score_upload("incoming/tiny/a.csv", version="stale", owner="d3").status == "stale"
    assert scorer.score_upload("predictions/x.csv", owner="d4").status == "ignored"
    assert scorer.score_upload("incoming/tiny/missing.csv", owner="d5").status == "ignored"


def test_failures_are_recorded_and_transient_errors_release_the_claim(
    store: LocalBlobStore, registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    scorer = BatchScorer(store, registry)
    store.write_bytes("incoming/tiny/a.parquet.txt", b"x")
    failed = scorer.score_upload("incoming/tiny/a.parquet.txt", owner="d1")
    assert failed.status == "failed" and failed.problem is not None
    assert failed.problem["status"] == 415
    store.write_bytes("incoming/tiny/b.csv", table(10, multiline=False))

    def broken(*args: object, **kwargs: object) -> object:
        raise OSError("network down")

    monkeypatch.setattr("skyscore.batch.scorer.score_stream", broken)
    with pytest.raises(OSError):
        scorer.score_upload("incoming/tiny/b.csv", owner="d1")
    monkeypatch.undo()
    # the claim was released: another delivery may score it at once
    assert scorer.score_upload("incoming/tiny/b.csv", owner="d2").status == "scored"


def test_records_messages(store: LocalBlobStore, registry: ModelRegistry) -> None:
    scorer = BatchScorer(store, registry, default_model="tiny")
    body = {
        "kind": "records",
        "instances": [{"x1": 0.1, "x2": 0.2, "color": "red"}, {"x1": "?"}],
        "id": "r1",
    }
    result = scorer.handle_message(json.dumps(body).encode(), owner="m1")
    assert result.status == "scored"
    lines = store.read_bytes("predictions/queue/tiny/r1.jsonl").splitlines()
    assert [json.loads(line)["row"] for line in lines] == [1]
    assert scorer.handle_message(json.dumps(body).encode(), owner="m2").status == "duplicate"
    for bad in (b"nope", b"[]", b'{"kind": "part", "job": "zz", "part": 0}', b'{"kind": "x"}'):
        with pytest.raises(Exception):  # noqa: B017 - BadRequest: the queue retries, then DLQ
            scorer.handle_message(bad, owner="m3")


def test_records_share_the_uploads_once_path(
    store: LocalBlobStore, registry: ModelRegistry
) -> None:
    """Drift and metrics once per batch: while another delivery (a client's resend) holds the
    claim, a duplicate stands aside; once it crashed and released it, the batch is scored."""
    metrics = InMemoryMetrics()
    scorer = BatchScorer(store, registry, default_model="tiny", metrics=metrics)
    instances = [{"x1": 0.1, "x2": 0.2, "color": "red"}, {"x1": 0.5, "x2": -0.2, "color": "blue"}]
    body = json.dumps({"kind": "records", "id": "r2", "instances": instances}).encode()
    data = b"".join(msgspec.json.encode(i) + b"\n" for i in instances)
    model = f"tiny@{registry.resolve('tiny')}"
    digest = BatchScorer._digest(
        "incoming/queue/tiny/r2.jsonl", hashlib.md5(data).hexdigest(), model
    )
    claims.acquire(store, f"work/claims/{digest}.json", "message-a")
    held = scorer.handle_message(body, owner="message-b")
    assert held.status == "in_progress" and metrics.values("batches") == []
    claims.release(store, f"work/claims/{digest}.json")  # message-a crashed
    scored = scorer.handle_message(body, owner="message-b")
    assert scored.status == "scored" and scored.manifest is not None
    assert scored.manifest["drift"]["rows"] == 2
    assert metrics.values("batches", model="tiny") == [1]
    assert len(metrics.values("max_psi", model="tiny")) == 1
    assert scorer.handle_message(body, owner="message-a").status == "duplicate"
    assert metrics.values("batches") == [1]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_fan_out_equals_a_single_run(
    store: LocalBlobStore, registry: ModelRegistry, tmp_path: Path, fmt: str
) -> None:
    data = table(2_000)
    if fmt == "jsonl":
        rows = list(__import__("csv").DictReader(io.StringIO(data.decode())))
        data = b"".join(json.dumps({**r, "x2": float(r["x2"])}).encode() + b"\n" for r in rows)
    messages: list[bytes] = []
    metrics = InMemoryMetrics()
    scorer = BatchScorer(
        store,
        registry,
        enqueue=messages.append,
        fanout_bytes=len(data) // 4,
        part_bytes=1_500,
        chunk_rows=64,
        metrics=metrics,
    )
    key = f"incoming/tiny/big.{fmt}"
    store.write_bytes(key, data)
    planned = scorer.score_upload(key, owner="upload")
    assert planned.status == "fanned_out" and planned.parts == len(messages) > 20
    plan = json.loads(store.read_bytes(f"work/batch/{planned.job}/plan.json"))
    starts = [a for a, _ in plan["ranges"]]
    assert all(data[s - 1 : s] == b"\n" for s in starts if s)  # parts start after a newline
    assert plan["ranges"][-1][1] == len(data)
    # parts arrive in any order, some twice
    order = messages + messages[:3]
    random.Random(5).shuffle(order)
    statuses = [scorer.handle_message(body, owner=f"m{i}").status for i, body in enumerate(order)]
    assert statuses.count("assembled") == 1
    reference = single_run(tmp_path, data, registry, f"big.{fmt}")
    out = f"predictions/tiny/big.predictions.{fmt}"
    assert store.read_bytes(out) == reference.read_bytes()
    errors = reference.with_name(reference.name + ".errors.jsonl").read_bytes()
    assert store.read_bytes(out + ".errors.jsonl") == errors
    manifest = json.loads(store.read_bytes(out + ".manifest.json"))
    local = json.loads(reference.with_name(reference.name + ".manifest.json").read_text())
    for field in ("rows_read", "rows_scored", "rows_failed", "output_bytes", "first_errors"):
        assert manifest[field] == local[field], field
    if fmt == "csv":  # some boundaries fell inside quoted notes and were scored again
        assert manifest["fanout"]["rescored"]
    assert metrics.values("batches") == [1]
    assert scorer.score_upload(key, owner="late").status == "duplicate"


def test_renumbering() -> None:
    csv_part = b'row,note,label\n1,"a\n2,b",x\n2,c,y\n'
    out = io.BytesIO()
    renumber_csv(io.BytesIO(csv_part), out, 10, keep_header=False)
    assert out.getvalue() == b'11,"a\n2,b",x\n12,c,y\n'
    out = io.BytesIO()
    renumber_csv(io.BytesIO(csv_part), out, 0, keep_header=True)
    assert out.getvalue() == csv_part
    jsonl = b'{"row":1,"label":"x"}\n{"row":2}\n{"label":"z","row":3}\n'
    out = io.BytesIO()
    renumber_jsonl(io.BytesIO(jsonl), out, 5)
    assert [json.loads(line)["row"] for line in out.getvalue().splitlines()] == [6, 7, 8]


def test_renumbering_streams_large_parts_and_empty_ones() -> None:
    out = io.BytesIO()
    renumber_csv(io.BytesIO(b""), out, 3, keep_header=True)
    assert out.getvalue() == b""
    rows = 200_000  # ~2.5 MB: several reads and writes
    body = b"".join(b"%d,p%07d,x\n" % (i, i) for i in range(1, rows + 1))
    renumber_csv(io.BytesIO(b"row,id,label\n" + body), out, rows, keep_header=False)
    lines = out.getvalue().splitlines()
    assert (
        len(lines) == rows and lines[0] == b"200001,p0000001,x" and lines[-1].startswith(b"400000,")
    )


def test_a_copy_of_a_delivery_in_progress_is_busy_and_retryable(
    store: LocalBlobStore, registry: ModelRegistry
) -> None:
    """Scoring a message while a live attempt with the same id holds the claim raises Busy
    (a 503: the queue redelivers it later); a crashed attempt's claim is taken over."""
    scorer = BatchScorer(store, registry, default_model="tiny", heartbeat_seconds=0.05)
    instances = [{"x1": 0.1, "x2": 0.2, "color": "red"}]
    body = json.dumps({"kind": "records", "id": "r3", "instances": instances}).encode()
    data = b"".join(msgspec.json.encode(i) + b"\n" for i in instances)
    model = f"tiny@{registry.resolve('tiny')}"
    digest = BatchScorer._digest(
        "incoming/queue/tiny/r3.jsonl", hashlib.md5(data).hexdigest(), model
    )
    claims.acquire(store, f"work/claims/{digest}.json", "message-a", heartbeat_seconds=0.05)
    with pytest.raises(Busy) as busy:
        scorer.handle_message(body, owner="message-a")
    assert busy.value.retryable and busy.value.status == 503
    time.sleep(0.05 * claims.STALLS_AFTER + 0.1)  # that attempt died: no heartbeat
    assert scorer.handle_message(body, owner="message-a").status == "scored"


def test_an_input_changed_while_scored_fails_and_leaves_no_output(
    store: LocalBlobStore, registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 20, item 4: a file appended to (or rewritten in place) while it is scored is
    detected by its version; its partial output is dropped and it is never reported scored.
    Scoring it again afterwards gives the full output."""
    import skyscore.batch.scorer as scorer_module

    scorer = BatchScorer(store, registry, default_model="tiny")
    key = "incoming/tiny/growing.csv"
    store.write_bytes(key, table(200))
    real = scorer_module.score_stream

    def slow_writer_appends(*args: object, **kwargs: object) -> object:
        report = real(*args, **kwargs)  # type: ignore[arg-type]
        path = store.path(key)
        with path.open("ab") as handle:  # the writer was not done after all
            handle.write(b"0.1,0.2,red\n")
        return report

    monkeypatch.setattr(scorer_module, "score_stream", slow_writer_appends)
    result = scorer.score_upload(key, owner="a")
    assert result.status == "failed" and "changed while it was being scored" in result.detail
    keys = scorer.layout.output_keys(key)
    assert not store.exists(keys.output) and not store.exists(keys.errors)
    manifest = json.loads(store.read_bytes(keys.manifest))
    assert manifest["status"] == "failed" and manifest["error"]["type"].endswith("/input-changed")
    monkeypatch.undo()
    again = scorer.score_upload(key, owner="b")  # the failure is retryable
    assert again.status == "scored" and again.manifest is not None
    assert again.manifest["rows_read"] == 201


def test_a_failure_is_retryable_once_the_model_exists(
    store: LocalBlobStore, registry: ModelRegistry
) -> None:
    """Issue 13, item 5: a file uploaded before its model existed fails with a reason; the same
    object is scored once the model is registered (idempotency counts successes only)."""
    scorer = BatchScorer(store, registry)
    key = "incoming/later/file.csv"
    store.write_bytes(key, table(20))
    first = scorer.score_upload(key, owner="a")
    assert first.status == "failed" and first.problem is not None
    assert first.problem["status"] == 404
    card, data = tiny_model(0.4, name="later")
    registry.register(card, data, name="later")
    registry.promote("later", "1")
    second = scorer.score_upload(key, owner="a")
    assert second.status == "scored"
    assert scorer.score_upload(key, owner="c").status == "duplicate"


@pytest.mark.parametrize(
    "key",
    ["incoming/../models/tiny/1/model.onnx", "incoming/tiny/../../etc/passwd", "/etc/passwd"],
)
def test_a_key_that_climbs_out_is_a_clean_refusal(
    store: LocalBlobStore, registry: ModelRegistry, tmp_path: Path, key: str
) -> None:
    """An event naming a key with ``..`` (or an absolute path) is refused or ignored, with
    nothing read outside the store and nothing written."""
    from skyscore.errors import SkyscoreError

    before = sorted(info.key for info in store.list(""))
    scorer = BatchScorer(store, registry)
    try:
        result = scorer.score_upload(key, owner="hostile")
    except SkyscoreError as error:
        assert 400 <= error.status < 500, error
    else:
        assert result.status in {"ignored", "failed"}, result
    assert sorted(info.key for info in store.list("")) == before
