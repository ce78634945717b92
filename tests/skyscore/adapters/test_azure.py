"""The Azure adapters against Azurite (blob store: streaming, staged blocks, ETag conditions;
Storage Queue: the host's base64, poison queue) and the Azure ML job runner against a local fake
of its REST API that checks the documented request shape and the bearer token."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from azurite import (
    DEAD_LETTER_AFTER,
    AzureMLFake,
    Azurite,
    azureml_fake,
    azurite_blob_store,
    azurite_queue,
    azurite_server,
)
from skyscore.adapters.azure import (
    AZURE,
    AppInsightsMetrics,
    AzureBlobStore,
    AzureMLJobRunner,
    AzureQueue,
)
from skyscore.coordination import claims
from skyscore.errors import ConfigError, ConflictError, NotFound, SkyscoreError
from skyscore.model.card import card_to_json
from skyscore.model.registry import ModelRegistry
from skyscore.ports import JobSpec, JobStatus
from skyscore.runtime.settings import Settings
from skyscore.training.train import TrainResult

__all__ = ["azurite_blob_store", "azurite_queue", "azurite_server"]  # fixtures used here


@pytest.fixture
def store(azurite_blob_store: AzureBlobStore) -> AzureBlobStore:
    return azurite_blob_store


@pytest.fixture
def prefixed(azurite_server: Azurite, store: AzureBlobStore) -> AzureBlobStore:
    """A store under ``root/`` of the same container, with small blocks."""
    return AzureBlobStore(
        store.container,
        "root/",
        connection_string=azurite_server.connection_string,
        block_bytes=1024,
    )


def race(writers: int, attempt: Any) -> list[int]:
    """Run ``attempt(i)`` in threads at once; the indexes that did not raise ConflictError."""
    barrier = threading.Barrier(writers)
    winners: list[int] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            attempt(i)
            winners.append(i)
        except ConflictError:
            pass

    threads = [threading.Thread(target=run, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return winners


# ------------------------------------------------------------------------------ Blob Storage
def test_blob_store_contract(prefixed: AzureBlobStore, store: AzureBlobStore) -> None:
    s = prefixed
    assert s.uri == f"{store.container_url}/root/"
    assert s.stat("a/b.txt") is None and not s.exists("a/b.txt")
    with pytest.raises(NotFound):
        s.read_bytes("a/b.txt")
    with pytest.raises(NotFound), s.open_read("a/b.txt"):
        pass
    v1 = s.write_bytes("a/b.txt", b"hello")
    s.write_bytes("a/c.txt", b"world!")
    s.write_bytes("z.txt", b"")
    assert store.read_bytes("root/a/b.txt") == b"hello"  # the blob's full name has the prefix
    info = s.stat("a/b.txt")
    assert info is not None and info.size == 5 and info.version == v1
    listed = list(s.list())
    assert [i.key for i in listed] == ["a/b.txt", "a/c.txt", "z.txt"]
    assert listed[0].version == v1  # listings spell the ETag as the API does
    assert [i.key for i in s.list("a/")] == ["a/b.txt", "a/c.txt"]
    assert s.read_versioned("a/c.txt")[1] == s.stat("a/c.txt").version  # type: ignore[union-attr]
    with s.open_read("a/c.txt") as handle:
        assert handle.read(3) == b"wor" and handle.read() == b"ld!"
    with s.open_read("z.txt") as handle:
        assert handle.read() == b""
    with s.open_range("a/c.txt", 1, 4) as handle:
        assert handle.read() == b"orl"
    with s.open_range("a/c.txt", 2, 2) as handle:
        assert handle.read() == b""
    with s.open_range("a/c.txt", 4, 20) as handle:
        assert handle.read() == b"d!"  # past the end: short, as from a file
    with s.open_range("a/c.txt", 6, 20) as handle:
        assert handle.read() == b""
    with pytest.raises(NotFound), s.open_range("a/missing.txt", 0, 4):
        pass
    with pytest.raises(NotFound), s.open_range("a/missing.txt", 0, 0):
        pass
    s.delete("a/b.txt")
    s.delete("a/b.txt")  # missing: fine
    assert not s.exists("a/b.txt")
    with pytest.raises(ValueError):
        s.write_bytes("/abs", b"")
    with pytest.raises(ValueError):
        s.write_bytes("x", b"", if_absent=True, if_version=v1)


def test_names_uris_and_event_versions(prefixed: AzureBlobStore) -> None:
    s = prefixed
    key = "incoming/cancer/a b+c%.csv"
    uri = s.uri_for(key)
    assert uri == f"{s.container_url}/root/incoming/cancer/a%20b%2Bc%25.csv"
    assert s.key_for_uri(uri) == key
    assert s.key_for_uri(f"{s.container_url}/other/x.csv") is None
    assert s.key_for_uri("https://elsewhere.blob.core.windows.net/c/root/x") is None
    assert s.key_for_object(s.container, "root/incoming/x.csv") == "incoming/x.csv"
    assert s.key_for_object(s.container, "outside/x.csv") is None
    assert s.key_for_object("another", "root/incoming/x.csv") is None
    version = s.write_bytes(key, b"x")
    assert version.startswith('"') and s.same_version(version.strip('"'), version)
    assert not s.same_version("0x8D4E44A24ABE7F1", version)


def test_if_absent_is_enforced_by_azure(store: AzureBlobStore) -> None:
    store.write_bytes("claim", b"first", if_absent=True)
    with pytest.raises(ConflictError):
        store.write_bytes("claim", b"second", if_absent=True)
    assert store.read_bytes("claim") == b"first"
    winners = race(6, lambda i: store.write_bytes("race", str(i).encode(), if_absent=True))
    assert len(winners) == 1
    assert store.read_bytes("race") == str(winners[0]).encode()


def test_compare_and_swap_on_the_etag(store: AzureBlobStore) -> None:
    v1 = store.write_bytes("alias", b"1")
    v2 = store.write_bytes("alias", b"2", if_version=v1)
    assert v2 != v1 and store.read_bytes("alias") == b"2"
    with pytest.raises(ConflictError):
        store.write_bytes("alias", b"3", if_version=v1)  # stale
    with pytest.raises(ConflictError):
        store.write_bytes("missing", b"x", if_version=v1)  # gone
    assert store.read_bytes("alias") == b"2" and not store.exists("missing")
    winners = race(6, lambda i: store.write_bytes("alias", str(i).encode(), if_version=v2))
    assert len(winners) == 1
    assert store.read_bytes("alias") == str(winners[0]).encode()


def test_a_stale_claim_is_taken_over_by_one_taker(store: AzureBlobStore) -> None:
    store.write_bytes("claims/x.json", b'{"owner":"dead","at":0.0}')
    outcomes: list[str] = []

    def take(i: int) -> None:
        claim = claims.acquire(store, "claims/x.json", f"taker-{i}", lease_seconds=1.0)
        outcomes.append(claim.outcome)

    race(5, take)
    assert sorted(outcomes).count("acquired") == 1, outcomes


def test_open_write_commits_staged_blocks(prefixed: AzureBlobStore, store: AzureBlobStore) -> None:
    data = bytes(range(256)) * 20  # 5,120 bytes: five blocks of 1 KiB
    with prefixed.open_write("out/big.bin") as handle:
        for offset in range(0, len(data), 700):
            handle.write(data[offset : offset + 700])
        assert not prefixed.exists("out/big.bin")  # nothing visible before the commit
    assert prefixed.read_bytes("out/big.bin") == data
    committed, uncommitted = store.client.get_blob_client("root/out/big.bin").get_block_list("all")
    assert [b.size for b in committed] == [1024] * 5 and not uncommitted
    with prefixed.open_write("out/small.txt") as handle:
        handle.write(b"tiny")  # under one block: a single upload
    assert prefixed.read_bytes("out/small.txt") == b"tiny"


def test_open_write_leaves_nothing_on_error(prefixed: AzureBlobStore) -> None:
    prefixed.write_bytes("out/kept.bin", b"old")
    with pytest.raises(RuntimeError), prefixed.open_write("out/kept.bin") as handle:
        handle.write(b"x" * 3000)
        raise RuntimeError("boom")
    assert prefixed.read_bytes("out/kept.bin") == b"old"
    with pytest.raises(RuntimeError), prefixed.open_write("out/new.bin") as handle:
        handle.write(b"x" * 3000)
        raise RuntimeError("boom")
    assert not prefixed.exists("out/new.bin")


def test_registry_on_azure(store: AzureBlobStore, demo_model: TrainResult) -> None:
    registry = ModelRegistry(store, refresh_seconds=0)
    card = registry.register(demo_model.card, demo_model.onnx_bytes, name="cancer")
    registry.promote("cancer", card.version)
    predictor = registry.get_predictor("cancer")
    assert predictor.version == card.version
    assert store.exists(f"models/cancer/{card.version}/model.onnx")


# ------------------------------------------------------------------------------ Storage Queues
def test_queue_round_trip_in_the_hosts_encoding(
    azurite_queue: AzureQueue, azurite_server: Azurite
) -> None:
    queue = azurite_queue
    body = json.dumps({"kind": "object", "key": "incoming/a.csv"}).encode()
    message_id = queue.send(body)
    raw = azurite_server.queue_service().get_queue_client(queue.name).peek_messages()[0]
    assert raw.id == message_id
    assert base64.b64decode(raw.content) == body  # what the Functions host decodes
    [got] = queue.receive(visibility_timeout=30)
    assert got.body == body and got.receive_count == 1
    assert queue.receive() == []  # hidden while in flight
    queue.release(got)
    [again] = queue.receive()
    assert again.id == message_id and again.receive_count == 2
    queue.ack(again)
    queue.ack(again)  # already deleted: fine
    assert queue.receive() == []
    binary = bytes(range(256))
    queue.send(binary)
    [got] = queue.receive()
    assert got.body == binary
    queue.ack(got)


def test_attributes_travel_in_an_envelope_only_when_given(
    azurite_queue: AzureQueue, azurite_server: Azurite
) -> None:
    from skyscore.adapters.azure import unwrap, wrap

    queue = azurite_queue
    queue.send(b"plain")
    queue.send(b"\x00binary", {"n": "1"})
    raw = [
        base64.b64decode(m.content)
        for m in azurite_server.queue_service().get_queue_client(queue.name).peek_messages(2)
    ]
    assert raw[0] == b"plain"  # exactly the body: what a queue-triggered function gets
    assert unwrap(raw[1]) == (b"\x00binary", {"n": "1"}) and raw[1] != b"\x00binary"
    got = sorted(queue.receive(), key=lambda m: m.body)
    assert [(m.body, m.attributes) for m in got] == [(b"\x00binary", {"n": "1"}), (b"plain", {})]
    look_alike = b'{"skyscore-envelope":1,"oops"}'
    assert unwrap(look_alike) == (look_alike, {})
    assert unwrap(wrap(b"", {})) == (b"", {})


def test_poison_messages_go_to_the_poison_queue(azurite_queue: AzureQueue) -> None:
    queue = azurite_queue
    assert queue.max_receives == DEAD_LETTER_AFTER
    assert isinstance(queue.dead_letter, AzureQueue)
    assert queue.dead_letter.name == f"{queue.name}-poison"
    queue.send(b"never works")
    for _ in range(DEAD_LETTER_AFTER):
        [message] = queue.receive()
        queue.release(message)
    assert queue.receive() == []  # the next delivery went to the poison queue
    [poisoned] = queue.dead_letter.receive()
    assert poisoned.body == b"never works"


# ------------------------------------------------------------------------------ Azure ML
@pytest.fixture
def fake() -> Iterator[AzureMLFake]:
    with azureml_fake() as running:
        yield running


class FixedToken:
    """A credential with the fake's token (the managed-identity path has its own test)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        return AccessToken(self.token, 2_000_000_000)


