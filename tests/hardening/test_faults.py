"""Faults are survived (issue 18.4).

* The storage endpoint goes away in the middle of a large file (while the input downloads, or
  while the output uploads): the invocation fails cleanly, nothing under ``predictions/`` looks
  complete (no output without its manifest, no success manifest), and the platform's retry
  after the endpoint is back gives the full output, equal to an undisturbed run (0 rows lost).
  AWS handler on moto, and the core's scorer on Azurite, each behind a proxy that cuts every
  connection at a given byte (GCP: test_gcp_hardening.py).
* A tampered model (``model.onnx`` no longer matching its card's sha256) is refused, and the
  version in production keeps answering: local runtime over HTTP, and AWS on moto.
* A failed, a worse and an unusable training job leave production untouched while the local
  runtime keeps serving it.
* Promote and rollback from many threads (S3 on moto) and processes (a local registry) leave
  a consistent alias: every move that returned is in the history, the alias is the last move.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from hardening_kit import (
    MODEL,
    FaultProxy,
    aws_account,
    azure_account,
    cancer_rows,
    comparable,
    lambda_context,
    looks_complete,
    run_threads,
)

from skyscore.coordination import claims
from skyscore.errors import IntegrityError
from skyscore.training.train import TrainResult

REPEAT = 40  # ~5.7 MB, ~22,800 rows: several MB of transfer to cut into


# Where the storage endpoint is cut: reading the input or writing the output, and whether it
# stays away until the attempt failed (stopped) or is back 0.05 s later (a blip).
STORAGE_CUTS = pytest.mark.parametrize(
    ("direction", "after", "back_after"),
    [
        ("down", 2_000_000, None),
        ("down", 2_000_000, 0.05),
        ("up", 300_000, None),
        ("up", 300_000, 0.05),
    ],
    ids=[
        "stopped-while-reading-the-input",
        "blip-while-reading-the-input",
        "stopped-while-writing-the-output",
        "blip-while-writing-the-output",
    ],
)


def _upload(event: dict[str, Any], request_id: str) -> str:
    from functions.aws import upload

    [result] = upload.handler(json.loads(json.dumps(event)), lambda_context(request_id))["results"]
    return str(result["status"])


@STORAGE_CUTS
def test_aws_storage_cut_mid_file_fails_cleanly_and_the_retry_is_complete(
    moto_url: str,
    demo_model: TrainResult,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    direction: str,
    after: int,
    back_after: float | None,
) -> None:
    """Stopped: the endpoint stays away until the invocation has failed. Blip: it is back
    0.05 s later, so every call after the cut succeeds and only the cut transfer itself tells
    that the file was not read (or written) whole: a truncated read taken for the end of
    the file would be scored and published as complete."""
    # the SDK's retries: few for an outage (kept short for the test), enough to ride a blip
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2" if back_after is None else "5")
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    # The failed attempt could not release its claim (the storage was gone); Lambda's retry of
    # it comes a minute later, long after its heartbeat stopped: here, beats of 0.05 s
    monkeypatch.setenv("SKYSCORE_HEARTBEAT_SECONDS", "0.05")
    proxy = FaultProxy(int(moto_url.rsplit(":", 1)[1])).start()
    table = cancer_rows(data_dir, REPEAT)
    try:
        with aws_account(moto_url, tmp_path, demo_model, endpoint=proxy.url) as aws:
            reference = aws.put(f"incoming/{MODEL}/reference.csv", table)
            assert _upload(reference, "reference") == "scored"
            out = f"predictions/{MODEL}/reference.predictions.csv"
            expected = aws.read(out)
            expected_manifest = aws.read(out + ".manifest.json")
            assert expected.count(b"\n") == 1 + 569 * REPEAT - 2 * REPEAT

            event = aws.put(f"incoming/{MODEL}/large.csv", table)
            output = f"predictions/{MODEL}/large.predictions.csv"
            cuts = proxy.cuts
            proxy.cut_after(after, direction, back_after=back_after)
            try:
                outcome = _upload(event, "attempt-1")
            except Exception as error:  # the invocation failed: the platform retries it
                outcome = type(error).__name__
            assert proxy.cuts == cuts + 1, "the endpoint was never cut: the test proved nothing"
            print(f"cut {direction} after {after:,} bytes, back after {back_after}: {outcome}")
            time.sleep(0.3)
            proxy.start()  # the endpoint is back (a no-op after a blip)
            if outcome != "scored":
                keys = aws.keys(f"predictions/{MODEL}/")
                assert looks_complete(keys, output, aws.read) == [], keys
                # the platform retries the invocation (same request id): the whole file
                assert _upload(event, "attempt-1") == "scored"
            # scored at once (the SDK rode a blip by sending the request again), or on the
            # retry: either way the whole file, as an undisturbed run scores it
            assert aws.read(output) == expected
            assert comparable(aws.read(output + ".manifest.json")) == comparable(expected_manifest)
            assert _upload(event, "a-late-duplicate") == "duplicate"
    finally:
        proxy.stop()


@STORAGE_CUTS
def test_azure_storage_cut_mid_file_fails_cleanly_and_the_retry_is_complete(
    azurite_connection: str,
    demo_model: TrainResult,
    data_dir: Path,
    direction: str,
    after: int,
    back_after: float | None,
) -> None:
    """The same cut on Azure: the core's BatchScorer on an AzureBlobStore whose client talks to
    Azurite through the proxy (ranged downloads in, staged blocks out). The SDK's retry policy
    is the default's shape with short waits (its first wait is 15 s): few retries for an
    outage, enough to ride a blip."""
    from azure.storage.blob import ContainerClient, ExponentialRetry

    from skyscore.adapters.azure import AzureBlobStore
    from skyscore.batch.scorer import BatchScorer
    from skyscore.model.registry import ModelRegistry

    port = int(azurite_connection.split("BlobEndpoint=http://127.0.0.1:", 1)[1].split("/", 1)[0])
    proxy = FaultProxy(port).start()
    through_proxy = azurite_connection.replace(f"127.0.0.1:{port}/", f"127.0.0.1:{proxy.port}/")
    table = cancer_rows(data_dir, REPEAT)
    try:
        with azure_account(azurite_connection, demo_model) as azure:
            retry = ExponentialRetry(
                initial_backoff=0.2, increment_base=2, retry_total=1 if back_after is None else 4
            )
            client = ContainerClient.from_connection_string(
                through_proxy, azure.container, retry_policy=retry
            )
            store = AzureBlobStore(azure.container, client=client)
            scorer = BatchScorer(store, ModelRegistry(store, refresh_seconds=0))
            azure.store.write_bytes(f"incoming/{MODEL}/reference.csv", table)
            assert scorer.score_upload(f"incoming/{MODEL}/reference.csv", owner="r").status == (
                "scored"
            )
            out = f"predictions/{MODEL}/reference.predictions.csv"
            expected = azure.store.read_bytes(out)
            expected_manifest = azure.store.read_bytes(out + ".manifest.json")
            assert len(table if direction == "down" else expected) > after  # enough to cut into

            key = f"incoming/{MODEL}/large.csv"
            azure.store.write_bytes(key, table)
            output = f"predictions/{MODEL}/large.predictions.csv"
            cuts = proxy.cuts
            proxy.cut_after(after, direction, back_after=back_after)
            try:
                outcome = scorer.score_upload(key, owner="attempt-1").status
            except Exception as error:  # the invocation failed: the platform retries it
                outcome = type(error).__name__
            assert proxy.cuts == cuts + 1, "the endpoint was never cut: the test proved nothing"
            print(
                f"Azure: cut {direction} after {after:,} bytes, back after {back_after}: {outcome}"
            )
            time.sleep(0.3)
            proxy.start()
            if outcome != "scored":
                keys = sorted(info.key for info in azure.store.list(f"predictions/{MODEL}/"))
                assert looks_complete(keys, output, azure.store.read_bytes) == [], keys
                # the host retries later, after the failed attempt's heartbeat has stopped (a
                # claim it could not release while the storage was away): beats of 0.05 s here
                retried = BatchScorer(
                    store, ModelRegistry(store, refresh_seconds=0), heartbeat_seconds=0.05
                )
                time.sleep(0.05 * claims.STALLS_AFTER + 0.1)
                assert retried.score_upload(key, owner="attempt-1").status == "scored"
            assert azure.store.read_bytes(output) == expected
            manifest = azure.store.read_bytes(output + ".manifest.json")
            assert comparable(manifest) == comparable(expected_manifest)
            assert scorer.score_upload(key, owner="a-late-duplicate").status == "duplicate"
    finally:
        proxy.stop()


# --------------------------------------------------------------------------------------------
# tampered models
# --------------------------------------------------------------------------------------------


def _tamper(store: Any, version: str) -> None:
    """Change one byte of a registered ``model.onnx`` (its card keeps the old sha256)."""
    key = f"models/{MODEL}/{version}/model.onnx"
    data = bytearray(store.read_bytes(key))
    data[len(data) // 2] ^= 0xFF
    store.write_bytes(key, bytes(data))


def _predict(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{url}/v1/models/{MODEL}/predict",
        data=body,
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _body(data_dir: Path) -> bytes:
    import csv
    import io

    [row] = list(csv.DictReader(io.StringIO((data_dir / "breast_cancer.csv").read_text())))[:1]
    row.pop("diagnosis")

    def value(text: str) -> float | str:
        try:
            return float(text)
        except ValueError:
            return text

    instance = {k: value(v) for k, v in row.items()}
    return json.dumps({"instances": [instance]}).encode()


def test_local_tampered_model_is_refused_while_production_keeps_serving(
    demo_model: TrainResult, data_dir: Path, tmp_path: Path
) -> None:
    from skyscore.adapters.local import LocalBlobStore
    from skyscore.local.runtime import LocalRuntime
    from skyscore.model.registry import ModelRegistry

    home = tmp_path / "home"
    store = LocalBlobStore(home)
    registry = ModelRegistry(store, refresh_seconds=0)
    registry.register(demo_model.card, demo_model.onnx_bytes, name=MODEL)
    registry.promote(MODEL, "1")
    body = _body(data_dir)
    with LocalRuntime(
        home, port=0, registry=registry, log_to_stderr=False, retraining=False, watch_inbox=False
    ) as runtime:
        status, answer = _predict(runtime.url, body)
        assert (status, answer["version"]) == (200, "1")
        registry.register(demo_model.card, demo_model.onnx_bytes, name=MODEL)
        _tamper(store, "2")
        with pytest.raises(IntegrityError):
            registry.promote(MODEL, "2", reason="a tampered artifact")
        with pytest.raises(IntegrityError):
            registry.get_predictor(MODEL, "2")
        assert registry.alias_target(MODEL) == "1"
        for _ in range(5):
            assert _predict(runtime.url, body) == (status, answer)


def test_aws_tampered_model_is_refused_while_production_keeps_serving(
    moto_url: str, demo_model: TrainResult, data_dir: Path, tmp_path: Path
) -> None:
    import base64

    from aws_moto import sample_event
    from functions.aws import http

    body = _body(data_dir)

    def predict() -> tuple[int, bytes]:
        request = sample_event("http-api-predict.json")
        path = f"/v1/models/{MODEL}/predict"
        request["rawPath"] = request["requestContext"]["http"]["path"] = path
        request["requestContext"]["http"]["method"] = "POST"
        request["headers"] = {"content-type": "application/json"}
        request["body"] = base64.b64encode(body).decode()
        request["isBase64Encoded"] = True
        response = http.handler(request, lambda_context())
        raw = response["body"]
        return response["statusCode"], (
            base64.b64decode(raw) if response.get("isBase64Encoded") else raw.encode()
        )

    with aws_account(moto_url, tmp_path, demo_model) as aws:
        status, first = predict()
        assert status == 200 and json.loads(first)["version"] == "1"
        registry = aws.registry()
        registry.register(demo_model.card, demo_model.onnx_bytes, name=MODEL)
        _tamper(aws.store(), "2")
        with pytest.raises(IntegrityError):
            registry.promote(MODEL, "2")
        assert registry.alias_target(MODEL) == "1"
        assert predict() == (200, first)


# --------------------------------------------------------------------------------------------
# training jobs that fail, are worse, or leave an unusable candidate
# --------------------------------------------------------------------------------------------


def test_failed_worse_and_unusable_jobs_leave_production_serving(
    demo_model: TrainResult, worse_model: TrainResult, data_dir: Path, tmp_path: Path
) -> None:
    from skyscore.adapters.local import LocalBlobStore, LocalJobRunner
    from skyscore.lifecycle.retrain import RetrainController, RetrainPolicy
    from skyscore.local.runtime import LocalRuntime
    from skyscore.model.card import card_to_json
    from skyscore.model.registry import ModelRegistry
    from skyscore.ports import JobSpec

    home = tmp_path / "home"
    store = LocalBlobStore(home)
    registry = ModelRegistry(store, refresh_seconds=0)
    registry.register(demo_model.card, demo_model.onnx_bytes, name=MODEL)
    registry.promote(MODEL, "1")
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    (artifacts / "worse.onnx").write_bytes(worse_model.onnx_bytes)
    (artifacts / "worse.json").write_bytes(card_to_json(worse_model.card))
    broken = bytearray(worse_model.onnx_bytes)
    broken[len(broken) // 2] ^= 0xFF
    (artifacts / "broken.onnx").write_bytes(bytes(broken))
    copy = (  # what the entrypoint leaves in its output directory, from files made here
        "import os, shutil, sys; os.makedirs(sys.argv[3], exist_ok=True); "
        "shutil.copy(sys.argv[1], sys.argv[3] + '/model.onnx'); "
        "shutil.copy(sys.argv[2], sys.argv[3] + '/card.json')"
    )
    jobs = {
        # the training process dies
        "failed": lambda out: [sys.executable, "-c", "raise SystemExit(3)"],
        # a valid model that is worse than production on the same held-out rows
        "rejected": lambda out: [
            sys.executable,
            "-c",
            copy,
            str(artifacts / "worse.onnx"),
            str(artifacts / "worse.json"),
            str(out),
        ],
        # an artifact that does not match its card
        "unusable": lambda out: [
            sys.executable,
            "-c",
            copy,
            str(artifacts / "broken.onnx"),
            str(artifacts / "worse.json"),
            str(out),
        ],
    }
    expected = {"failed": "failed", "rejected": "rejected", "unusable": "failed"}
    current: list[str] = []

    def command(spec: JobSpec, output_dir: Path) -> list[str]:
        result: list[str] = jobs[current[-1]](output_dir)
        return result

    controller = RetrainController(
        store,
        registry,
        LocalJobRunner(home, command=command),
        policy=RetrainPolicy(cooldown_seconds=0, daily_cap=100, min_new_rows=10),
    )
    body = _body(data_dir)
    with LocalRuntime(
        home, port=0, registry=registry, log_to_stderr=False, retraining=False, watch_inbox=False
    ) as runtime:
        status, served = _predict(runtime.url, body)
        assert status == 200 and served["version"] == "1"
        for round_number, kind in enumerate(jobs):
            current.append(kind)
            labelled = home / "training" / MODEL / f"batch-{round_number}.csv"
            labelled.parent.mkdir(parents=True, exist_ok=True)
            labelled.write_bytes((data_dir / "breast_cancer.csv").read_bytes())
            decision = controller.consider(MODEL, "drift", reason=f"test: {kind} job")
            assert decision.action == "started", decision
            assert decision.job_id is not None
            controller.runner.wait(decision.job_id, timeout=60)  # type: ignore[attr-defined]
            [verdict] = controller.poll(MODEL)
            assert verdict.action == expected[kind], (kind, verdict)
            assert registry.alias_target(MODEL) == "1"
            assert _predict(runtime.url, body) == (status, served), kind
        moves = [e for e in registry.history(MODEL) if e["action"] in ("promoted", "rolled_back")]
        assert [e["version"] for e in moves] == ["1"]


# --------------------------------------------------------------------------------------------
# concurrent promote / rollback
# --------------------------------------------------------------------------------------------


def _check_alias(registry: Any, succeeded: int) -> None:
    """No move was lost: the history's moves (previous → version) form one trail from the
    first promotion to the alias's target, each move leaving from where another arrived (a
    lost update, two writers both moving away from one state, breaks the count of a node's
    ways in and out). A call may return without an event: promoting the version the alias
    already has (another writer got there first) changes nothing.

    Order is checked by the counts, not by the events' time stamps: an event is written just
    after its alias move, so two writers' events can land in the other order."""
    moves = [e for e in registry.history(MODEL) if e["action"] in ("promoted", "rolled_back")]
    assert 1 < len(moves) <= succeeded, (len(moves), succeeded)
    balance: dict[str | None, int] = {}
    for move in moves:
        balance[move["previous"]] = balance.get(move["previous"], 0) + 1
        balance[move["version"]] = balance.get(move["version"], 0) - 1
    target = registry.alias_target(MODEL)
    expected = {None: 1, target: -1} if target is not None else {}
    unbalanced = {k: v for k, v in balance.items() if v}
    assert unbalanced == {k: v for k, v in expected.items() if v}, (unbalanced, moves)
    record = registry.alias_history(MODEL)
    assert len(record) == sum(
        1 if m["action"] == "promoted" and m["previous"] else -1 for m in moves if m["previous"]
    ), record


