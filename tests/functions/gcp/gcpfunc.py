"""Helpers of the GCP function tests: functions-framework servers started as the platform starts
them (one target per process, on 127.0.0.1), CloudEvents in binary and structured mode, a
fake of the Vertex AI REST API together with the metadata server google-auth asks for the
function's token, and one test's deployment (bucket, topics, settings)."""

from __future__ import annotations

import ast
import base64
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fake_gcs import FakeGcs, free_port, wait_for_port
from pubsub_emulator import PubSubEmulator
from rest_fake import JSON as _JSON
from rest_fake import RestFake
from skyscore.adapters.gcp import GcsBlobStore
from skyscore.model.registry import ModelRegistry

ROOT = Path(__file__).resolve().parents[3]
SOURCE = ROOT / "functions" / "gcp" / "main.py"
REFERENCE_EVENTS = ROOT / "tests" / "reference-events" / "gcp"
DRIFT_POLICY = "skyscore-drift"
ERROR_POLICY = "skyscore-error-rate"
STORAGE_FINALIZED = "google.cloud.storage.object.v1.finalized"
PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"


def reference_event(name: str) -> Any:
    """A verbatim public payload from ``tests/reference-events/gcp``."""
    return json.loads((REFERENCE_EVENTS / name).read_text())


# --------------------------------------------------------------------------------------------
# functions-framework servers
# --------------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class FunctionServer:
    """``functions-framework --target T --source functions/gcp/main.py`` on a free port, in a
    fresh process with the deployment's environment; its log lines are kept in a file."""

    def __init__(self, target: str, env: dict[str, str]) -> None:
        self.target = target
        self.port = free_port()
        self._log = tempfile.NamedTemporaryFile(prefix=f"ff-{target}-", suffix=".log")  # noqa: SIM115
        self._read = 0
        command = [
            sys.executable,
            "-m",
            "functions_framework",
            *("--target", target, "--source", str(SOURCE)),
            *("--host", "127.0.0.1", "--port", str(self.port)),
        ]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(SOURCE.parent),
        )
        try:
            wait_for_port(self.port, self.process, f"functions-framework ({target})", 30)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"{error}\n{self.log()}") from None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def new_lines(self) -> list[str]:
        """Log lines written since the last call."""
        text = self.log()
        fresh, self._read = text[self._read :], len(text)
        return fresh.splitlines()

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Answer:
        """One HTTP request over a real socket."""
        request = urllib.request.Request(
            self.url + path, data=body if method not in ("GET", "HEAD") else None, method=method
        )
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return Answer(response.status, _lower(response.headers.items()), response.read())
        except urllib.error.HTTPError as error:
            return Answer(error.code, _lower(error.headers.items()), error.read())

    def post_event(self, event: dict[str, Any], *, mode: str = "binary") -> Answer:
        """A CloudEvent (``specversion``, ``type``, ``source``, ``id``, ``data`` ...) in binary or
        structured content mode, encoded by the cloudevents SDK."""
        from cloudevents.conversion import to_binary, to_structured
        from cloudevents.http import CloudEvent

        attributes = {k: v for k, v in event.items() if k != "data"}
        attributes.setdefault("datacontenttype", "application/json")
        ce = CloudEvent(attributes, event.get("data"))
        headers, body = (to_binary if mode == "binary" else to_structured)(ce)
        return self.request("POST", "/", bytes(body), dict(headers))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


def _lower(items: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in items}


def logged(lines: list[str], what: str) -> list[dict[str, Any]]:
    """The dicts the functions logged after ``<what> ...: `` (``upload``)."""
    out = []
    for line in lines:
        _, sep, rest = line.partition(f"skyscore.gcp {what} ")
        if sep:
            _, sep2, tail = rest.rpartition(": {")
            if sep2:
                out.append(ast.literal_eval("{" + tail))
    return out


def statuses(server: FunctionServer) -> list[str]:
    """The upload results the server logged since the last look."""
    return [item["status"] for item in logged(server.new_lines(), "upload")]


# --------------------------------------------------------------------------------------------
# Vertex AI and the metadata server
# --------------------------------------------------------------------------------------------

