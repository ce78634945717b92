"""Azurite (the npm Azure Storage emulator) for the Azure tests: blob and queue services on free
ports of 127.0.0.1, started once per session, with real azure-storage-blob/queue clients; and a
local fake of the Azure ML REST API and the managed-identity endpoint that checks what it gets.

Import the fixtures where they are used (``from azurite import azurite_blob_store, ...``).
Azurite comes from ``node_modules`` (``npm ci``, which ``make test`` runs); when it or node is
missing the tests fail under ``CI=true`` and skip elsewhere, with the reason.
"""

from __future__ import annotations

import atexit
import contextlib
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode

import pytest

from needs import missing
from rest_fake import JSON, RestFake

ROOT = Path(__file__).resolve().parents[1]
AZURITE = ROOT / "node_modules" / ".bin" / "azurite"
ACCOUNT = "devstoreaccount1"
# Azurite's documented, public development key (not a secret)
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
DEAD_LETTER_AFTER = 2  # the queue fixture's dequeue count before ``<queue>-poison``


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _wait_for(port: int, process: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"azurite exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"azurite did not listen on 127.0.0.1:{port}")


@dataclass(frozen=True)
class Azurite:
    """A running Azurite: its endpoints and the connection string the functions read."""

    blob_port: int
    queue_port: int
    table_port: int

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.blob_port}/{ACCOUNT}"

    @property
    def queue_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.queue_port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.blob_endpoint};QueueEndpoint={self.queue_endpoint};"
        )

    def blob_service(self) -> Any:
        """A ``BlobServiceClient`` on the emulator."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def queue_service(self) -> Any:
        """A ``QueueServiceClient`` on the emulator."""
        from azure.storage.queue import QueueServiceClient

        return QueueServiceClient.from_connection_string(self.connection_string)

    def new_container(self, stem: str = "skyscore") -> str:
        """A fresh, empty container (names need 3-63 lower-case characters)."""
        name = f"{stem}-{uuid.uuid4().hex[:12]}"
        self.blob_service().create_container(name)
        return name

    def new_queue(self, stem: str = "skyscore") -> str:
        """A fresh queue and its ``-poison`` queue; returns the work queue's name."""
        name = f"{stem}-{uuid.uuid4().hex[:12]}"
        service = self.queue_service()
        service.create_queue(name)
        service.create_queue(f"{name}-poison")
        return name


@contextlib.contextmanager
def azurite_process() -> Iterator[Azurite]:
    """Azurite in memory on three free ports; stopped (by its own pid) on exit."""
    node = shutil.which("node")
    if node is None or not AZURITE.exists():
        missing(f"Azurite needs node and {AZURITE.relative_to(ROOT)} (run `npm ci`)")
    blob, queue, table = _free_ports(3)
    command = [
        str(AZURITE),
        "--silent",
        "--inMemoryPersistence",
        "--skipApiVersionCheck",
        "--loose",
        "--disableTelemetry",
        *("--blobHost", "127.0.0.1", "--blobPort", str(blob)),
        *("--queueHost", "127.0.0.1", "--queuePort", str(queue)),
        *("--tableHost", "127.0.0.1", "--tablePort", str(table)),
    ]
    # stderr to a file, not a pipe: a full pipe would block the emulator
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors
        )
        try:
            deadline = time.monotonic() + 30
            try:
                _wait_for(blob, process, deadline)
                _wait_for(queue, process, deadline)
            except (RuntimeError, TimeoutError) as error:
                process.kill()
                process.wait(timeout=10)
                errors.seek(0)
                stderr = errors.read().decode("utf-8", "replace")[-2000:]
                missing(f"Azurite did not start: {error}\n{stderr}")
            yield Azurite(blob, queue, table)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)


_shared: list[Azurite] = []
_shared_lock = threading.Lock()
_stack = contextlib.ExitStack()


def shared_azurite() -> Azurite:
    """The session's one Azurite, started on first use and stopped when the process exits.

    Not a fixture dependency on purpose: importing just ``azurite_blob_store`` or
    ``azurite_queue`` (as the contract suite does) is enough to use them.
    """
    with _shared_lock:
        if not _shared:
            _shared.append(_stack.enter_context(azurite_process()))
            atexit.register(_stack.close)
        return _shared[0]


