"""Google Cloud adapters: Cloud Storage as the blob store, Pub/Sub as the queue, Vertex AI custom
jobs as the job runner, Cloud Logging structured lines as the metrics sink.

The Google SDKs (google-cloud-storage, google-cloud-pubsub, google-auth) are imported when a
client is first needed, never at import time, so the local runtime and the other clouds never
load them. Credentials are the process's Application Default Credentials: the function's
service account through the metadata server on Cloud Run, a developer's ``gcloud`` login
elsewhere. ``STORAGE_EMULATOR_HOST`` and ``PUBSUB_EMULATOR_HOST`` point the clients at
emulators (fake-gcs-server, the gcloud Pub/Sub emulator), as the SDKs themselves define.
"""

from __future__ import annotations

import contextlib
import io
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import quote, urlencode

from skyscore.adapters.streams import PartWriter
from skyscore.errors import ConfigError, ConflictError, NotFound, SkyscoreError
from skyscore.monitoring.metrics import LogMetrics
from skyscore.ports import (
    BlobStore,
    JobRunner,
    JobSpec,
    JobState,
    JobStatus,
    Message,
    ObjectInfo,
    QueuePort,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from skyscore.monitoring.metrics import Metrics
    from skyscore.runtime.settings import Settings

UPLOAD_CHUNK = 256 << 10  # resumable uploads take chunks in multiples of 256 KiB
DEFAULT_CHUNK_BYTES = 8 << 20  # streamed reads and writes move 8 MiB per request
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
VERTEX_API = "v1"
MODEL_LABEL = "skyscore-model"  # job label: the model name made label-safe (the list filter)
DISPLAY_PREFIX = "skyscore retrain "  # a job's display name: this plus the exact model name
MODEL_ARTIFACTS = ("model.onnx", "card.json")
VERTEX_MODEL_DIR = "model/"  # AIP_MODEL_DIR is <baseOutputDirectory>/model/
_JOB_ID = re.compile(r"^[0-9]{1,40}$")
_STATES: dict[str, JobState] = {
    "JOB_STATE_UNSPECIFIED": "pending",
    "JOB_STATE_QUEUED": "pending",
    "JOB_STATE_PENDING": "pending",
    "JOB_STATE_PAUSED": "pending",
    "JOB_STATE_RUNNING": "running",
    "JOB_STATE_CANCELLING": "running",
    "JOB_STATE_UPDATING": "running",
    "JOB_STATE_SUCCEEDED": "completed",
    "JOB_STATE_FAILED": "failed",
    "JOB_STATE_EXPIRED": "failed",
    "JOB_STATE_PARTIALLY_SUCCEEDED": "failed",
    "JOB_STATE_CANCELLED": "stopped",
}
_client_lock = threading.Lock()


def _code(error: Exception) -> int:
    return int(getattr(error, "code", 0) or 0)


# --------------------------------------------------------------------------------------------
# Cloud Storage
# --------------------------------------------------------------------------------------------


class _RangedReader(io.RawIOBase):
    """One object generation read in ranged requests of ``chunk`` bytes, as they are consumed.

    Every request names the generation first seen, so a reader never mixes two versions: an
    object replaced mid-read fails (404 on that generation) instead of splicing.
    """

    def __init__(self, blob: Any, size: int, chunk: int) -> None:
        self._blob = blob
        self._size = size
        self._chunk = chunk
        self._position = 0
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not self._buffer:
            if self._position >= self._size:
                return 0
            end = min(self._position + self._chunk, self._size)
            self._buffer = bytes(
                self._blob.download_as_bytes(
                    start=self._position, end=end - 1, checksum=None, raw_download=True
                )
            )
            self._position += len(self._buffer)
            if not self._buffer:
                return 0
        count = min(len(view), len(self._buffer))
        view[:count] = self._buffer[:count]
        self._buffer = self._buffer[count:]
        return count


class _ResumableWriter(PartWriter):
    """A resumable upload session fed in chunks of ``chunk`` bytes (a multiple of 256 KiB).

    The object exists only once the last chunk (with the total size) is accepted; until then
    the session is invisible, and :meth:`abort` cancels it. Memory is one chunk whatever the
    output's size.
    """

    def __init__(self, blob: Any, session: Any, chunk: int) -> None:
        super().__init__(chunk, keep_last=True)  # the last chunk carries the total size
        self._blob = blob
        self._session = session
        self._url: str | None = None
        self._sent = 0

    def _start(self) -> str:
        if self._url is None:
            self._url = str(self._blob.create_resumable_upload_session(timeout=60))
        return self._url

    def _send_part(self, part: bytes) -> None:
        self._put(part, final=False)

    def _put(self, data: bytes, *, final: bool) -> Any:
        url = self._start()
        total = str(self._sent + len(data)) if final else "*"
        span = f"{self._sent}-{self._sent + len(data) - 1}" if data else "*"
        response = self._session.put(
            url, data=data, headers={"Content-Range": f"bytes {span}/{total}"}, timeout=120
        )
        expected = (200, 201) if final else (308,)
        if response.status_code not in expected:
            raise SkyscoreError(
                f"resumable upload of {self._blob.name}: {response.status_code} "
                f"{response.text[:300]}"
            )
        self._sent += len(data)
        return response

    def finish(self) -> str:
        """Send the rest with the total size; the object appears. Returns its generation."""
        if self._url is None:  # small output: one simple upload
            self._blob.upload_from_string(self._rest())
            return str(self._blob.generation)
        response = self._put(self._rest(), final=True)
        return str(response.json().get("generation", ""))

    def abort(self) -> None:
        """Cancel the session (best effort: an unfinished session expires by itself)."""
        if self._url is not None:
            with contextlib.suppress(Exception):
                self._session.delete(self._url, timeout=30)


class GcsBlobStore(BlobStore):
    """Objects under ``gs://<bucket>/<prefix>``.

    Versions are object generations (decimal strings, opaque to the core). Conditional writes
    are the service's own preconditions: ``if_absent`` is ``ifGenerationMatch=0`` and
    ``if_version`` ``ifGenerationMatch=<generation>``; a failed one (HTTP 412) changes nothing
    and raises :class:`ConflictError`. ``open_write`` is a resumable upload fed chunk by chunk,
    visible only when the last chunk lands; ``open_read`` and ``open_range`` are ranged reads
    pinned to one generation.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        project: str | None = None,
        client: Any = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        if not bucket:
            raise ValueError("GcsBlobStore needs a bucket name")
        if chunk_bytes < UPLOAD_CHUNK or chunk_bytes % UPLOAD_CHUNK:
            raise ValueError(f"chunk_bytes must be a positive multiple of {UPLOAD_CHUNK}")
        prefix = prefix.strip("/")
        self.bucket_name = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.project = project
        self.chunk_bytes = chunk_bytes
        self._client = client
        self._bucket: Any = None
        self.uri = f"gs://{bucket}/{self.prefix}"

    def __repr__(self) -> str:
        return f"GcsBlobStore({self.uri!r})"

    @property
    def client(self) -> Any:
        """The ``storage.Client``, created on first use (emulator-aware through the SDK)."""
        if self._client is None:
            with _client_lock:
                if self._client is None:
                    from google.cloud import storage  # type: ignore[import-untyped]

                    self._client = storage.Client(project=self.project)
        return self._client

    @property
    def bucket(self) -> Any:
        """The bucket handle (no request: the bucket is not fetched)."""
        if self._bucket is None:
            self._bucket = self.client.bucket(self.bucket_name)
        return self._bucket

    def _name(self, key: str) -> str:
        if not key or key.startswith("/") or "\x00" in key:
            raise ValueError(f"invalid object key {key!r}: must be a relative '/'-separated path")
        return self.prefix + key

    def _blob(self, key: str, generation: int | None = None) -> Any:
        return self.bucket.blob(self._name(key), generation=generation)

    def key_for(self, name: str) -> str | None:
        """The store key of an object name (``None`` when it is outside this store's prefix)."""
        if not name.startswith(self.prefix) or name == self.prefix:
            return None
        return name[len(self.prefix) :]

    # -- names ---------------------------------------------------------------------------------

    def uri_for(self, key: str) -> str:
        """``gs://<bucket>/<prefix><key>`` (object names are not percent-encoded in gs URIs)."""
        return f"gs://{self.bucket_name}/{self._name(key)}"

    def key_for_uri(self, uri: str) -> str | None:
        """The store key of a ``gs://`` URI in this bucket and prefix, else ``None``."""
        head = f"gs://{self.bucket_name}/"
        return self.key_for(uri[len(head) :]) if uri.startswith(head) else None

    def key_for_object(self, container: str, name: str) -> str | None:
        """The store key of object ``name`` in bucket ``container``."""
        return self.key_for(name) if container == self.bucket_name else None

    # -- reads ---------------------------------------------------------------------------------

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        """The whole object and its generation (the download's ``x-goog-generation``)."""
        from google.api_core.exceptions import NotFound as GoogleNotFound

        blob = self._blob(key)
        try:
            data = blob.download_as_bytes()
        except GoogleNotFound:
            raise NotFound(f"no object {key!r} in {self.uri}") from None
        return bytes(data), str(blob.generation)

    def open_read(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """The object streamed in ranged chunks of one generation."""
        return self._open(key, None)

    def open_range(
        self, key: str, start: int, end: int
    ) -> contextlib.AbstractContextManager[BinaryIO]:
        """Bytes ``[start, end)``; past the end reads short or empty."""
        if start < 0 or end < start:
            raise ValueError(f"invalid byte range [{start}, {end})")
        return self._open(key, (start, end))

    @contextlib.contextmanager
    def _open(self, key: str, byte_range: tuple[int, int] | None) -> Iterator[BinaryIO]:
        info = self._stat_blob(key)
        if info is None:
            raise NotFound(f"no object {key!r} in {self.uri}")
        size, generation = int(info.size or 0), int(info.generation)
        blob = self._blob(key, generation)
        if byte_range is None:
            reader: io.BufferedReader = io.BufferedReader(
                _RangedReader(blob, size, self.chunk_bytes), buffer_size=1 << 20
            )
        else:
            start, end = byte_range[0], min(byte_range[1], size)
            if end <= start:
                yield cast(BinaryIO, io.BytesIO(b""))
                return
            reader = io.BufferedReader(_Window(blob, start, end, self.chunk_bytes))
        try:
            yield cast(BinaryIO, reader)
        finally:
            reader.close()

    def _stat_blob(self, key: str) -> Any:
        return self.bucket.get_blob(self._name(key))

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and generation, or ``None``."""
        blob = self._stat_blob(key)
        if blob is None:
            return None
        return ObjectInfo(key, int(blob.size or 0), str(blob.generation))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` in key order (the service lists names lexicographically)."""
        for blob in self.client.list_blobs(self.bucket_name, prefix=self.prefix + prefix):
            key = self.key_for(str(blob.name))
            if key is not None:
                yield ObjectInfo(key, int(blob.size or 0), str(blob.generation))

    # -- writes --------------------------------------------------------------------------------

    def write_bytes(
        self, key: str, data: bytes, *, if_absent: bool = False, if_version: str | None = None
    ) -> str:
        """One upload (atomic); ``if_absent`` sends ``ifGenerationMatch=0``, ``if_version``
        ``ifGenerationMatch=<generation>``, both enforced by the service."""
        from google.api_core.exceptions import NotFound as GoogleNotFound
        from google.api_core.exceptions import PreconditionFailed

        if if_absent and if_version is not None:
            raise ValueError("if_absent and if_version exclude each other")
        condition: int | None = None
        if if_absent:
            condition = 0
        elif if_version is not None:
            if not if_version.isdigit():  # not a generation: no object can be at it
                raise ConflictError(f"object {key!r} in {self.uri} is not at {if_version!r}")
            condition = int(if_version)
        blob = self._blob(key)
        try:
            blob.upload_from_string(bytes(data), if_generation_match=condition)
        except (PreconditionFailed, GoogleNotFound):
            if condition is None:
                raise
            if if_absent:
                raise ConflictError(f"object {key!r} already exists in {self.uri}") from None
            raise ConflictError(
                f"object {key!r} in {self.uri} changed since generation {if_version}"
            ) from None
        return str(blob.generation)

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        """Stream into a resumable upload, finalised only if the block exits cleanly."""
        blob = self._blob(key)
        writer = _ResumableWriter(blob, self.client._http, self.chunk_bytes)
        try:
            yield cast(BinaryIO, writer)
        except BaseException:
            writer.abort()
            raise
        writer.finish()

    def delete(self, key: str) -> None:
        """Remove an object; a missing one is fine."""
        from google.api_core.exceptions import NotFound as GoogleNotFound

        with contextlib.suppress(GoogleNotFound):
            self._blob(key).delete()


class _Window(io.RawIOBase):
    """Bytes ``[start, end)`` of one generation, fetched in ranged requests."""

    def __init__(self, blob: Any, start: int, end: int, chunk: int) -> None:
        self._inner = _RangedReader(blob, end, chunk)
        self._inner._position = start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._inner.readinto(buffer)


# --------------------------------------------------------------------------------------------
# Pub/Sub
# --------------------------------------------------------------------------------------------


def _resource(kind: str, name: str, project: str) -> str:
    """``projects/<p>/<kind>/<name>`` from a short name (a full path is kept as it is)."""
    if name.startswith("projects/"):
        return name
    if not project:
        raise ConfigError(f"a Pub/Sub {kind[:-1]} needs a project: set SKYSCORE_GCP_PROJECT")
    return f"projects/{project}/{kind}/{name}"


class PubSubQueue(QueuePort):
    """A Pub/Sub topic to publish to and, optionally, a pull subscription to receive from.

    On Cloud Run functions the work topic is consumed by the ``work`` function through an
    Eventarc (push) trigger, so the core only ever :meth:`send` s; the pull side serves the
    tools and tests that drain a subscription. ``receive_count`` is Pub/Sub's
    ``delivery_attempt``, which the service counts only on subscriptions with a dead-letter
    policy (1 otherwise).
    """

    def __init__(
        self,
        topic: str,
        *,
        project: str = "",
        subscription: str = "",
        max_receives: int = 5,
        dead_letter: QueuePort | None = None,
        publisher: Any = None,
        subscriber: Any = None,
    ) -> None:
        super().__init__(max_receives=max_receives, dead_letter=dead_letter)
        self.topic = _resource("topics", topic, project)
        self.subscription = (
            _resource("subscriptions", subscription, project) if subscription else ""
        )
        self._publisher = publisher
        self._subscriber = subscriber

    def __repr__(self) -> str:
        return f"PubSubQueue({self.topic!r})"

    @property
    def publisher(self) -> Any:
        """The ``PublisherClient``, created on first use."""
        if self._publisher is None:
            with _client_lock:
                if self._publisher is None:
                    from google.cloud import pubsub_v1

                    self._publisher = pubsub_v1.PublisherClient()
        return self._publisher

    @property
    def subscriber(self) -> Any:
        """The ``SubscriberClient``, created on first use."""
        if self._subscriber is None:
            with _client_lock:
                if self._subscriber is None:
                    from google.cloud import pubsub_v1

                    self._subscriber = pubsub_v1.SubscriberClient()
        return self._subscriber

    def send(self, body: bytes, attributes: dict[str, str] | None = None) -> str:
        """Publish and wait for the service's message id."""
        future = self.publisher.publish(self.topic, bytes(body), **dict(attributes or {}))
        return str(future.result(timeout=60))

    def _receive(self, max_messages: int, visibility_timeout: float) -> list[Message]:
        if max_messages <= 0:
            return []
        if not self.subscription:
            raise ConfigError(f"{self!r} has no subscription to receive from")
        from google.api_core.exceptions import DeadlineExceeded

        try:
            answer = self.subscriber.pull(
                request={"subscription": self.subscription, "max_messages": max_messages},
                timeout=5.0,
            )
        except DeadlineExceeded:
            return []
        received = list(answer.received_messages)
        if received:
            seconds = max(10, min(600, int(visibility_timeout)))
            self.subscriber.modify_ack_deadline(
                request={
                    "subscription": self.subscription,
                    "ack_ids": [r.ack_id for r in received],
                    "ack_deadline_seconds": seconds,
                }
            )
        return [
            Message(
                id=str(r.message.message_id),
                body=bytes(r.message.data),
                receipt=str(r.ack_id),
                receive_count=int(r.delivery_attempt or 1),
                attributes={str(k): str(v) for k, v in r.message.attributes.items()},
            )
            for r in received
        ]

    def ack(self, message: Message) -> None:
        """Acknowledge this delivery."""
        self.subscriber.acknowledge(
            request={"subscription": self.subscription, "ack_ids": [message.receipt]}
        )

    def release(self, message: Message) -> None:
        """Visible again at once (ack deadline 0)."""
        self.subscriber.modify_ack_deadline(
            request={
                "subscription": self.subscription,
                "ack_ids": [message.receipt],
                "ack_deadline_seconds": 0,
            }
        )


# --------------------------------------------------------------------------------------------
# Vertex AI custom jobs (REST)
# --------------------------------------------------------------------------------------------


def label_value(text: str) -> str:
    """A label value: lower-case letters, digits, ``-`` and ``_``, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-")[:63] or "model"


def gcs_fuse_path(uri: str) -> str:
    """A ``gs://`` URI as the path Vertex AI mounts it at (Cloud Storage FUSE under ``/gcs``)."""
    return "/gcs/" + uri.removeprefix("gs://") if uri.startswith("gs://") else uri


class VertexJobRunner(JobRunner):
    """Vertex AI ``CustomJob`` s through the REST API (``aiplatform.googleapis.com/v1``), with
    a bearer token from the function's credentials (scope ``cloud-platform``).

    The job runs the core's training entrypoint in a container image that has it
    (``python -m skyscore.training.train <data> --target ... --output-dir <output>``), with
    data and output read and written through the ``/gcs`` mount, so ``model.onnx`` and
    ``card.json`` land straight under the spec's output URI, which is also the job's
    ``baseOutputDirectory``. A machine with an accelerator is asked for only when the
    estimator trains on a GPU (:func:`skyscore.lifecycle.hardware.hardware_for`).
    """

    def __init__(
        self,
        project: str,
        region: str,
        *,
        image_uri: str,
        machine_type: str = "n1-standard-4",
        gpu_machine_type: str = "n1-standard-8",
        accelerator_type: str = "NVIDIA_TESLA_T4",
        accelerator_count: int = 1,
        service_account: str = "",
        endpoint: str = "",
        credentials: Any = None,
        max_runtime_seconds: int = 4 * 3600,
        timeout: float = 30.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        for name, value in (("project", project), ("region", region), ("image", image_uri)):
            if not value:
                raise ValueError(f"VertexJobRunner needs a {name}")
        if accelerator_count < 1:
            raise ValueError("accelerator_count must be at least 1")
        self.project = project
        self.region = region
        self.image_uri = image_uri
        self.machine_type = machine_type
        self.gpu_machine_type = gpu_machine_type
        self.accelerator_type = accelerator_type
        self.accelerator_count = accelerator_count
        self.service_account = service_account
        self.endpoint = (endpoint or f"https://{region}-aiplatform.googleapis.com").rstrip("/")
        self._credentials = credentials
        self._token_lock = threading.Lock()
        self.max_runtime_seconds = max_runtime_seconds
        self.timeout = timeout
        self._clock = clock or (lambda: datetime.now(UTC))

    def __repr__(self) -> str:
        return f"VertexJobRunner({self.project!r}, {self.region!r})"

    # -- REST ------------------------------------------------------------------------------

    @property
    def parent(self) -> str:
        """``projects/<p>/locations/<region>``."""
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def jobs_url(self) -> str:
        """The ``customJobs`` collection."""
        return f"{self.endpoint}/{VERTEX_API}/{self.parent}/customJobs"

    def _token(self) -> str:
        with self._token_lock:
            if self._credentials is None:
                import google.auth

                self._credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
            if not self._credentials.valid:
                from google.auth.transport.requests import Request

                self._credentials.refresh(Request())
            return str(self._credentials.token)

    def _call(self, method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        from skyscore.adapters.rest import json_request

        return json_request(
            "Vertex AI",
            method,
            url,
            self._token(),
            body,
            timeout=self.timeout,
            content_type="application/json; charset=utf-8",
        )

    # -- the job ---------------------------------------------------------------------------

    def machine_spec(self, spec: JobSpec) -> dict[str, Any]:
        """``machineSpec``: an accelerator only for an estimator that trains on a GPU."""
        from skyscore.lifecycle.hardware import hardware_for

        if hardware_for(spec.estimator) == "gpu":
            return {
                "machineType": spec.instance_type or self.gpu_machine_type,
                "acceleratorType": self.accelerator_type,
                "acceleratorCount": self.accelerator_count,
            }
        return {"machineType": spec.instance_type or self.machine_type}

    def job_body(self, spec: JobSpec) -> dict[str, Any]:
        """The ``projects.locations.customJobs.create`` body for ``spec``."""
        if not spec.output_uri.startswith("gs://") or not spec.data_uri.startswith("gs://"):
            raise ValueError(f"Vertex AI jobs read and write gs:// URIs, not {spec.output_uri}")
        args = [gcs_fuse_path(spec.data_uri), "--target", spec.target, "--name", spec.model_name]
        args += ["--estimator", spec.estimator]
        if spec.id_column:
            args += ["--id-column", spec.id_column]
        args += [*spec.extra_args, "--output-dir", gcs_fuse_path(spec.output_uri)]
        job_spec: dict[str, Any] = {
            "workerPoolSpecs": [
                {
                    "machineSpec": self.machine_spec(spec),
                    "replicaCount": "1",
                    "containerSpec": {
                        "imageUri": self.image_uri,
                        "command": ["python", "-m", "skyscore.training.train"],
                        "args": args,
                    },
                }
            ],
            "baseOutputDirectory": {"outputUriPrefix": spec.output_uri},
            "scheduling": {"timeout": f"{self.max_runtime_seconds}s"},
        }
        if self.service_account:
            job_spec["serviceAccount"] = self.service_account
        return {
            "displayName": (DISPLAY_PREFIX + spec.model_name)[:128],
            "labels": {MODEL_LABEL: label_value(spec.model_name)},
            "jobSpec": job_spec,
        }

    def start(self, spec: JobSpec) -> JobStatus:
        """``POST .../customJobs``; returns at once (the service names the job)."""
        answer = self._call("POST", self.jobs_url, self.job_body(spec))
        status = self._status(answer)
        if not status.job_id:
            raise SkyscoreError(f"Vertex AI answered a job create without a name: {answer}")
        return JobStatus(status.job_id, spec.model_name, status.state, spec.output_uri)

    def describe(self, job_id: str) -> JobStatus:
        """The job's state from ``GET .../customJobs/<id>``."""
        if not _JOB_ID.match(job_id):
            raise NotFound(f"no Vertex AI custom job {job_id!r}")
        return self._status(self._call("GET", f"{self.jobs_url}/{job_id}"))

    @staticmethod
    def _status(job: dict[str, Any]) -> JobStatus:
        raw = str(job.get("state") or "JOB_STATE_UNSPECIFIED")
        display = str(job.get("displayName") or "")
        base = (job.get("jobSpec") or {}).get("baseOutputDirectory") or {}
        error = job.get("error") or {}
        message = f"Vertex AI state {raw}"
        if isinstance(error, dict) and error.get("message"):
            message += f": {error['message']}"
        return JobStatus(
            job_id=str(job.get("name") or "").rpartition("/")[2],
            model_name=display[len(DISPLAY_PREFIX) :] if display.startswith(DISPLAY_PREFIX) else "",
            state=_STATES.get(raw, "running"),
            output_uri=str(base.get("outputUriPrefix") or ""),
            message=message,
        )

    def list_jobs(self, model_name: str) -> list[JobStatus]:
        """This model's custom jobs, newest first (filtered by label, confirmed by name)."""
        found: list[tuple[str, JobStatus]] = []
        token = ""
        while True:
            query = {
                "filter": f'labels.{MODEL_LABEL}="{label_value(model_name)}"',
                "pageSize": "100",
            }
            if token:
                query["pageToken"] = token
            page = self._call("GET", f"{self.jobs_url}?{urlencode(query, quote_via=quote)}")
            for job in page.get("customJobs") or ():
                status = self._status(job)
                if status.model_name == model_name:
                    found.append((str(job.get("createTime") or ""), status))
            token = str(page.get("nextPageToken") or "")
            if not token:
                break
        found.sort(key=lambda item: item[0], reverse=True)
        return [status for _, status in found]

    def materialize(self, status: JobStatus, store: BlobStore) -> None:
        """The entrypoint wrote ``model.onnx`` and ``card.json`` to the output folder; a job
        that followed Vertex's own ``AIP_MODEL_DIR`` (``<output>/model/``) has them copied up.
        Raises ``NotFound`` when they are in neither place."""
        prefix = store.key_for_uri(status.output_uri.rstrip("/") + "/")
        if prefix is None:
            raise SkyscoreError(f"job output {status.output_uri} is outside the store {store.uri}")
        for name in MODEL_ARTIFACTS:
            if store.exists(prefix + name):
                continue
            nested = prefix + VERTEX_MODEL_DIR + name
            if not store.exists(nested):
                raise NotFound(f"job {status.job_id} wrote no {name} to {status.output_uri}")
            store.write_bytes(prefix + name, store.read_bytes(nested))


# --------------------------------------------------------------------------------------------
# Metrics: structured log lines for Cloud Logging
# --------------------------------------------------------------------------------------------


class CloudLoggingMetrics(LogMetrics):
    """The core's JSON metric records on stdout, one line each, with ``severity``: Cloud Run
    turns a JSON line into a structured entry's ``jsonPayload``, where the log-based metrics of
    ``infra/gcp`` (``jsonPayload.type="metric"``) extract the values and the model label."""

    def __init__(self, stream: IO[str] | None = None, **dimensions: str) -> None:
        super().__init__(stream, format="json", severity="INFO", **dimensions)


# --------------------------------------------------------------------------------------------
# Backend: how the Cloud Run functions build the core
# --------------------------------------------------------------------------------------------

MAX_BODY_BYTES = 6 << 20
"""The same limit as the local runtime and Azure: Cloud Run accepts 32 MiB, but a body that
large would be decoded in one instance's memory; files belong in the bucket."""
LEASE_SECONDS = 600.0
"""Longer than an event-driven function's longest run (540 s): a claim older than that
belongs to an attempt that died."""


class GcpBackend:
    """Cloud Storage bucket, Pub/Sub work topic, Vertex AI custom jobs, Cloud Logging lines.

    Settings: ``SKYSCORE_BUCKET`` (required), ``SKYSCORE_PREFIX``, ``SKYSCORE_GCP_PROJECT``
    (else ``GOOGLE_CLOUD_PROJECT``), ``SKYSCORE_TOPIC`` (the work topic, for fan-out) with
    ``SKYSCORE_SUBSCRIPTION`` and ``SKYSCORE_DEAD_LETTER_TOPIC``; ``SKYSCORE_GCS_CHUNK_BYTES``
    (a multiple of 256 KiB, default 8 MiB: what one ranged read or resumable-upload chunk
    holds in memory, and the size above which an output is a resumable upload). For retraining:
    ``SKYSCORE_VERTEX_REGION``, ``_IMAGE``, ``_MACHINE_TYPE``, ``_GPU_MACHINE_TYPE``,
    ``_ACCELERATOR_TYPE``, ``_ACCELERATOR_COUNT``, ``_SERVICE_ACCOUNT``, ``_ENDPOINT`` (a local
    fake in tests) and ``SKYSCORE_TRAINING_MAX_SECONDS``.
    """

    name = "gcp"

    def __init__(self) -> None:
        from skyscore.runtime.settings import CloudDefaults

        self.defaults = CloudDefaults(MAX_BODY_BYTES, LEASE_SECONDS, "json")

    @staticmethod
    def project(settings: Settings) -> str:
        """The project: ``SKYSCORE_GCP_PROJECT``, else ``GOOGLE_CLOUD_PROJECT``."""
        return settings.get("SKYSCORE_GCP_PROJECT") or settings.get("GOOGLE_CLOUD_PROJECT")

    def store(self, settings: Settings) -> GcsBlobStore:
        """The data bucket."""
        return GcsBlobStore(
            settings.require("SKYSCORE_BUCKET"),
            settings.prefix,
            project=self.project(settings) or None,
            chunk_bytes=settings.get_int("SKYSCORE_GCS_CHUNK_BYTES", DEFAULT_CHUNK_BYTES),
        )

    def queue(self, settings: Settings) -> PubSubQueue | None:
        """The work topic (and its dead-letter topic), when configured."""
        topic = settings.get("SKYSCORE_TOPIC")
        if not topic:
            return None
        project = self.project(settings)
        dead = settings.get("SKYSCORE_DEAD_LETTER_TOPIC")
        return PubSubQueue(
            topic,
            project=project,
            subscription=settings.get("SKYSCORE_SUBSCRIPTION"),
            max_receives=settings.get_int("SKYSCORE_MAX_DELIVERY_ATTEMPTS", 5),
            dead_letter=PubSubQueue(dead, project=project) if dead else None,
        )

    def jobs(self, settings: Settings) -> VertexJobRunner:
        """Vertex AI custom jobs in the configured project and region."""
        project = self.project(settings)
        if not project:
            raise ConfigError(
                "the function is not configured: set SKYSCORE_GCP_PROJECT",
                field="SKYSCORE_GCP_PROJECT",
            )
        return VertexJobRunner(
            project,
            settings.require("SKYSCORE_VERTEX_REGION"),
            image_uri=settings.require("SKYSCORE_VERTEX_IMAGE"),
            machine_type=settings.get("SKYSCORE_VERTEX_MACHINE_TYPE", "n1-standard-4"),
            gpu_machine_type=settings.get("SKYSCORE_VERTEX_GPU_MACHINE_TYPE", "n1-standard-8"),
            accelerator_type=settings.get("SKYSCORE_VERTEX_ACCELERATOR_TYPE", "NVIDIA_TESLA_T4"),
            accelerator_count=settings.get_int("SKYSCORE_VERTEX_ACCELERATOR_COUNT", 1),
            service_account=settings.get("SKYSCORE_VERTEX_SERVICE_ACCOUNT"),
            endpoint=settings.get("SKYSCORE_VERTEX_ENDPOINT"),
            max_runtime_seconds=settings.get_int("SKYSCORE_TRAINING_MAX_SECONDS", 4 * 3600),
        )

    def metrics(self, settings: Settings) -> Metrics:
        """JSON metric lines on stdout, for Cloud Logging's log-based metrics."""
        return CloudLoggingMetrics()


GCP = GcpBackend()