JOBS_PATH = re.compile(
    r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)/customJobs(?:/(?P<job>[^/]+))?$"
)
ACCELERATORS = {
    "NVIDIA_TESLA_T4",
    "NVIDIA_TESLA_V100",
    "NVIDIA_TESLA_P100",
    "NVIDIA_TESLA_P4",
    "NVIDIA_TESLA_A100",
    "NVIDIA_A100_80GB",
    "NVIDIA_L4",
    "NVIDIA_H100_80GB",
}
CUSTOM_JOB_FIELDS = {"displayName", "jobSpec", "labels", "encryptionSpec"}
LABEL = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
SERVICE_ACCOUNT = "skyscore-fn@skyscore-test.iam.gserviceaccount.com"


class VertexFake(RestFake):
    """What the runner may call, checked against the documented REST shapes
    (``projects.locations.customJobs.create/get/list``, v1): a request of another shape or
    without the bearer token is answered 400/401 and recorded in :attr:`errors`. The same
    server is the metadata server (``GCE_METADATA_HOST``) that hands out :attr:`token`."""

    def __init__(self, project: str, region: str) -> None:
        super().__init__()
        self.project = project
        self.region = region
        self.token = f"ya29.fake-{uuid.uuid4().hex}"

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def environment(self) -> dict[str, str]:
        """What makes google-auth (in the function's process) use this metadata server."""
        return {"GCE_METADATA_HOST": self.host, "GCE_METADATA_IP": self.host}

    def set_state(self, job_id: str, state: str) -> None:
        with self._lock:
            self.jobs[job_id]["state"] = state

    def created(self) -> list[dict[str, Any]]:
        """Every create request, in order."""
        return [r for r in self.requests if r["method"] == "POST"]

    def fail(self, status: int, why: str) -> tuple[int, Any, dict[str, str]]:
        self.errors.append(why)
        code = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED"}.get(status, "NOT_FOUND")
        return status, {"error": {"code": status, "message": why, "status": code}}, _JSON

    def handle(
        self, method: str, target: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        parts, query, lowered = self.split(target, headers)
        if parts.path == "/" or parts.path.startswith("/computeMetadata/"):
            return self._metadata(parts.path, query, lowered)
        body, refused = self.api_call(method, parts, query, lowered, raw)
        if refused is not None:
            return refused
        match = JOBS_PATH.match(parts.path)
        if match is None or match["project"] != self.project or match["region"] != self.region:
            return self.fail(400, f"not a customJobs path of {self.parent}: {parts.path}")
        job = match["job"]
        if method == "POST" and not job:
            if "application/json" not in lowered.get("content-type", ""):
                return self.fail(400, "Content-Type is not application/json")
            return self._create(body)
        if method == "GET" and job:
            with self._lock:
                found = self.jobs.get(job)
            if found is None:
                return 404, {"error": {"code": 404, "status": "NOT_FOUND"}}, _JSON
            return 200, found, _JSON
        if method == "GET":
            return self._list(query)
        return self.fail(400, f"unexpected {method} {parts.path}")

    def _metadata(
        self, path: str, query: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        flavor = {"Metadata-Flavor": "Google"}
        if headers.get("metadata-flavor") != "Google":
            return self.fail(403, "metadata request without Metadata-Flavor: Google")
        if path == "/":
            return 200, b"computeMetadata/\n", {**flavor, "Content-Type": "text/plain"}
        accounts = "/computeMetadata/v1/instance/service-accounts/default/"
        if path == accounts and query.get("recursive") == "true":
            info = {"aliases": ["default"], "email": SERVICE_ACCOUNT, "scopes": [_SCOPE]}
            return 200, info, {**flavor, **_JSON}
        if path == accounts + "token":
            with self._lock:
                self.tokens_issued += 1
            token = {"access_token": self.token, "expires_in": 3599, "token_type": "Bearer"}
            return 200, token, {**flavor, **_JSON}
        if path == "/computeMetadata/v1/project/project-id":
            return 200, self.project.encode(), {**flavor, "Content-Type": "text/plain"}
        return 404, b"not found", flavor

    def check_custom_job(self, body: Any) -> list[str]:
        """Why ``body`` is not a CustomJob the runner should send (empty: it is)."""
        if not isinstance(body, dict):
            return ["the body must be a CustomJob object"]
        problems = [f"unknown CustomJob field {k}" for k in set(body) - CUSTOM_JOB_FIELDS]
        if not isinstance(body.get("displayName"), str) or not 0 < len(body["displayName"]) <= 128:
            problems.append("displayName is required (1-128 characters)")
        for key, value in (body.get("labels") or {}).items():
            if not LABEL.match(key) or not LABEL_VALUE.match(str(value)):
                problems.append(f"label {key}={value} is not a valid label")
        spec = body.get("jobSpec")
        if not isinstance(spec, dict):
            return [*problems, "jobSpec is required"]
        pools = spec.get("workerPoolSpecs")
        if not isinstance(pools, list) or not pools:
            problems.append("jobSpec.workerPoolSpecs must be a non-empty list")
            pools = []
        for i, pool in enumerate(pools):
            machine = pool.get("machineSpec") or {}
            if not isinstance(machine.get("machineType"), str) or not machine["machineType"]:
                problems.append(f"workerPoolSpecs[{i}].machineSpec.machineType is required")
            if "acceleratorType" in machine:
                if machine["acceleratorType"] not in ACCELERATORS:
                    problems.append(f"acceleratorType {machine['acceleratorType']!r}")
                count = machine.get("acceleratorCount")
                if not isinstance(count, int) or count < 1:
                    problems.append("acceleratorCount must be a positive integer")
            elif "acceleratorCount" in machine:
                problems.append("acceleratorCount without acceleratorType")
            if str(pool.get("replicaCount", "1")) != "1":
                problems.append(f"workerPoolSpecs[{i}].replicaCount must be 1 for the chief")
            container = pool.get("containerSpec") or {}
            if not isinstance(container.get("imageUri"), str) or not container["imageUri"]:
                problems.append(f"workerPoolSpecs[{i}].containerSpec.imageUri is required")
            for name in ("command", "args"):
                value = container.get(name, [])
                if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
                    problems.append(f"containerSpec.{name} must be a list of strings")
        base = (spec.get("baseOutputDirectory") or {}).get("outputUriPrefix", "")
        if not str(base).startswith("gs://"):
            problems.append(f"baseOutputDirectory.outputUriPrefix {base!r} is not gs://")
        timeout = (spec.get("scheduling") or {}).get("timeout", "60s")
        if not re.fullmatch(r"\d+(\.\d+)?s", str(timeout)):
            problems.append("scheduling.timeout is not a Duration (e.g. '3600s')")
        return problems

    def _create(self, body: Any) -> tuple[int, Any, dict[str, str]]:
        problems = self.check_custom_job(body)
        if problems:
            return self.fail(400, "; ".join(problems))
        with self._lock:
            job_id = str(1000000 + len(self.jobs))
            stored = {
                **body,
                "name": f"projects/123456789/locations/{self.region}/customJobs/{job_id}",
                "state": "JOB_STATE_PENDING",
                "createTime": f"2026-12-01T00:00:{len(self.jobs):02d}Z",
            }
            self.jobs[job_id] = stored
        return 200, stored, _JSON

    def _list(self, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        wanted = re.fullmatch(r'labels\.([a-z0-9_-]+)="([^"]*)"', query.get("filter", ""))
        if query.get("filter") and wanted is None:
            return self.fail(400, f"unsupported filter {query['filter']!r}")
        with self._lock:
            jobs = [
                job
                for job in self.jobs.values()
                if wanted is None or (job.get("labels") or {}).get(wanted[1]) == wanted[2]
            ]
        start = int(query.get("pageToken") or 0)
        size = min(int(query.get("pageSize") or 100), self.page_size)
        answer: dict[str, Any] = {"customJobs": jobs[start : start + size]}
        if start + size < len(jobs):
            answer["nextPageToken"] = str(start + size)
        return 200, answer, _JSON


_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


@contextlib.contextmanager
def vertex_fake(
    project: str = "skyscore-test", region: str = "europe-west4"
) -> Iterator[VertexFake]:
    fake = VertexFake(project, region)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


# --------------------------------------------------------------------------------------------
# One test's deployment
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GcpCloud:
    """The session's emulators: storage whose finalize notifications go to ``topic``."""

    pubsub: PubSubEmulator
    gcs: FakeGcs
    topic: str


@dataclass
class GcpApp:
    """One test's bucket, topics and Vertex AI, as the functions' environment names them;
    :meth:`server` starts a function of it (stopped when the test ends)."""

    gcs: FakeGcs
    pubsub: PubSubEmulator
    bucket: str
    store: GcsBlobStore
    work_topic: str
    dead_topic: str
    vertex: VertexFake
    env: dict[str, str]
    servers: dict[str, FunctionServer] = field(default_factory=dict)

    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.store, refresh_seconds=0)

    def server(self, target: str) -> FunctionServer:
        if target not in self.servers:
            self.servers[target] = FunctionServer(target, self.env)
        return self.servers[target]

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.servers.clear()

    def finalized(self, key: str, *, generation: Any = None, event_id: str = "") -> dict[str, Any]:
        """The Eventarc ``finalized`` CloudEvent for ``key``: the reference event with this
        object's bucket, name, generation and size (strings, as proto3 JSON writes int64)."""
        event = reference_event("storage-object-finalized-cloudevent.json")
        info = self.store.stat(key)
        assert info is not None
        data = dict(event["data"])
        data.update(
            bucket=self.bucket,
            name=key,
            generation=str(info.version) if generation is None else generation,
            size=str(info.size),
            id=f"{self.bucket}/{key}/{info.version}",
        )
        return {
            **{k: v for k, v in event.items() if k != "data"},
            "id": event_id or str(uuid.uuid4()),
            "source": f"//storage.googleapis.com/projects/_/buckets/{self.bucket}",
            "subject": f"objects/{key}",
            "data": data,
        }


def published(
    body: bytes, attributes: dict[str, str] | None = None, *, message_id: str = ""
) -> dict[str, Any]:
    """The Eventarc ``messagePublished`` CloudEvent of one Pub/Sub message."""
    event = reference_event("pubsub-message-published-cloudevent.json")
    message_id = message_id or str(uuid.uuid4().int)[:16]
    data = {
        "subscription": event["data"]["subscription"],
        "message": {
            "@type": event["data"]["message"]["@type"],
            "messageId": message_id,
            "publishTime": "2026-12-01T00:00:00.000Z",
            "attributes": dict(attributes or {}),
            "data": base64.b64encode(body).decode("ascii"),
        },
    }
    return {**{k: v for k, v in event.items() if k != "data"}, "id": message_id, "data": data}


def wait_until(check: Any, seconds: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def function_env(
    gcs: FakeGcs, pubsub: PubSubEmulator, vertex: VertexFake, bucket: str, **extra: str
) -> dict[str, str]:
    """The functions' environment: emulators, the bucket and topics, Vertex AI behind the fake
    endpoint and metadata server, and no developer credentials."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("SKYSCORE_", "GOOGLE_"))}
    for name in ("CLOUDSDK_CONFIG", "STORAGE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST"):
        keep.pop(name, None)
    return {
        **keep,
        **gcs.environment,
        **pubsub.environment,
        **vertex.environment,
        "CLOUDSDK_CONFIG": tempfile.mkdtemp(prefix="gcloud-empty-"),  # no ADC file to find
        "PYTHONPATH": str(ROOT / "shared"),
        "PYTHONUNBUFFERED": "1",
        "SKYSCORE_BUCKET": bucket,
        "SKYSCORE_GCP_PROJECT": pubsub.project,
        "SKYSCORE_MODEL": "cancer",
        "SKYSCORE_REFRESH_SECONDS": "0",
        "SKYSCORE_RETRAIN_MODELS": "cancer",
        "SKYSCORE_RETRAIN_ALARMS": f"{DRIFT_POLICY}=drift,{ERROR_POLICY}=error_rate",
        "SKYSCORE_VERTEX_REGION": vertex.region,
        "SKYSCORE_VERTEX_IMAGE": "europe-west4-docker.pkg.dev/skyscore-test/skyscore/train:1",
        "SKYSCORE_VERTEX_SERVICE_ACCOUNT": "skyscore-train@skyscore-test.iam.gserviceaccount.com",
        "SKYSCORE_VERTEX_ENDPOINT": vertex.url,
        **extra,
    }
