"""Azure adapters: Blob Storage as the blob store, Storage Queues as the queue, Azure ML command
jobs as the job runner, Application Insights traces as the metrics sink.

The Azure SDKs (azure-storage-blob, azure-storage-queue, azure-identity) are imported when a
client is first needed, never at import time, so the local runtime and the other clouds never
load them. Storage is configured the way the Functions host configures a binding connection
named ``SKYSCORE_STORAGE``: a connection string in ``SKYSCORE_STORAGE`` (Azurite, a key), or
identity-based settings (``SKYSCORE_STORAGE__blobServiceUri``, ``__queueServiceUri``,
``__accountName``, ``__clientId``) with the app's managed identity. One setting serves the
triggers and the SDK clients alike.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import math
import re
import shlex
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import quote, unquote, urlencode

from skyscore import clock
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

CONNECTION = "SKYSCORE_STORAGE"  # the binding connection name, shared with function_app.py
DEFAULT_BLOCK_BYTES = 8 << 20  # staged block size of streamed writes
MAX_BLOCKS = 50_000  # Azure's limit of committed blocks per blob
MANAGEMENT_ENDPOINT = "https://management.azure.com"
MANAGEMENT_SCOPE = "https://management.azure.com/.default"
AZUREML_API_VERSION = "2024-04-01"
MODEL_TAG = "skyscore-model"  # job tag whose value is the model name (the list filter)
OUTPUT_PROPERTY = "skyscore-output-uri"  # job property: the store URI the job writes to
POISON_SUFFIX = "-poison"  # where the Functions host moves messages it gave up on
DEFAULT_MAX_DEQUEUE = 5  # the host's default ``maxDequeueCount``
MODEL_ARTIFACTS = ("model.onnx", "card.json")
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")
_STATES: dict[str, JobState] = {
    "NotStarted": "pending",
    "Starting": "pending",
    "Provisioning": "pending",
    "Preparing": "pending",
    "Queued": "pending",
    "Scheduled": "pending",
    "Paused": "pending",
    "Running": "running",
    "Finalizing": "running",
    "CancelRequested": "running",
    "Completed": "completed",
    "Failed": "failed",
    "NotResponding": "failed",
    "Canceled": "stopped",
}
_client_lock = threading.Lock()


def _status_code(error: Exception) -> int:
    return int(getattr(error, "status_code", 0) or 0)


def _error_code(error: Exception) -> str:
    return str(getattr(error, "error_code", "") or "")


def _managed_identity(client_id: str | None) -> Any:
    """The app's managed identity (a user-assigned one when ``client_id`` is given); away from
    Azure (no ``IDENTITY_ENDPOINT``), the developer's credential chain."""
    import os

    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if os.environ.get("IDENTITY_ENDPOINT") or os.environ.get("MSI_ENDPOINT"):
        return ManagedIdentityCredential(client_id=client_id)
    return DefaultAzureCredential(managed_identity_client_id=client_id)


def storage_endpoint(settings: Settings, service: str, connection: str = CONNECTION) -> str:
    """The ``blob`` or ``queue`` service URI of an identity-based connection."""
    uri = settings.get(f"{connection}__{service}ServiceUri")
    if uri:
        return uri.rstrip("/")
    account = settings.get(f"{connection}__accountName")
    if account:
        return f"https://{account}.{service}.core.windows.net"
    raise ConfigError(
        f"the function is not configured: set {connection} (a connection string) or "
        f"{connection}__{service}ServiceUri / {connection}__accountName (managed identity)",
        field=connection,
    )


# --------------------------------------------------------------------------------------------
# Blob Storage
# --------------------------------------------------------------------------------------------


class _DownloadReader(io.RawIOBase):
    """A ``StorageStreamDownloader`` as a binary file: chunks are fetched as they are read."""

    def __init__(self, downloader: Any) -> None:
        self._downloader = downloader

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._downloader.read(len(view))
        view[: len(data)] = data
        return len(data)