def runner_for(fake: AzureMLFake, **kwargs: Any) -> AzureMLJobRunner:
    options: dict[str, Any] = {
        "datastore": "skyscoredata",
        "container_url": "https://acct.blob.core.windows.net/data",
        "environment_id": "azureml:skyscore-train:3",
        "cpu_compute": "cpu-cluster",
        "gpu_compute": "gpu-cluster",
        "endpoint": fake.url,
        "credential": FixedToken(fake.token),
        "clock": lambda: datetime(2026, 12, 1, 10, 30, 0, 123000, tzinfo=UTC),
    }
    options.update(kwargs)
    return AzureMLJobRunner(fake.subscription, fake.resource_group, fake.workspace, **options)


SPEC = JobSpec(
    model_name="cancer",
    data_uri="https://acct.blob.core.windows.net/data/training/cancer/",
    output_uri="https://acct.blob.core.windows.net/data/staging/cancer/20261201T103000Z/",
    target="diagnosis",
    estimator="logreg",
    id_column="patient id",
)


def test_start_sends_the_documented_command_job(fake: AzureMLFake) -> None:
    runner = runner_for(fake)
    status = runner.start(SPEC)
    assert fake.errors == []
    assert status == JobStatus(
        "skyscore-cancer-20261201103000123", "cancer", "pending", SPEC.output_uri, status.message
    )
    [request] = fake.requests
    assert request["method"] == "PUT"
    assert request["path"] == f"{fake.workspace_id}/jobs/{status.job_id}"
    assert request["query"] == {"api-version": "2024-04-01"}
    assert request["headers"]["authorization"] == f"Bearer {fake.token}"
    assert runner._credential.scopes == [("https://management.azure.com/.default",)]
    props = request["body"]["properties"]
    assert props["jobType"] == "Command"
    assert props["command"] == (
        "python -m skyscore.training.train ${{inputs.data}} --target diagnosis --name cancer"
        " --estimator logreg --id-column 'patient id' --output-dir ${{outputs.model}}"
    )
    assert props["environmentId"] == "azureml:skyscore-train:3"
    assert props["computeId"] == f"{fake.workspace_id}/computes/cpu-cluster"
    assert props["inputs"] == {
        "data": {
            "jobInputType": "uri_folder",
            "uri": "azureml://datastores/skyscoredata/paths/training/cancer/",
            "mode": "ReadOnlyMount",
        }
    }
    assert props["outputs"] == {
        "model": {
            "jobOutputType": "uri_folder",
            "uri": "azureml://datastores/skyscoredata/paths/staging/cancer/20261201T103000Z/",
            "mode": "ReadWriteMount",
        }
    }
    assert props["limits"] == {"jobLimitsType": "Command", "timeout": "PT4H0M0S"}
    assert props["tags"] == {"skyscore-model": "cancer"}