def _moves(registry: Any, seed: int, count: int, versions: list[str]) -> int:
    """``count`` random promotions and rollbacks; how many of them took effect."""
    from skyscore.errors import ConflictError

    rng = random.Random(seed)
    done = 0
    for _ in range(count):
        try:
            if rng.random() < 0.35:
                registry.rollback(MODEL, reason=f"writer {seed}")
            else:
                before = registry.alias_target(MODEL)
                version = rng.choice([v for v in versions if v != before])
                registry.promote(MODEL, version, reason=f"writer {seed}")
            done += 1
        except ConflictError:  # lost a race (AliasConflict), or nothing to roll back to
            pass
    return done


def test_concurrent_promote_and_rollback_threads_on_s3(
    moto_url: str, demo_model: TrainResult, tmp_path: Path
) -> None:
    with aws_account(moto_url, tmp_path, demo_model) as aws:
        registry = aws.registry()
        for _ in range(3):
            registry.register(demo_model.card, demo_model.onnx_bytes, name=MODEL)
        versions = registry.list_versions(MODEL)
        results = run_threads(8, lambda i: _moves(aws.registry(), i, 6, versions))
        assert not [r for r in results if isinstance(r, BaseException)], results
        succeeded = 1 + sum(results)  # and the first promotion
        print(f"S3: {succeeded} alias moves by 8 threads")
        assert succeeded > 1
        _check_alias(registry, succeeded)