class _BlockWriter(PartWriter):
    """Buffers writes into blocks staged with ``stage_block``; :meth:`finish` commits the list.

    An output smaller than one block is one ``upload_blob``. Uncommitted blocks are invisible
    and the service discards them (after a week), so an aborted write leaves nothing to see.
    Block ids carry a per-writer prefix: two writers of one key never mix their blocks.
    """

    def __init__(self, blob: Any, block_bytes: int) -> None:
        super().__init__(block_bytes)
        self._blob = blob
        self._prefix = uuid.uuid4().hex
        self._blocks: list[str] = []

    def _send_part(self, block: bytes) -> None:
        if len(self._blocks) >= MAX_BLOCKS:
            raise SkyscoreError(f"{self._blob.url}: more than {MAX_BLOCKS} blocks")
        block_id = f"{self._prefix}-{len(self._blocks):06d}"  # equal lengths, as Azure requires
        self._blob.stage_block(block_id, block, length=len(block))
        self._blocks.append(block_id)

    def finish(self) -> None:
        """Publish the blob: the staged block list, or one upload when nothing was staged."""
        if not self._blocks:
            self._blob.upload_blob(self._rest(), overwrite=True)
            return
        rest = self._rest()
        if rest:
            self._send_part(rest)
        from azure.storage.blob import BlobBlock

        self._blob.commit_block_list([BlobBlock(block_id=b) for b in self._blocks])