def test_gpu_compute_only_for_a_gpu_estimator(fake: AzureMLFake) -> None:
    from dataclasses import replace

    runner = runner_for(fake)
    assert runner.compute_for(SPEC).endswith("/computes/cpu-cluster")
    assert runner.compute_for(replace(SPEC, estimator="hgb")).endswith("/computes/cpu-cluster")
    assert runner.compute_for(replace(SPEC, estimator="xgboost")).endswith("/computes/gpu-cluster")
    assert runner.compute_for(replace(SPEC, instance_type="big")).endswith("/computes/big")
    no_gpu = runner_for(fake, gpu_compute="")
    assert no_gpu.compute_for(replace(SPEC, estimator="xgboost")).endswith("/computes/cpu-cluster")


@pytest.mark.parametrize(
    ("service", "state"),
    [
        ("NotStarted", "pending"),
        ("Queued", "pending"),
        ("Preparing", "pending"),
        ("Provisioning", "pending"),
        ("Running", "running"),
        ("Finalizing", "running"),
        ("CancelRequested", "running"),
        ("Completed", "completed"),
        ("Failed", "failed"),
        ("Canceled", "stopped"),
        ("SomethingNew", "running"),  # unknown: not finished, so never two jobs in flight
    ],
)
def test_status_mapping(fake: AzureMLFake, service: str, state: str) -> None:
    runner = runner_for(fake)
    job = runner.start(SPEC).job_id
    fake.set_status(job, service)
    described = runner.describe(job)
    assert (described.state, described.model_name, described.output_uri) == (
        state,
        "cancer",
        SPEC.output_uri,
    )
    assert described.done == (state in ("completed", "failed", "stopped"))


