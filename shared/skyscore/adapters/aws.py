"""AWS adapters: S3 as the blob store, SQS as the queue, SageMaker as the job runner.

boto3 is imported when a client is first needed, never at import time, so the local runtime and
the other clouds never load it. Clients are built with boto3's defaults, which honour
``AWS_ENDPOINT_URL`` (moto, LocalStack) and the usual credential chain; pass ``client=`` to
share one or to test with a stub.
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
import re
import tarfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from skyscore import clock
from skyscore.adapters.streams import PartWriter
from skyscore.errors import ConflictError, NotFound, SkyscoreError
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

MIN_PART_BYTES = 5 << 20  # S3's smallest multipart part (except the last)
DEFAULT_PART_BYTES = 16 << 20
MAX_PARTS = 10_000
DEFAULT_INSTANCE_TYPE = "ml.m5.large"  # CPU: the scikit-learn estimators cannot use a GPU
DEFAULT_GPU_INSTANCE_TYPE = "ml.g5.xlarge"  # for an estimator that can (xgboost)
ENCODING_ATTRIBUTE = "skyscore-encoding"  # "base64" when a body was not UTF-8 text
MODEL_ARTIFACT_MEMBERS = ("model.onnx", "card.json")
MAX_ARTIFACT_MEMBER_BYTES = 1 << 30
_STATES: dict[str, JobState] = {
    "InProgress": "running",
    "Stopping": "running",
    "Completed": "completed",
    "Failed": "failed",
    "Stopped": "stopped",
}
_client_lock = threading.Lock()


def _boto3_client(service: str) -> Any:
    """A boto3 client (imported here: boto3 costs ~100 ms of cold start when unused)."""
    import boto3

    with _client_lock:  # boto3's default session is not thread-safe while creating clients
        return boto3.client(service)


def _error_code(error: Exception) -> str:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _status_code(error: Exception) -> int:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return 0


def _is_missing(error: Exception) -> bool:
    return _error_code(error) in ("NoSuchKey", "404", "NotFound") or _status_code(error) == 404


def _is_unsatisfiable(error: Exception) -> bool:
    """416: a ranged GET that starts at or after the object's end."""
    return _error_code(error) == "InvalidRange" or _status_code(error) == 416