class AzureBlobStore(BlobStore):
    """Blobs under ``<container>/<prefix>`` of one storage account.

    Versions are the blobs' ETags (quoted, as the API returns them); Event Grid spells them
    without quotes, which :meth:`same_version` forgives. Conditional writes are the service's
    own: ``if_absent`` is ``If-None-Match: *`` (``upload_blob(overwrite=False)``), ``if_version``
    is ``If-Match: <ETag>`` (``MatchConditions.IfNotModified``); a failed condition changes
    nothing and raises :class:`ConflictError`. ``open_write`` stages blocks and commits the list
    on a clean exit, so outputs of any size use bounded memory and appear only when complete.
    """

    def __init__(
        self,
        container: str,
        prefix: str = "",
        *,
        connection_string: str | None = None,
        account_url: str | None = None,
        credential: Any = None,
        client: Any = None,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
    ) -> None:
        if not container:
            raise ValueError("AzureBlobStore needs a container name")
        if client is None and not connection_string and not account_url:
            raise ValueError("AzureBlobStore needs a connection string, an account URL or a client")
        if block_bytes < 1:
            raise ValueError("block_bytes must be positive")
        prefix = prefix.strip("/")
        self.container = container
        self.prefix = f"{prefix}/" if prefix else ""
        self.block_bytes = block_bytes
        self._connection_string = connection_string
        self._account_url = account_url.rstrip("/") if account_url else None
        self._credential = credential
        self._client = client
        if client is not None:
            base = str(client.url).rstrip("/")
        elif account_url:
            base = f"{self._account_url}/{quote(container)}"
        else:
            base = f"{_blob_endpoint(connection_string or '')}/{quote(container)}"
        self.container_url = base
        self.uri = f"{base}/{quote(self.prefix)}"

    def __repr__(self) -> str:
        return f"AzureBlobStore({self.container_url!r}, {self.prefix!r})"

    @property
    def client(self) -> Any:
        """The ``ContainerClient``, created on first use."""
        if self._client is None:
            with _client_lock:
                if self._client is None:
                    from azure.storage.blob import ContainerClient

                    if self._connection_string:
                        self._client = ContainerClient.from_connection_string(
                            self._connection_string, self.container
                        )
                    else:
                        self._client = ContainerClient(
                            str(self._account_url), self.container, credential=self._credential
                        )
        return self._client

    def _name(self, key: str) -> str:
        if not key or key.startswith("/") or "\x00" in key:
            raise ValueError(f"invalid blob key {key!r}: must be a relative '/'-separated path")
        return self.prefix + key

    def _blob(self, key: str) -> Any:
        return self.client.get_blob_client(self._name(key))

    def key_for(self, name: str) -> str | None:
        """The store key of a blob name (``None`` when it is outside this store's prefix)."""
        if not name.startswith(self.prefix) or name == self.prefix:
            return None
        return name[len(self.prefix) :]

    # -- names ---------------------------------------------------------------------------------

    def uri_for(self, key: str) -> str:
        """``https://<account>.blob.core.windows.net/<container>/<prefix><key>`` (encoded)."""
        return f"{self.container_url}/{quote(self._name(key))}"

    def key_for_uri(self, uri: str) -> str | None:
        """The store key of a blob URL in this container and prefix, else ``None``."""
        head = self.container_url + "/"
        if not uri.startswith(head):
            return None
        return self.key_for(unquote(uri[len(head) :].partition("?")[0]))

    def key_for_object(self, container: str, name: str) -> str | None:
        """The store key of blob ``name`` (decoded) in ``container``."""
        return self.key_for(name) if container == self.container else None

    def same_version(self, a: str, b: str) -> bool:
        """Event Grid's ``eTag`` has no quotes; the blob API's ``ETag`` has them."""
        return a.strip('"') == b.strip('"')

    # -- reads ---------------------------------------------------------------------------------

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        """The whole blob and the ETag of exactly those bytes."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            downloader = self._blob(key).download_blob()
        except ResourceNotFoundError:
            raise NotFound(f"no object {key!r} in {self.uri}") from None
        return cast(bytes, downloader.readall()), str(downloader.properties.etag)

    def open_read(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """The blob's content, streamed in chunks (each pinned to the first chunk's ETag)."""
        return self._open(key, None)

    def open_range(
        self, key: str, start: int, end: int
    ) -> contextlib.AbstractContextManager[BinaryIO]:
        """Bytes ``[start, end)`` with one ranged download; past the end reads short or empty."""
        if start < 0 or end < start:
            raise ValueError(f"invalid byte range [{start}, {end})")
        return self._open(key, (start, end))

    @contextlib.contextmanager
    def _open(self, key: str, byte_range: tuple[int, int] | None) -> Iterator[BinaryIO]:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        blob = self._blob(key)
        extra: dict[str, int] = {}
        if byte_range is not None:
            start, end = byte_range
            if end == start:
                if blob.exists():
                    yield cast(BinaryIO, io.BytesIO(b""))
                    return
                raise NotFound(f"no object {key!r} in {self.uri}")
            extra = {"offset": start, "length": end - start}
        try:
            downloader = blob.download_blob(max_concurrency=1, **extra)
        except ResourceNotFoundError:
            raise NotFound(f"no object {key!r} in {self.uri}") from None
        except HttpResponseError as error:
            if byte_range is None or _status_code(error) != 416:
                raise
            yield cast(BinaryIO, io.BytesIO(b""))  # the range starts at or past the end
            return
        reader = io.BufferedReader(_DownloadReader(downloader), buffer_size=1 << 20)
        try:
            yield cast(BinaryIO, reader)
        finally:
            reader.close()

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and ETag, or ``None``."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = self._blob(key).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return ObjectInfo(key, int(props.size), str(props.etag))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Blobs under ``prefix`` in key order (the service lists names in UTF-8 byte order)."""
        for item in self.client.list_blobs(name_starts_with=self.prefix + prefix):
            key = self.key_for(str(item.name))
            if key is not None:
                yield ObjectInfo(key, int(item.size), _quoted(str(item.etag)))

    # -- writes --------------------------------------------------------------------------------

    def write_bytes(
        self, key: str, data: bytes, *, if_absent: bool = False, if_version: str | None = None
    ) -> str:
        """One ``upload_blob`` (atomic); ``if_absent`` sends ``If-None-Match: *`` and
        ``if_version`` ``If-Match: <ETag>``, both enforced by the service."""
        from azure.core import MatchConditions
        from azure.core.exceptions import (
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )

        if if_absent and if_version is not None:
            raise ValueError("if_absent and if_version exclude each other")
        extra: dict[str, Any] = {}
        if if_version is not None:
            extra = {"etag": if_version, "match_condition": MatchConditions.IfNotModified}
        try:
            answer = self._blob(key).upload_blob(data, overwrite=not if_absent, **extra)
        except ResourceExistsError:
            if not if_absent:
                raise
            raise ConflictError(f"object {key!r} already exists in {self.uri}") from None
        except (ResourceModifiedError, ResourceNotFoundError):
            if if_version is None:
                raise
            raise ConflictError(
                f"object {key!r} in {self.uri} changed since {if_version}"
            ) from None
        return str(answer["etag"])

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        """Stream into staged blocks, committed only if the block exits cleanly."""
        writer = _BlockWriter(self._blob(key), self.block_bytes)
        yield cast(BinaryIO, writer)
        writer.finish()

    def delete(self, key: str) -> None:
        """Remove a blob (and its snapshots); a missing one is fine."""
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            self._blob(key).delete_blob(delete_snapshots="include")