def test_describe_unknown_job_is_not_found(fake: AzureMLFake) -> None:
    runner = runner_for(fake)
    with pytest.raises(NotFound):
        runner.describe("skyscore-nope")
    with pytest.raises(NotFound):
        runner.describe("../../etc")


def test_list_follows_next_links_and_filters_by_model(fake: AzureMLFake) -> None:
    from dataclasses import replace

    stamps = iter(datetime(2026, 12, 1, 10, m, tzinfo=UTC) for m in range(10))
    runner = runner_for(fake, clock=lambda: next(stamps))
    first = runner.start(SPEC).job_id
    other = runner.start(replace(SPEC, model_name="cancer-2")).job_id
    second = runner.start(SPEC).job_id
    fake.set_status(first, "Completed")
    assert [j.job_id for j in runner.list_jobs("cancer")] == [second, first]  # newest first
    assert [j.job_id for j in runner.active_jobs("cancer")] == [second]
    assert [j.job_id for j in runner.list_jobs("cancer-2")] == [other]
    lists = [r for r in fake.requests if r["method"] == "GET" and r["path"].endswith("/jobs")]
    assert lists[0]["query"] == {
        "api-version": "2024-04-01",
        "jobType": "Command",
        "tag": "skyscore-model",
    }
    assert any("$skipToken" in r["query"] for r in lists)  # pages were followed
    assert fake.errors == []