WRITER = textwrap.dedent(
    """
    import sys, json
    sys.path.insert(0, sys.argv[1])
    from test_faults import _moves
    from skyscore.adapters.local import LocalBlobStore
    from skyscore.model.registry import ModelRegistry
    registry = ModelRegistry(LocalBlobStore(sys.argv[2]), refresh_seconds=0)
    print(json.dumps(_moves(registry, int(sys.argv[3]), 8, json.loads(sys.argv[4]))))
    """
)


def test_concurrent_promote_and_rollback_processes_on_a_local_registry(
    demo_model: TrainResult, tmp_path: Path
) -> None:
    from skyscore.adapters.local import LocalBlobStore
    from skyscore.model.registry import ModelRegistry

    root = tmp_path / "registry"
    registry = ModelRegistry(LocalBlobStore(root), refresh_seconds=0)
    for _ in range(4):
        registry.register(demo_model.card, demo_model.onnx_bytes, name=MODEL)
    registry.promote(MODEL, "1")
    versions = json.dumps(registry.list_versions(MODEL))
    here = str(Path(__file__).resolve().parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, str(Path(here).parent)])}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, here, str(root), str(seed), versions],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for seed in range(4)
    ]
    succeeded = 1
    for writer in writers:
        out, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err.decode()[-2000:]
        succeeded += int(out.decode().strip().splitlines()[-1])
    print(f"local: {succeeded} alias moves by 4 processes")
    _check_alias(registry, succeeded)