def _quoted(etag: str) -> str:
    """An ETag as the blob API's headers spell it (listings drop the quotes)."""
    return etag if etag.startswith('"') else f'"{etag}"'


def _connection_parts(connection_string: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for item in connection_string.split(";"):
        name, sep, value = item.partition("=")
        if sep:
            parts[name.strip()] = value.strip()
    return parts


def _blob_endpoint(connection_string: str) -> str:
    """The blob endpoint a connection string names (without asking the SDK)."""
    parts = _connection_parts(connection_string)
    if parts.get("UseDevelopmentStorage", "").lower() == "true":
        return "http://127.0.0.1:10000/devstoreaccount1"
    if "BlobEndpoint" in parts:
        return parts["BlobEndpoint"].rstrip("/")
    account = parts.get("AccountName")
    if not account:
        raise ValueError("the connection string names no blob endpoint or account")
    protocol = parts.get("DefaultEndpointsProtocol", "https")
    suffix = parts.get("EndpointSuffix", "core.windows.net")
    return f"{protocol}://{account}.blob.{suffix}"


# --------------------------------------------------------------------------------------------
# Storage Queues
# --------------------------------------------------------------------------------------------


class AzureQueue(QueuePort):
    """A Storage Queue, its bodies base64-encoded exactly as the Functions host encodes them
    (``messageEncoding: base64``), so a queue-triggered function reads what this sends.

    Poison messages go to ``<queue>-poison`` after ``max_receives`` deliveries, which is what
    the host does after ``maxDequeueCount``. Storage Queues have no message attributes: a body
    sent with attributes travels in a small JSON envelope that :func:`unwrap` opens (the core
    sends none, so what it enqueues is exactly its body). A message holds at most 64 KiB
    once encoded.
    """

    def __init__(
        self,
        name: str,
        *,
        connection_string: str | None = None,
        account_url: str | None = None,
        credential: Any = None,
        client: Any = None,
        max_receives: int = DEFAULT_MAX_DEQUEUE,
        dead_letter: QueuePort | None = None,
        poison: bool = True,
    ) -> None:
        if client is None and not connection_string and not account_url:
            raise ValueError("AzureQueue needs a connection string, an account URL or a client")
        if dead_letter is None and poison and not name.endswith(POISON_SUFFIX):
            dead_letter = AzureQueue(
                name + POISON_SUFFIX,
                connection_string=connection_string,
                account_url=account_url,
                credential=credential,
                poison=False,
            )
        super().__init__(max_receives=max_receives, dead_letter=dead_letter)
        self.name = name
        self._connection_string = connection_string
        self._account_url = account_url
        self._credential = credential
        self._client = client

    def __repr__(self) -> str:
        return f"AzureQueue({self.name!r})"

    @property
    def client(self) -> Any:
        """The ``QueueClient`` (base64 policies as the host uses them), created on first use."""
        if self._client is None:
            with _client_lock:
                if self._client is None:
                    from azure.storage.queue import (
                        BinaryBase64DecodePolicy,
                        BinaryBase64EncodePolicy,
                        QueueClient,
                    )

                    # Bytes in, bytes out: the wire format is base64 of the body's bytes, what
                    # TextBase64EncodePolicy writes for UTF-8 text and the host decodes.
                    encode, decode = BinaryBase64EncodePolicy(), BinaryBase64DecodePolicy()
                    if self._connection_string:
                        self._client = QueueClient.from_connection_string(
                            self._connection_string,
                            self.name,
                            message_encode_policy=encode,
                            message_decode_policy=decode,
                        )
                    else:
                        self._client = QueueClient(
                            str(self._account_url),
                            self.name,
                            credential=self._credential,
                            message_encode_policy=encode,
                            message_decode_policy=decode,
                        )
        return self._client

    def send(self, body: bytes, attributes: dict[str, str] | None = None) -> str:
        """Enqueue (base64 of the body, enveloped only with attributes); returns the id."""
        payload = wrap(bytes(body), attributes) if attributes else bytes(body)
        return str(self.client.send_message(payload).id)

    def _receive(self, max_messages: int, visibility_timeout: float) -> list[Message]:
        if max_messages <= 0:
            return []
        count = min(max_messages, 32)
        pages = self.client.receive_messages(
            messages_per_page=count,
            max_messages=count,
            visibility_timeout=max(1, math.ceil(visibility_timeout)),
        )
        out: list[Message] = []
        for item in pages:
            body, attributes = unwrap(bytes(item.content or b""))
            out.append(
                Message(
                    id=str(item.id),
                    body=body,
                    receipt=str(item.pop_receipt),
                    receive_count=int(item.dequeue_count or 1),
                    attributes=attributes,
                )
            )
        return out

    def ack(self, message: Message) -> None:
        """Delete the message (already gone is fine)."""
        from azure.core.exceptions import ResourceNotFoundError

        with contextlib.suppress(ResourceNotFoundError):
            self.client.delete_message(message.id, message.receipt)

    def release(self, message: Message) -> None:
        """Visible again at once (visibility timeout 0)."""
        self.client.update_message(message.id, message.receipt, visibility_timeout=0)


_ENVELOPE = b'{"skyscore-envelope":1,'


def wrap(body: bytes, attributes: dict[str, str]) -> bytes:
    """A body with attributes as one queue message (Storage Queues carry bodies only)."""
    record = {"attributes": dict(attributes), "body": base64.b64encode(body).decode("ascii")}
    return _ENVELOPE + json.dumps(record, separators=(",", ":")).encode()[1:]


def unwrap(raw: bytes) -> tuple[bytes, dict[str, str]]:
    """A message's body and attributes: :func:`wrap`'s envelope opened, anything else as is."""
    if not raw.startswith(_ENVELOPE):
        return raw, {}
    try:
        record = json.loads(raw)
        body = base64.b64decode(record["body"], validate=True)
        attributes = {str(k): str(v) for k, v in dict(record["attributes"]).items()}
    except (ValueError, KeyError, TypeError):
        return raw, {}
    return body, attributes


# --------------------------------------------------------------------------------------------
# Azure ML command jobs (REST)
# --------------------------------------------------------------------------------------------


def _job_name(prefix: str, model_name: str, now: datetime) -> str:
    """``<prefix>-<model>-<UTC stamp>``: letters, digits, ``-`` and ``_`` as Azure ML allows."""
    stamp = clock.stamp(now, separator="")[:-3]
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", model_name).strip("-_") or "model"
    return f"{prefix}-{safe[:200]}-{stamp}"


def _quoted_args(spec: JobSpec) -> list[str]:
    args = ["--target", spec.target, "--name", spec.model_name, "--estimator", spec.estimator]
    if spec.id_column:
        args += ["--id-column", spec.id_column]
    args += list(spec.extra_args)
    return [shlex.quote(arg) for arg in args]


class AzureMLJobRunner(JobRunner):
    """Command jobs in an Azure ML workspace through the REST API (the azure-ai-ml SDK is far
    too large for a function package), authenticated with a bearer token for
    ``https://management.azure.com/.default`` from the app's managed identity.

    The job runs the core's training entrypoint in a registered environment:
    ``python -m skyscore.training.train ${{inputs.data}} --target ... --output-dir
    ${{outputs.model}}``. The spec's store URIs become paths of the datastore that points at
    the data container (``azureml://datastores/<ds>/paths/<name>``), mounted read-only for the
    data and read-write for the output, so the job writes ``model.onnx`` and ``card.json``
    straight to the staging prefix: :meth:`materialize` only checks they are there.
    """

    def __init__(
        self,
        subscription_id: str,
        resource_group: str,
        workspace: str,
        *,
        datastore: str,
        container_url: str,
        environment_id: str,
        cpu_compute: str,
        gpu_compute: str = "",
        endpoint: str = MANAGEMENT_ENDPOINT,
        api_version: str = AZUREML_API_VERSION,
        credential: Any = None,
        experiment: str = "skyscore",
        job_prefix: str = "skyscore",
        max_runtime_seconds: int = 4 * 3600,
        identity: str = "Managed",
        timeout: float = 30.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        for name, value in (
            ("subscription id", subscription_id),
            ("resource group", resource_group),
            ("workspace", workspace),
            ("datastore", datastore),
            ("environment id", environment_id),
            ("CPU compute", cpu_compute),
        ):
            if not value:
                raise ValueError(f"AzureMLJobRunner needs a {name}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}", job_prefix):
            raise ValueError(f"invalid job prefix {job_prefix!r}: letters, digits, '-', '_'")
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.workspace = workspace
        self.datastore = datastore
        self.container_url = container_url.rstrip("/")
        self.environment_id = environment_id
        self.cpu_compute = cpu_compute
        self.gpu_compute = gpu_compute or cpu_compute
        self.endpoint = endpoint.rstrip("/")
        self.api_version = api_version
        self._credential = credential
        self.experiment = experiment
        self.job_prefix = job_prefix
        self.max_runtime_seconds = max_runtime_seconds
        self.identity = identity
        self.timeout = timeout
        self._clock = clock or (lambda: datetime.now(UTC))

    def __repr__(self) -> str:
        return f"AzureMLJobRunner({self.workspace!r}, {self.cpu_compute!r})"

    # -- REST ------------------------------------------------------------------------------

    @property
    def workspace_id(self) -> str:
        """The workspace's ARM resource id."""
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{self.workspace}"
        )

    def _credential_or_default(self) -> Any:
        if self._credential is None:
            self._credential = _managed_identity(None)
        return self._credential

    def _call(self, method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        from skyscore.adapters.rest import json_request

        return json_request(
            "Azure ML",
            method,
            url,
            self._credential_or_default().get_token(MANAGEMENT_SCOPE).token,
            body,
            timeout=self.timeout,
            content_type="application/json",
        )

    def job_url(self, job_id: str) -> str:
        """``PUT``/``GET`` address of one job."""
        return (
            f"{self.endpoint}{self.workspace_id}/jobs/{quote(job_id, safe='')}"
            f"?api-version={self.api_version}"
        )

    # -- the job ---------------------------------------------------------------------------

    def datastore_uri(self, uri: str) -> str:
        """A store URI (a blob URL in the data container) as a path of the workspace datastore."""
        if uri.startswith("azureml://"):
            return uri
        head = self.container_url + "/"
        if not uri.startswith(head):
            raise ValueError(f"{uri} is not in the data container {self.container_url}")
        return f"azureml://datastores/{self.datastore}/paths/{unquote(uri[len(head) :])}"

    def compute_for(self, spec: JobSpec) -> str:
        """The compute's ARM id: the spec's choice, else GPU only for an estimator that uses one."""
        from skyscore.lifecycle.hardware import hardware_for

        name = spec.instance_type or (
            self.gpu_compute if hardware_for(spec.estimator) == "gpu" else self.cpu_compute
        )
        return (
            name if name.startswith("/subscriptions/") else f"{self.workspace_id}/computes/{name}"
        )

    def job_body(self, spec: JobSpec) -> dict[str, Any]:
        """The ``Jobs - Create Or Update`` body of a command job for ``spec``."""
        command = " ".join(
            [
                "python -m skyscore.training.train ${{inputs.data}}",
                *_quoted_args(spec),
                "--output-dir ${{outputs.model}}",
            ]
        )
        hours, rest = divmod(self.max_runtime_seconds, 3600)
        minutes, seconds = divmod(rest, 60)
        return {
            "properties": {
                "jobType": "Command",
                "displayName": f"retrain {spec.model_name}",
                "experimentName": self.experiment,
                "description": f"skyscore retraining of {spec.model_name}",
                "tags": {MODEL_TAG: spec.model_name},
                "properties": {OUTPUT_PROPERTY: spec.output_uri},
                "command": command,
                "environmentId": self.environment_id,
                "computeId": self.compute_for(spec),
                "inputs": {
                    "data": {
                        "jobInputType": "uri_folder",
                        "uri": self.datastore_uri(spec.data_uri),
                        "mode": "ReadOnlyMount",
                    }
                },
                "outputs": {
                    "model": {
                        "jobOutputType": "uri_folder",
                        "uri": self.datastore_uri(spec.output_uri),
                        "mode": "ReadWriteMount",
                    }
                },
                "resources": {"instanceCount": 1},
                "limits": {
                    "jobLimitsType": "Command",
                    "timeout": f"PT{hours}H{minutes}M{seconds}S",
                },
                "identity": {"identityType": self.identity},
            }
        }

    def start(self, spec: JobSpec) -> JobStatus:
        """``PUT .../jobs/{id}``; returns at once (state ``pending``)."""
        job_id = _job_name(self.job_prefix, spec.model_name, self._clock())
        answer = self._call("PUT", self.job_url(job_id), self.job_body(spec))
        if answer.get("properties"):
            status = self._status(answer)
            return JobStatus(job_id, spec.model_name, status.state, spec.output_uri, status.message)
        return JobStatus(job_id, spec.model_name, "pending", spec.output_uri)

    def describe(self, job_id: str) -> JobStatus:
        """The job's state from ``GET .../jobs/{id}``."""
        if not _JOB_ID.match(job_id):
            raise NotFound(f"no Azure ML job {job_id!r}")
        return self._status(self._call("GET", self.job_url(job_id)))

    @staticmethod
    def _status(job: dict[str, Any]) -> JobStatus:
        props = job.get("properties") or {}
        raw = str(props.get("status") or "NotStarted")
        state = _STATES.get(raw, "running")
        tags = props.get("tags") or {}
        extra = props.get("properties") or {}
        return JobStatus(
            job_id=str(job.get("name") or ""),
            model_name=str(tags.get(MODEL_TAG) or ""),
            state=state,
            output_uri=str(extra.get(OUTPUT_PROPERTY) or ""),
            message=f"Azure ML status {raw}",
        )

    def list_jobs(self, model_name: str) -> list[JobStatus]:
        """This model's command jobs, newest first (listed by tag, confirmed by its value)."""
        query = urlencode({"api-version": self.api_version, "jobType": "Command", "tag": MODEL_TAG})
        url: str | None = f"{self.endpoint}{self.workspace_id}/jobs?{query}"
        found: list[tuple[str, JobStatus]] = []
        while url:
            page = self._call("GET", url)
            for job in page.get("value") or ():
                status = self._status(job)
                if status.model_name == model_name:
                    created = str((job.get("systemData") or {}).get("createdAt") or "")
                    found.append((created or status.job_id, status))
            link = page.get("nextLink")
            # follow only the service's own links: the token goes nowhere else
            url = str(link) if link and str(link).startswith(self.endpoint + "/") else None
        found.sort(key=lambda item: item[0], reverse=True)
        return [status for _, status in found]

    def materialize(self, status: JobStatus, store: BlobStore) -> None:
        """Nothing to unpack: the job wrote ``model.onnx`` and ``card.json`` to its output
        folder. Raises ``NotFound`` when one of them is missing."""
        prefix = store.key_for_uri(status.output_uri.rstrip("/") + "/")
        if prefix is None:
            raise SkyscoreError(f"job output {status.output_uri} is outside the store {store.uri}")
        for name in MODEL_ARTIFACTS:
            if not store.exists(prefix + name):
                raise NotFound(f"job {status.job_id} wrote no {name} to {status.output_uri}")


# --------------------------------------------------------------------------------------------
# Metrics: Application Insights traces
# --------------------------------------------------------------------------------------------

METRICS_LOGGER = "skyscore.metrics"


class _LoggerStream:
    """A text stream whose lines become log records (the Functions worker ships the root
    logger's records to Application Insights as traces; stdout may be dropped)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line:
                self._logger.info(line)
        return len(text)

    def flush(self) -> None:
        return None


class AppInsightsMetrics(LogMetrics):
    """The core's JSON metric records (``{"type":"metric","namespace":"skyscore",...}``) as
    log records of the ``skyscore.metrics`` logger: they land in Application Insights'
    ``AppTraces`` table, where the log-based alert rules of ``infra/azure`` read them."""

    def __init__(self, logger: logging.Logger | None = None, **dimensions: str) -> None:
        target = logger or logging.getLogger(METRICS_LOGGER)
        target.setLevel(logging.INFO)
        super().__init__(cast(IO[str], _LoggerStream(target)), format="json", **dimensions)


# --------------------------------------------------------------------------------------------
# Backend: how the Azure functions build the core
# --------------------------------------------------------------------------------------------

MAX_BODY_BYTES = 6 << 20
"""The same limit as the local runtime and AWS: the Functions host accepts up to 100 MB, but a
body that large would be decoded in one instance's memory; files belong in the container."""
LEASE_SECONDS = 1800.0
"""host.json's ``functionTimeout`` (30 min, Flex Consumption's default): a claim older than that
belongs to an attempt that died."""


class AzureBackend:
    """Blob container, Storage Queue, Azure ML command jobs, Application Insights traces.

    Settings: ``SKYSCORE_STORAGE`` (connection string) or ``SKYSCORE_STORAGE__blobServiceUri`` /
    ``__queueServiceUri`` / ``__accountName`` with ``__clientId`` (managed identity);
    ``SKYSCORE_CONTAINER`` (required), ``SKYSCORE_PREFIX``, ``SKYSCORE_QUEUE`` and
    ``SKYSCORE_QUEUE_MAX_DEQUEUE`` (host.json's ``maxDequeueCount``). For retraining:
    ``SKYSCORE_AZUREML_SUBSCRIPTION_ID``, ``_RESOURCE_GROUP``, ``_WORKSPACE``, ``_DATASTORE``,
    ``_ENVIRONMENT``, ``_CPU_COMPUTE``, ``_GPU_COMPUTE``, ``_CLIENT_ID``, ``_ENDPOINT``,
    ``_API_VERSION`` and ``SKYSCORE_TRAINING_MAX_SECONDS``.
    """

    name = "azure"

    def __init__(self) -> None:
        from skyscore.runtime.settings import CloudDefaults

        self.defaults = CloudDefaults(MAX_BODY_BYTES, LEASE_SECONDS, "json")

    @staticmethod
    def _storage(settings: Settings, service: str) -> dict[str, Any]:
        connection = settings.get(CONNECTION)
        if connection:
            return {"connection_string": connection}
        return {
            "account_url": storage_endpoint(settings, service),
            "credential": _managed_identity(settings.get(f"{CONNECTION}__clientId") or None),
        }

    def store(self, settings: Settings) -> AzureBlobStore:
        """The data container."""
        container = settings.require("SKYSCORE_CONTAINER")
        return AzureBlobStore(container, settings.prefix, **self._storage(settings, "blob"))

    def queue(self, settings: Settings) -> AzureQueue | None:
        """The work queue (with ``<queue>-poison``), when configured."""
        name = settings.get("SKYSCORE_QUEUE")
        if not name:
            return None
        return AzureQueue(
            name,
            max_receives=settings.get_int("SKYSCORE_QUEUE_MAX_DEQUEUE", DEFAULT_MAX_DEQUEUE),
            **self._storage(settings, "queue"),
        )

    def jobs(self, settings: Settings) -> AzureMLJobRunner:
        """Azure ML command jobs in the configured workspace."""
        client_id = settings.get("SKYSCORE_AZUREML_CLIENT_ID") or None
        return AzureMLJobRunner(
            settings.require("SKYSCORE_AZUREML_SUBSCRIPTION_ID"),
            settings.require("SKYSCORE_AZUREML_RESOURCE_GROUP"),
            settings.require("SKYSCORE_AZUREML_WORKSPACE"),
            datastore=settings.require("SKYSCORE_AZUREML_DATASTORE"),
            container_url=self.store(settings).container_url,
            environment_id=settings.require("SKYSCORE_AZUREML_ENVIRONMENT"),
            cpu_compute=settings.require("SKYSCORE_AZUREML_CPU_COMPUTE"),
            gpu_compute=settings.get("SKYSCORE_AZUREML_GPU_COMPUTE"),
            endpoint=settings.get("SKYSCORE_AZUREML_ENDPOINT", MANAGEMENT_ENDPOINT),
            api_version=settings.get("SKYSCORE_AZUREML_API_VERSION", AZUREML_API_VERSION),
            credential=_managed_identity(client_id),
            max_runtime_seconds=settings.get_int("SKYSCORE_TRAINING_MAX_SECONDS", 4 * 3600),
        )

    def metrics(self, settings: Settings) -> Metrics:
        """JSON metric records as traces in Application Insights."""
        return AppInsightsMetrics()


AZURE = AzureBackend()