def _is_precondition(error: Exception) -> bool:
    # 412: the object exists; 409: a concurrent conditional write to the same key won the race
    return _error_code(error) in ("PreconditionFailed", "ConditionalRequestConflict") or (
        _status_code(error) in (409, 412)
    )


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` as ``(bucket, key)``."""
    match = re.fullmatch(r"s3://([^/]+)/?(.*)", uri)
    if match is None:
        raise ValueError(f"{uri!r} is not an s3:// URI")
    return match.group(1), match.group(2)


# --------------------------------------------------------------------------------------------
# S3
# --------------------------------------------------------------------------------------------


class _BodyReader(io.RawIOBase):
    """A botocore ``StreamingBody`` as a binary file: ``read(size)`` streams, never buffers all."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        if size is None or size < 0:
            return cast(bytes, self._body.read())
        return cast(bytes, self._body.read(size))

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._body.close()
        super().close()


class _MultipartWriter(PartWriter):
    """Buffers writes into parts; the first full part starts a multipart upload.

    Small outputs (under one part) become a single ``put_object``; nothing is visible under the
    key until :meth:`finish` completes the upload, and :meth:`abort` leaves nothing behind.
    """

    def __init__(self, client: Any, bucket: str, key: str, part_bytes: int) -> None:
        super().__init__(part_bytes)
        self._client = client
        self._bucket = bucket
        self._key = key
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def _send_part(self, part: bytes) -> None:
        if self._upload_id is None:
            created = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)
            self._upload_id = str(created["UploadId"])
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise SkyscoreError(f"s3://{self._bucket}/{self._key}: more than {MAX_PARTS} parts")
        answer = self._client.upload_part(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=part,
        )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def finish(self) -> None:
        """Publish the object: the last part and completion, or one ``put_object``."""
        if self._upload_id is None:
            self._client.put_object(Bucket=self._bucket, Key=self._key, Body=self._rest())
            return
        rest = self._rest()
        if rest or not self._parts:
            self._send_part(rest)
        self._client.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )

    def abort(self) -> None:
        """Drop the parts uploaded so far (S3 would otherwise keep billing for them)."""
        if self._upload_id is not None:
            with contextlib.suppress(Exception):
                self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
                )


class S3BlobStore(BlobStore):
    """Objects under ``s3://bucket/prefix``.

    Reads stream from ``get_object``; ``open_write`` streams through a multipart upload (parts
    of ``part_bytes``, at least 5 MiB), so outputs of any size use bounded memory and appear
    only when complete. ``if_absent`` writes use ``If-None-Match: *``, which S3 enforces
    atomically: of two racing writers exactly one succeeds.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        client: Any = None,
        *,
        part_bytes: int = DEFAULT_PART_BYTES,
    ) -> None:
        if not bucket:
            raise ValueError("S3BlobStore needs a bucket name")
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"part_bytes must be at least {MIN_PART_BYTES} (S3's minimum)")
        prefix = prefix.strip("/")
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.part_bytes = part_bytes
        self._client = client
        self.uri = f"s3://{bucket}/{self.prefix}"

    def __repr__(self) -> str:
        return f"S3BlobStore({self.bucket!r}, {self.prefix!r})"

    @property
    def client(self) -> Any:
        """The S3 client, created on first use."""
        if self._client is None:
            self._client = _boto3_client("s3")
        return self._client

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or "\x00" in key:
            raise ValueError(f"invalid blob key {key!r}: must be a relative '/'-separated path")
        return self.prefix + key

    def key_for(self, s3_key: str) -> str | None:
        """The store key of a bucket key (``None`` when it is outside this store's prefix)."""
        if not s3_key.startswith(self.prefix) or s3_key == self.prefix:
            return None
        return s3_key[len(self.prefix) :]

    # -- reads ---------------------------------------------------------------------------------

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        """The whole object and the ETag S3 sent with those bytes."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as error:
            if _is_missing(error):
                raise NotFound(f"no object {key!r} in {self.uri}") from None
            raise
        return cast(bytes, answer["Body"].read()), str(answer["ETag"])

    def uri_for(self, key: str) -> str:
        """``s3://bucket/prefix/key``."""
        return f"s3://{self.bucket}/{self._key(key)}"

    def key_for_uri(self, uri: str) -> str | None:
        """The store key of an ``s3://`` URI in this bucket and prefix, else ``None``."""
        head = f"s3://{self.bucket}/"
        return self.key_for(uri[len(head) :]) if uri.startswith(head) else None

    def key_for_object(self, container: str, name: str) -> str | None:
        """The store key of ``name`` in bucket ``container`` (already URL-decoded)."""
        return self.key_for(name) if container == self.bucket else None

    def same_version(self, a: str, b: str) -> bool:
        """S3 events spell the ETag without the quotes that its API returns."""
        return a.strip('"') == b.strip('"')

    def open_read(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """The object's body, streamed (buffered reads of the HTTP response)."""
        return self._open(key, None)

    def open_range(
        self, key: str, start: int, end: int
    ) -> contextlib.AbstractContextManager[BinaryIO]:
        """Bytes ``[start, end)`` of the object, streamed (one ranged GET); a range that
        starts past the end reads empty, as it does from a file."""
        if start < 0 or end < start:
            raise ValueError(f"invalid byte range [{start}, {end})")
        return self._open(key, (start, end))

    @contextlib.contextmanager
    def _open(self, key: str, byte_range: tuple[int, int] | None) -> Iterator[BinaryIO]:
        extra: dict[str, str] = {}
        if byte_range is not None:
            start, end = byte_range
            if end == start:
                yield cast(BinaryIO, io.BytesIO(b""))
                return
            extra["Range"] = f"bytes={start}-{end - 1}"
        body: Any = None
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **extra)["Body"]
        except Exception as error:
            if _is_missing(error):
                raise NotFound(f"no object {key!r} in {self.uri}") from None
            if byte_range is None or not _is_unsatisfiable(error):
                raise
        if body is None:  # the range starts past the end
            yield cast(BinaryIO, io.BytesIO(b""))
            return
        reader = io.BufferedReader(_BodyReader(body), buffer_size=1 << 20)
        try:
            yield cast(BinaryIO, reader)
        finally:
            reader.close()

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and ETag (as S3 spells it), or ``None``."""
        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as error:
            if _is_missing(error):
                return None
            raise
        return ObjectInfo(key, int(answer["ContentLength"]), str(answer["ETag"]))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` in key order (S3 lists in UTF-8 byte order)."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for item in page.get("Contents", ()):
                key = self.key_for(str(item["Key"]))
                if key is not None:
                    yield ObjectInfo(key, int(item["Size"]), str(item["ETag"]))

    # -- writes --------------------------------------------------------------------------------

    def write_bytes(
        self, key: str, data: bytes, *, if_absent: bool = False, if_version: str | None = None
    ) -> str:
        """One ``put_object`` (atomic); ``if_absent`` sends ``If-None-Match: *`` and
        ``if_version`` ``If-Match: <ETag>``, both enforced by S3 (412 when they fail)."""
        extra: dict[str, str] = {}
        if if_absent:
            extra["IfNoneMatch"] = "*"
        if if_version is not None:
            extra["IfMatch"] = if_version
        try:
            answer = self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, **extra
            )
        except Exception as error:
            if extra and (_is_precondition(error) or (if_version and _is_missing(error))):
                raise ConflictError(
                    f"object {key!r} in {self.uri} "
                    + ("already exists" if if_absent else f"changed since {if_version}")
                ) from None
            raise
        return str(answer["ETag"])

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        """Stream into a multipart upload, completed only if the block exits cleanly."""
        writer = _MultipartWriter(self.client, self.bucket, self._key(key), self.part_bytes)
        try:
            yield cast(BinaryIO, writer)
            writer.finish()
        except BaseException:
            writer.abort()
            raise

    def delete(self, key: str) -> None:
        """Remove an object (S3 deletes of missing keys succeed)."""
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))