def test_next_link_to_another_host_is_not_followed(fake: AzureMLFake) -> None:
    stamps = iter(datetime(2026, 12, 1, 10, m, tzinfo=UTC) for m in range(10))
    runner = runner_for(fake, clock=lambda: next(stamps))
    runner.start(SPEC)
    runner.start(SPEC)
    original = fake._list

    def foreign(query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        status, body, headers = original(query)
        if "nextLink" in body:
            body["nextLink"] = "https://evil.example/steal"
        return status, body, headers

    fake._list = foreign  # type: ignore[method-assign]
    assert len(runner.list_jobs("cancer")) == 1
    assert fake.errors == []


def test_bad_token_and_service_errors_are_reported(fake: AzureMLFake) -> None:
    runner = runner_for(fake, credential=FixedToken("wrong"))
    with pytest.raises(SkyscoreError, match="401"):
        runner.start(SPEC)
    with pytest.raises(ValueError):
        runner_for(fake).start(
            JobSpec("m", "https://other.blob.core.windows.net/x/", SPEC.output_uri, "y")
        )


def test_materialize_checks_what_the_job_wrote(
    store: AzureBlobStore, demo_model: TrainResult
) -> None:
    runner = AzureMLJobRunner(
        "sub",
        "rg",
        "ws",
        datastore="ds",
        container_url=store.container_url,
        environment_id="azureml:env:1",
        cpu_compute="cpu",
        credential=FixedToken("t"),
    )
    status = JobStatus("job-1", "cancer", "completed", store.uri_for("staging/cancer/s1/"))
    with pytest.raises(NotFound):
        runner.materialize(status, store)
    store.write_bytes("staging/cancer/s1/model.onnx", demo_model.onnx_bytes)
    store.write_bytes("staging/cancer/s1/card.json", card_to_json(demo_model.card))
    runner.materialize(status, store)  # nothing to unpack
    outside = JobStatus("job-1", "cancer", "completed", "https://x.blob.core.windows.net/c/s/")
    with pytest.raises(SkyscoreError):
        runner.materialize(outside, store)


# ------------------------------------------------------------------------------ Backend
def settings(environ: dict[str, str]) -> Settings:
    return Settings.from_env(AZURE.defaults, environ)


def test_backend_from_settings(azurite_server: Azurite, store: AzureBlobStore) -> None:
    env = {
        "SKYSCORE_STORAGE": azurite_server.connection_string,
        "SKYSCORE_CONTAINER": store.container,
        "SKYSCORE_PREFIX": "tenant-a",
        "SKYSCORE_QUEUE": "work",
        "SKYSCORE_QUEUE_MAX_DEQUEUE": "3",
    }
    built = AZURE.store(settings(env))
    assert built.uri == f"{store.container_url}/tenant-a/"
    built.write_bytes("x.txt", b"1")
    assert store.read_bytes("tenant-a/x.txt") == b"1"
    queue = AZURE.queue(settings(env))
    assert queue is not None and queue.max_receives == 3
    assert isinstance(queue.dead_letter, AzureQueue) and queue.dead_letter.name == "work-poison"
    assert AZURE.queue(settings({k: v for k, v in env.items() if k != "SKYSCORE_QUEUE"})) is None
    assert AZURE.defaults.metrics_format == "json"
    assert settings(env).lease_seconds == 1800.0


def test_missing_settings_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="SKYSCORE_CONTAINER"):
        AZURE.store(settings({"SKYSCORE_STORAGE": "UseDevelopmentStorage=true"}))
    with pytest.raises(ConfigError, match="SKYSCORE_STORAGE"):
        AZURE.store(settings({"SKYSCORE_CONTAINER": "data"}))
    env = {"SKYSCORE_STORAGE": "UseDevelopmentStorage=true", "SKYSCORE_CONTAINER": "data"}
    with pytest.raises(ConfigError, match="SKYSCORE_AZUREML_SUBSCRIPTION_ID"):
        AZURE.jobs(settings(env))