@pytest.fixture(scope="session")
def azurite_server() -> Azurite:
    """The session's Azurite."""
    return shared_azurite()


@pytest.fixture
def azurite_blob_store() -> Iterator[Any]:
    """An ``AzureBlobStore`` over a fresh container (deleted afterwards)."""
    from skyscore.adapters.azure import AzureBlobStore

    azurite_server = shared_azurite()
    container = azurite_server.new_container()
    yield AzureBlobStore(container, connection_string=azurite_server.connection_string)
    azurite_server.blob_service().delete_container(container)


@pytest.fixture
def azurite_queue() -> Iterator[Any]:
    """An ``AzureQueue`` over a fresh queue whose poison messages (more than
    ``DEAD_LETTER_AFTER`` receives) go to its fresh ``<queue>-poison``."""
    from skyscore.adapters.azure import AzureQueue

    azurite_server = shared_azurite()
    name = azurite_server.new_queue()
    yield AzureQueue(
        name, connection_string=azurite_server.connection_string, max_receives=DEAD_LETTER_AFTER
    )
    service = azurite_server.queue_service()
    for queue in (name, f"{name}-poison"):
        service.delete_queue(queue)


# --------------------------------------------------------------------------------------------
# Azure ML REST API and the App Service managed-identity endpoint, faked on 127.0.0.1
# --------------------------------------------------------------------------------------------

JOB_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.MachineLearningServices/workspaces/(?P<ws>[^/]+)/jobs(?:/(?P<job>[^/]+))?$"
)
INPUT_TYPES = {"uri_folder", "uri_file", "mltable", "custom_model", "mlflow_model", "literal"}
INPUT_MODES = {"ReadOnlyMount", "ReadWriteMount", "Download", "Direct", "EvalMount", "EvalDownload"}
OUTPUT_MODES = {"ReadWriteMount", "Upload", "Direct"}
IDENTITY_API_VERSION = "2019-08-01"