# --------------------------------------------------------------------------------------------
# SQS
# --------------------------------------------------------------------------------------------


class SQSQueue(QueuePort):
    """An SQS queue. Dead-lettering is SQS's own redrive policy (``maxReceiveCount``) unless a
    ``dead_letter`` port is given, in which case the base class moves poison messages itself.
    """

    def __init__(
        self,
        url: str,
        client: Any = None,
        *,
        max_receives: int = 5,
        dead_letter: QueuePort | None = None,
    ) -> None:
        super().__init__(max_receives=max_receives, dead_letter=dead_letter)
        if not url:
            raise ValueError("SQSQueue needs a queue URL")
        self.url = url
        self.uri = url
        self._client = client

    def __repr__(self) -> str:
        return f"SQSQueue({self.url!r})"

    @property
    def client(self) -> Any:
        """The SQS client, created on first use."""
        if self._client is None:
            self._client = _boto3_client("sqs")
        return self._client

    def send(self, body: bytes, attributes: dict[str, str] | None = None) -> str:
        """Send one message; bodies that are not UTF-8 text travel base64-encoded."""
        attrs = dict(attributes or {})
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = base64.b64encode(body).decode("ascii")
            attrs[ENCODING_ATTRIBUTE] = "base64"
        message_attributes = {
            name: {"DataType": "String", "StringValue": value} for name, value in attrs.items()
        }
        answer = self.client.send_message(
            QueueUrl=self.url,
            MessageBody=text,
            **({"MessageAttributes": message_attributes} if message_attributes else {}),
        )
        return str(answer["MessageId"])

    def _receive(self, max_messages: int, visibility_timeout: float) -> list[Message]:
        if max_messages <= 0:
            return []
        answer = self.client.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=min(max_messages, 10),
            VisibilityTimeout=max(0, math.ceil(visibility_timeout)),
            WaitTimeSeconds=0,
            AttributeNames=["ApproximateReceiveCount"],
            MessageAttributeNames=["All"],
        )
        out = []
        for item in answer.get("Messages", ()):
            attributes = {
                name: str(value.get("StringValue", ""))
                for name, value in item.get("MessageAttributes", {}).items()
            }
            out.append(
                Message(
                    id=str(item["MessageId"]),
                    body=decode_body(str(item["Body"]), attributes),
                    receipt=str(item["ReceiptHandle"]),
                    receive_count=int(item.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
                    attributes=attributes,
                )
            )
        return out

    def ack(self, message: Message) -> None:
        """Delete the message."""
        self.client.delete_message(QueueUrl=self.url, ReceiptHandle=message.receipt)

    def release(self, message: Message) -> None:
        """Visible again at once (visibility timeout 0)."""
        self.client.change_message_visibility(
            QueueUrl=self.url, ReceiptHandle=message.receipt, VisibilityTimeout=0
        )


def decode_body(text: str, attributes: dict[str, str]) -> bytes:
    """A message body as bytes, undoing :meth:`SQSQueue.send`'s base64 for binary bodies."""
    if attributes.get(ENCODING_ATTRIBUTE) == "base64":
        return base64.b64decode(text)
    return text.encode("utf-8")


# --------------------------------------------------------------------------------------------
# SageMaker
# --------------------------------------------------------------------------------------------


def _job_name(prefix: str, model_name: str, now: datetime) -> str:
    """A SageMaker job name: ``<prefix>-<model>-<UTC stamp>``, at most 63 characters of
    ``[A-Za-z0-9-]``; the model name is shortened, never the time stamp."""
    stamp = clock.stamp(now, separator="")[:-3]
    safe = re.sub(r"[^A-Za-z0-9]+", "-", model_name).strip("-") or "model"
    room = 63 - len(prefix) - len(stamp) - 2
    return f"{prefix}-{safe[:room].strip('-')}-{stamp}"


class SageMakerJobRunner(JobRunner):
    """Training jobs on SageMaker with boto3's ``create_training_job`` (the SageMaker SDK is
    too large for a function package).

    The job runs the core's training entrypoint from ``image_uri`` (see ``infra/aws/``): the
    spec's data prefix is the ``train`` channel, the spec's output URI the output path, and
    target, name, estimator and id column travel as (string) hyperparameters. SageMaker writes
    ``<output>/<job>/output/model.tar.gz``; :meth:`materialize` unpacks it to ``<output>/``,
    the layout every runner delivers (``model.onnx`` + ``card.json``).
    """

    def __init__(
        self,
        role_arn: str,
        image_uri: str,
        *,
        instance_type: str = DEFAULT_INSTANCE_TYPE,
        gpu_instance_type: str = DEFAULT_GPU_INSTANCE_TYPE,
        instance_count: int = 1,
        volume_size_gb: int = 30,
        max_runtime_seconds: int = 4 * 3600,
        job_prefix: str = "skyscore",
        tags: dict[str, str] | None = None,
        client: Any = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not role_arn or not image_uri:
            raise ValueError("SageMakerJobRunner needs a role ARN and a training image URI")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,20}", job_prefix):
            raise ValueError(f"invalid job prefix {job_prefix!r}: letters, digits, '-' (<= 21)")
        self.role_arn = role_arn
        self.image_uri = image_uri
        self.instance_type = instance_type or DEFAULT_INSTANCE_TYPE
        self.gpu_instance_type = gpu_instance_type or DEFAULT_GPU_INSTANCE_TYPE
        self.instance_count = instance_count
        self.volume_size_gb = volume_size_gb
        self.max_runtime_seconds = max_runtime_seconds
        self.job_prefix = job_prefix
        self.tags = dict(tags or {})
        self._client = client
        self._clock = clock or (lambda: datetime.now(UTC))

    def __repr__(self) -> str:
        return f"SageMakerJobRunner({self.image_uri!r}, {self.instance_type!r})"

    @property
    def client(self) -> Any:
        """The SageMaker client, created on first use."""
        if self._client is None:
            self._client = _boto3_client("sagemaker")
        return self._client

    @staticmethod
    def hyperparameters(spec: JobSpec) -> dict[str, str]:
        """What the training entrypoint reads from ``hyperparameters.json`` (all strings)."""
        params = {"target": spec.target, "name": spec.model_name, "estimator": spec.estimator}
        if spec.id_column:
            params["id-column"] = spec.id_column
        return params

    def instance_type_for(self, spec: JobSpec) -> str:
        """The spec's own choice, else a GPU instance only for an estimator that uses one."""
        from skyscore.lifecycle.hardware import hardware_for

        if spec.instance_type:
            return spec.instance_type
        return (
            self.gpu_instance_type if hardware_for(spec.estimator) == "gpu" else self.instance_type
        )

    def start(self, spec: JobSpec) -> JobStatus:
        """``create_training_job``; returns at once (state ``pending``)."""
        if not spec.data_uri.startswith("s3://") or not spec.output_uri.startswith("s3://"):
            raise ValueError("SageMaker jobs read and write s3:// URIs only")
        name = _job_name(self.job_prefix, spec.model_name, self._clock())
        tags = {**self.tags, "skyscore:model": spec.model_name}
        self.client.create_training_job(
            TrainingJobName=name,
            AlgorithmSpecification={"TrainingImage": self.image_uri, "TrainingInputMode": "File"},
            RoleArn=self.role_arn,
            HyperParameters=self.hyperparameters(spec),
            InputDataConfig=[
                {
                    "ChannelName": "train",
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": spec.data_uri,
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                }
            ],
            OutputDataConfig={"S3OutputPath": spec.output_uri},
            ResourceConfig={
                "InstanceType": self.instance_type_for(spec),
                "InstanceCount": self.instance_count,
                "VolumeSizeInGB": self.volume_size_gb,
            },
            StoppingCondition={"MaxRuntimeInSeconds": self.max_runtime_seconds},
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
        )
        return JobStatus(name, spec.model_name, "pending", spec.output_uri)

    def describe(self, job_id: str) -> JobStatus:
        """The job's state from ``describe_training_job``."""
        try:
            job = self.client.describe_training_job(TrainingJobName=job_id)
        except Exception as error:
            if _error_code(error) in ("ValidationException", "ResourceNotFound"):
                raise NotFound(f"no SageMaker training job {job_id!r}") from None
            raise
        return self._status(job)

    def _status(self, job: dict[str, Any]) -> JobStatus:
        state = _STATES.get(str(job.get("TrainingJobStatus")), "running")
        hyper = job.get("HyperParameters") or {}
        name = str(hyper.get("name") or "")
        message = str(job.get("FailureReason") or job.get("SecondaryStatus") or "")
        artifact = (job.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
        if state == "completed" and artifact:
            message = f"model artifact {artifact}"
        return JobStatus(
            job_id=str(job["TrainingJobName"]),
            model_name=name,
            state=state,
            output_uri=str(job.get("OutputDataConfig", {}).get("S3OutputPath", "")),
            message=message,
        )

    def list_jobs(self, model_name: str) -> list[JobStatus]:
        """This model's jobs, newest first (listed by name, confirmed by hyperparameter)."""
        return self._list(model_name, status=None)

    def active_jobs(self, model_name: str) -> list[JobStatus]:
        """Jobs still running for a model (asks SageMaker for ``InProgress`` and ``Stopping``)."""
        return [
            job
            for status in ("InProgress", "Stopping")
            for job in self._list(model_name, status=status)
            if not job.done
        ]

    def _list(self, model_name: str, *, status: str | None) -> list[JobStatus]:
        safe = re.sub(r"[^A-Za-z0-9]+", "-", model_name).strip("-") or "model"
        contains = f"{self.job_prefix}-{safe}"[:63]
        kwargs: dict[str, Any] = {
            "NameContains": contains,
            "SortBy": "CreationTime",
            "SortOrder": "Descending",
        }
        if status is not None:
            kwargs["StatusEquals"] = status
        out: list[JobStatus] = []
        paginator = self.client.get_paginator("list_training_jobs")
        for page in paginator.paginate(**kwargs):
            for summary in page.get("TrainingJobSummaries", ()):
                job_id = str(summary["TrainingJobName"])
                if not job_id.startswith(contains + "-"):
                    continue
                job = self.describe(job_id)
                if job.model_name == model_name:  # "fraud" must not match "fraud-2"'s jobs
                    out.append(job)
        return out

    # -- artifacts -------------------------------------------------------------------------

    @staticmethod
    def artifact_uri(status: JobStatus) -> str:
        """Where SageMaker puts a job's ``model.tar.gz``."""
        return f"{status.output_uri.rstrip('/')}/{status.job_id}/output/model.tar.gz"

    def materialize(self, status: JobStatus, store: BlobStore) -> None:
        """Unpack the job's ``model.tar.gz`` into its output prefix (``card.json`` last).

        Idempotent: nothing happens once ``card.json`` is there. Raises ``NotFound`` when the
        archive is missing and ``SkyscoreError`` when it lacks a member.
        """
        root = store.uri.rstrip("/") + "/"
        output = status.output_uri.rstrip("/") + "/"
        if not output.startswith(root):
            raise SkyscoreError(f"job output {status.output_uri} is outside the store {root}")
        prefix = output[len(root) :]
        if store.exists(prefix + "card.json"):
            return
        archive_key = self.artifact_uri(status)[len(root) :]
        members: dict[str, bytes] = {}
        with store.open_read(archive_key) as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name not in MODEL_ARTIFACT_MEMBERS or not member.isfile():
                    continue
                if member.size > MAX_ARTIFACT_MEMBER_BYTES:
                    raise SkyscoreError(f"{archive_key}: {name} is {member.size:,} bytes")
                handle = tar.extractfile(member)
                if handle is not None:
                    members[name] = handle.read()
        missing = [name for name in MODEL_ARTIFACT_MEMBERS if name not in members]
        if missing:
            raise SkyscoreError(f"{archive_key} has no {', '.join(missing)}")
        store.write_bytes(prefix + "model.onnx", members["model.onnx"])
        store.write_bytes(prefix + "card.json", members["card.json"])

    @staticmethod
    def job_for_artifact(key: str) -> str | None:
        """The job id in a ``.../<job>/output/model.tar.gz`` store key, else ``None``."""
        match = re.fullmatch(r".*/([A-Za-z0-9][A-Za-z0-9-]{0,62})/output/model\.tar\.gz", key)
        return None if match is None else match.group(1)


# --------------------------------------------------------------------------------------------
# Backend: how the AWS functions build the core
# --------------------------------------------------------------------------------------------

# Lambda refuses an invocation payload over 6 MB before any code runs. A body reaches the
# function base64-encoded (4/3 larger) or as JSON-escaped text: up to 6 bytes per byte for
# control characters (\u00XX). 960 KiB x 6 leaves ~100 KB for the rest of the event, so every
# body over the limit, whatever its bytes, gets our 413 problem, not the platform's.
MAX_BODY_BYTES = 960 << 10
"""Lambda refuses events over 6 MB before any code runs. A 3 MiB body stays under it however API
Gateway carries it: base64 (4 MiB) or JSON-escaped text where every other byte is a quote
(6 MiB at worst), so an oversized request gets our 413 problem instead of the platform's 413."""


class AwsBackend:
    """S3 data bucket, SQS work queue, SageMaker training, EMF metrics (CloudWatch reads them).

    Settings: ``SKYSCORE_BUCKET`` (required), ``SKYSCORE_PREFIX``, ``SKYSCORE_WORK_QUEUE_URL``;
    for retraining ``SKYSCORE_SAGEMAKER_ROLE_ARN``, ``SKYSCORE_TRAINING_IMAGE_URI``,
    ``SKYSCORE_TRAINING_CPU_INSTANCE_TYPE``, ``SKYSCORE_TRAINING_GPU_INSTANCE_TYPE`` and
    ``SKYSCORE_TRAINING_MAX_SECONDS``.
    """

    name = "aws"

    def __init__(self) -> None:
        from skyscore.runtime.settings import CloudDefaults

        # 900 s: Lambda's longest run, so a claim older than that belongs to a dead attempt
        self.defaults = CloudDefaults(MAX_BODY_BYTES, 900.0, "emf")

    def store(self, settings: Settings) -> S3BlobStore:
        """The data bucket."""
        return S3BlobStore(settings.require("SKYSCORE_BUCKET"), settings.prefix)

    def queue(self, settings: Settings) -> SQSQueue | None:
        """The fan-out queue, when configured."""
        url = settings.get("SKYSCORE_WORK_QUEUE_URL")
        return SQSQueue(url) if url else None

    def jobs(self, settings: Settings) -> SageMakerJobRunner:
        """SageMaker training jobs running the core's training image."""
        return SageMakerJobRunner(
            settings.require("SKYSCORE_SAGEMAKER_ROLE_ARN"),
            settings.require("SKYSCORE_TRAINING_IMAGE_URI"),
            instance_type=settings.get(
                "SKYSCORE_TRAINING_CPU_INSTANCE_TYPE", DEFAULT_INSTANCE_TYPE
            ),
            gpu_instance_type=settings.get(
                "SKYSCORE_TRAINING_GPU_INSTANCE_TYPE", DEFAULT_GPU_INSTANCE_TYPE
            ),
            max_runtime_seconds=settings.get_int("SKYSCORE_TRAINING_MAX_SECONDS", 4 * 3600),
        )

    def metrics(self, settings: Settings) -> Metrics:
        """EMF lines on stdout (namespace ``skyscore``), turned into metrics by CloudWatch."""
        from skyscore.monitoring.metrics import LogMetrics

        return LogMetrics(format=settings.defaults.metrics_format)


AWS = AwsBackend()