def test_identity_based_storage_settings() -> None:
    env = {
        "SKYSCORE_STORAGE__accountName": "skyscoredata",
        "SKYSCORE_STORAGE__clientId": "11111111-2222-3333-4444-555555555555",
        "SKYSCORE_CONTAINER": "data",
        "SKYSCORE_QUEUE": "work",
    }
    built = AZURE.store(settings(env))
    assert built.uri == "https://skyscoredata.blob.core.windows.net/data/"
    queue = AZURE.queue(settings(env))
    assert queue is not None and queue._account_url == "https://skyscoredata.queue.core.windows.net"
    explicit = {**env, "SKYSCORE_STORAGE__blobServiceUri": "https://b.example.net/"}
    assert AZURE.store(settings(explicit)).uri == "https://b.example.net/data/"


def test_jobs_authenticate_with_the_managed_identity(
    fake: AzureMLFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Azure the runner's token comes from the App Service identity endpoint."""
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{fake.url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", fake.identity_header)
    env = {
        "SKYSCORE_STORAGE": "UseDevelopmentStorage=true",
        "SKYSCORE_CONTAINER": "data",
        "SKYSCORE_AZUREML_SUBSCRIPTION_ID": fake.subscription,
        "SKYSCORE_AZUREML_RESOURCE_GROUP": fake.resource_group,
        "SKYSCORE_AZUREML_WORKSPACE": fake.workspace,
        "SKYSCORE_AZUREML_DATASTORE": "skyscoredata",
        "SKYSCORE_AZUREML_ENVIRONMENT": "azureml:skyscore-train:3",
        "SKYSCORE_AZUREML_CPU_COMPUTE": "cpu-cluster",
        "SKYSCORE_AZUREML_ENDPOINT": fake.url,
    }
    runner = AZURE.jobs(settings(env))
    spec = JobSpec(
        "cancer",
        "http://127.0.0.1:10000/devstoreaccount1/data/training/cancer/",
        "http://127.0.0.1:10000/devstoreaccount1/data/staging/cancer/s/",
        "diagnosis",
    )
    runner.start(spec)
    assert fake.errors == [] and fake.tokens_issued == 1
    assert fake.requests[0]["headers"]["authorization"] == f"Bearer {fake.token}"


def test_metrics_become_application_insights_traces(caplog: pytest.LogCaptureFixture) -> None:
    metrics = AZURE.metrics(settings({}))
    assert isinstance(metrics, AppInsightsMetrics)
    with caplog.at_level(logging.INFO, logger="skyscore.metrics"):
        metrics.gauge("max_psi", 0.31, model="cancer", version="3")
        metrics.count("rows", 10, model="cancer", version="3")
        metrics.flush()
    [record] = [r for r in caplog.records if r.name == "skyscore.metrics"]
    line = json.loads(record.getMessage())
    assert line == {
        "type": "metric",
        "namespace": "skyscore",
        "model": "cancer",
        "version": "3",
        "max_psi": 0.31,
        "rows": 10.0,
    }