class AzureMLFake(RestFake):
    """What the runner may call, checked against the documented shapes (``Jobs - Create Or
    Update`` / ``Get`` / ``List``, api-version 2024-04-01): a request of another shape or without
    the bearer token is answered 400/401 and recorded in :attr:`errors`. It also serves the App
    Service managed-identity endpoint (``IDENTITY_ENDPOINT``), which hands out :attr:`token`."""

    def __init__(self, subscription: str, resource_group: str, workspace: str) -> None:
        super().__init__()
        self.subscription = subscription
        self.resource_group = resource_group
        self.workspace = workspace
        self.api_version = "2024-04-01"
        self.token = f"token-{uuid.uuid4().hex}"
        self.identity_header = f"header-{uuid.uuid4().hex}"

    @property
    def workspace_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{self.workspace}"
        )

    def app_settings(self) -> dict[str, str]:
        """The function app's Azure ML settings for this workspace, and the App Service
        managed-identity endpoint as Azure sets it in a function app."""
        return {
            "SKYSCORE_AZUREML_SUBSCRIPTION_ID": self.subscription,
            "SKYSCORE_AZUREML_RESOURCE_GROUP": self.resource_group,
            "SKYSCORE_AZUREML_WORKSPACE": self.workspace,
            "SKYSCORE_AZUREML_DATASTORE": "skyscoredata",
            "SKYSCORE_AZUREML_ENVIRONMENT": "azureml:skyscore-train:1",
            "SKYSCORE_AZUREML_CPU_COMPUTE": "cpu-cluster",
            "SKYSCORE_AZUREML_GPU_COMPUTE": "gpu-cluster",
            "SKYSCORE_AZUREML_ENDPOINT": self.url,
            "IDENTITY_ENDPOINT": f"{self.url}/msi/token",
            "IDENTITY_HEADER": self.identity_header,
        }

    def set_status(self, job_id: str, status: str) -> None:
        """Move a job along, as the service would."""
        with self._lock:
            self.jobs[job_id]["properties"]["status"] = status

    def submitted(self) -> list[dict[str, Any]]:
        """The bodies of every job PUT, in order."""
        return [r["body"] for r in self.requests if r["method"] == "PUT"]

    def fail(self, status: int, why: str) -> tuple[int, Any, dict[str, str]]:
        self.errors.append(why)
        code = "BadRequest" if status == 400 else "Unauthorized"
        return status, {"error": {"code": code, "message": why}}, JSON

    def handle(
        self, method: str, target: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        parts, query, lowered = self.split(target, headers)
        if parts.path == "/msi/token":
            return self._identity(query, lowered)
        body, refused = self.api_call(method, parts, query, lowered, raw)
        if refused is not None:
            return refused
        if query.get("api-version") != self.api_version:
            return self.fail(400, f"api-version {query.get('api-version')!r}")
        match = JOB_PATH.match(parts.path)
        if (
            match is None
            or match["sub"] != self.subscription
            or match["rg"] != self.resource_group
            or match["ws"] != self.workspace
        ):
            return self.fail(400, f"not a job path of this workspace: {parts.path}")
        job = match["job"]
        if method == "PUT" and job:
            return self._put(unquote(job), body, lowered)
        if method == "GET" and job:
            with self._lock:
                found = self.jobs.get(unquote(job))
            if found is None:
                return (
                    404,
                    {"error": {"code": "UserError", "message": f"job {job} not found"}},
                    JSON,
                )
            return 200, found, JSON
        if method == "GET":
            return self._list(query)
        return self.fail(400, f"unexpected {method} {parts.path}")

    def _identity(
        self, query: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        if headers.get("x-identity-header") != self.identity_header:
            return self.fail(401, "managed identity request without X-IDENTITY-HEADER")
        if query.get("api-version") != IDENTITY_API_VERSION or not query.get("resource"):
            return self.fail(400, f"managed identity query {query}")
        with self._lock:
            self.tokens_issued += 1
        token = {
            "access_token": self.token,
            "expires_on": str(int(time.time()) + 3600),
            "resource": query["resource"],
            "token_type": "Bearer",
        }
        return 200, token, JSON

    def _put(self, job: str, body: Any, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        problems = self.check_command_job(body)
        if "application/json" not in headers.get("content-type", ""):
            problems.append("Content-Type is not application/json")
        if problems:
            return self.fail(400, "; ".join(problems))
        with self._lock:
            if job in self.jobs:
                return self.fail(400, f"job {job} already exists (jobs cannot be updated)")
            stored = {
                "id": f"{self.workspace_id}/jobs/{job}",
                "name": job,
                "type": "Microsoft.MachineLearningServices/workspaces/jobs",
                "properties": {**body["properties"], "status": "NotStarted"},
                "systemData": {"createdAt": f"2026-12-01T00:00:{len(self.jobs):02d}Z"},
            }
            self.jobs[job] = stored
        return 201, stored, JSON

    def check_command_job(self, body: Any) -> list[str]:
        """Why ``body`` is not a command job body the runner should send (empty: it is)."""
        if not isinstance(body, dict) or set(body) != {"properties"}:
            return ["the body must be {'properties': {...}}"]
        props = body["properties"]
        problems = []
        if props.get("jobType") != "Command":
            problems.append("properties.jobType must be 'Command'")
        for name in ("command", "environmentId", "computeId"):
            if not isinstance(props.get(name), str) or not props[name]:
                problems.append(f"properties.{name} is required")
        if not str(props.get("computeId", "")).startswith(f"{self.workspace_id}/computes/"):
            problems.append(
                f"computeId {props.get('computeId')!r} is not a compute of the workspace"
            )
        command = str(props.get("command", ""))
        for name, spec in (props.get("inputs") or {}).items():
            if spec.get("jobInputType") not in INPUT_TYPES:
                problems.append(f"inputs.{name}.jobInputType {spec.get('jobInputType')!r}")
            if spec.get("mode") not in INPUT_MODES:
                problems.append(f"inputs.{name}.mode {spec.get('mode')!r}")
            if not str(spec.get("uri", "")).startswith("azureml://"):
                problems.append(f"inputs.{name}.uri {spec.get('uri')!r}")
            if f"${{{{inputs.{name}}}}}" not in command:
                problems.append(f"the command does not use input {name}")
        for name, spec in (props.get("outputs") or {}).items():
            if spec.get("jobOutputType") not in {
                "uri_folder",
                "uri_file",
                "mlflow_model",
                "custom_model",
            }:
                problems.append(f"outputs.{name}.jobOutputType {spec.get('jobOutputType')!r}")
            if spec.get("mode") not in OUTPUT_MODES:
                problems.append(f"outputs.{name}.mode {spec.get('mode')!r}")
            if f"${{{{outputs.{name}}}}}" not in command:
                problems.append(f"the command does not use output {name}")
        limits = props.get("limits")
        if limits is not None and limits.get("jobLimitsType") != "Command":
            problems.append("limits.jobLimitsType must be 'Command'")
        if not re.fullmatch(r"PT(\d+H)?(\d+M)?(\d+S)?", str((limits or {}).get("timeout", "PT1H"))):
            problems.append("limits.timeout is not an ISO 8601 duration")
        return problems

    def _list(self, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            jobs = [
                job
                for job in self.jobs.values()
                if (not query.get("tag") or query["tag"] in (job["properties"].get("tags") or {}))
                and (not query.get("jobType") or job["properties"]["jobType"] == query["jobType"])
            ]
        start = int(query.get("$skipToken") or 0)
        page = jobs[start : start + self.page_size]
        answer: dict[str, Any] = {"value": page}
        if start + self.page_size < len(jobs):
            rest = {**query, "$skipToken": str(start + self.page_size)}
            answer["nextLink"] = f"{self.url}{self.workspace_id}/jobs?{urlencode(rest)}"
        return 200, answer, JSON


@contextlib.contextmanager
def azureml_fake(
    subscription: str = "00000000-1111-2222-3333-444444444444",
    resource_group: str = "skyscore-rg",
    workspace: str = "skyscore-ml",
) -> Iterator[AzureMLFake]:
    """A running :class:`AzureMLFake`."""
    fake = AzureMLFake(subscription, resource_group, workspace)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


_app_functions: dict[str, Any] = {}


def app_functions() -> dict[str, Any]:
    """The Azure app's registered functions by name, for every test in the session: the
    library's ``get_functions()`` may run only once per app (a second call raises)."""
    if not _app_functions:
        from functions.azure import function_app

        found = function_app.app.get_functions()
        _app_functions.update({f.get_function_name(): f for f in found})
    return _app_functions


def blob_created_event(
    store: Any, container: str, key: str, *, etag: str | None = None, event_id: str | None = None
) -> Any:
    """The Event Grid ``BlobCreated`` event the storage account publishes for ``key``: the
    reference payload's shape with this blob's names, ETag and length."""
    import json

    import azure.functions as func

    root = Path(__file__).resolve().parent / "reference-events" / "azure"
    [template] = json.loads((root / "eventgrid-storage-blob-created.json").read_text())
    info = store.stat(key)
    assert info is not None
    data = dict(template["data"])
    data.update(
        eTag=(etag or info.version).strip('"'), contentLength=info.size, url=store.uri_for(key)
    )
    return func.EventGridEvent(
        id=event_id or str(uuid.uuid4()),
        data=data,
        topic=template["topic"],
        subject=f"/blobServices/default/containers/{container}/blobs/{key}",
        event_type=template["eventType"],
        event_time=None,
        data_version=template["dataVersion"],
    )


def blob_input_stream(store: Any, container: str, key: str) -> Any:
    """What the Event Grid-based blob trigger hands the function: the blob's bytes,
    ``<container>/<name>``, its URL and properties."""
    from azure.functions.blob import InputStream

    blob = store.client.get_blob_client(key)
    props = blob.get_blob_properties()
    data = blob.download_blob().readall()
    return InputStream(
        data=data,
        name=f"{container}/{key}",
        uri=blob.url,
        length=len(data),
        blob_properties={"ETag": props.etag, "Length": props.size},
    )
