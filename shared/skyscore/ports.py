"""Ports: the three things the core needs from a cloud, as abstract classes.

Each cloud (and the local embedded runtime) supplies one adapter per port. The abstract classes
hold the policy that every backend shares; a backend implements only the storage primitives.
Adapters import their SDKs lazily so that the inference path stays light.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Literal


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a blob store knows of one object."""

    key: str
    size: int
    etag: str


class BlobStore(abc.ABC):
    """Keys are ``/``-separated paths relative to the store's root (a directory or a bucket).

    Missing keys raise :class:`skyscore.errors.NotFound`; ``if_absent`` writes that would
    overwrite raise :class:`skyscore.errors.ConflictError`.
    """

    uri: str = ""

    @abc.abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The whole object (for small things: cards, aliases, manifests)."""

    @abc.abstractmethod
    def write_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """Write atomically: readers see the old object or the new one, never a torn one."""

    @abc.abstractmethod
    def open_read(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A streaming reader, for inputs of any size."""

    @abc.abstractmethod
    def open_range(
        self, key: str, start: int, end: int
    ) -> contextlib.AbstractContextManager[BinaryIO]:
        """Bytes ``[start, end)`` without reading the rest (a Parquet footer, a fan-out part);
        a range past the object's end reads short, or empty."""

    @abc.abstractmethod
    def open_write(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A streaming writer; the object appears under ``key`` only when the block exits cleanly."""

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Size and etag, or ``None`` when there is no such object."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; removing a missing one is not an error."""

    def exists(self, key: str) -> bool:
        """True when ``key`` names an object."""
        return self.stat(key) is not None


@dataclass(frozen=True, slots=True)
class Message:
    """One queue message as received: ``receipt`` acknowledges this delivery only."""

    id: str
    body: bytes
    receipt: str
    receive_count: int = 1
    attributes: dict[str, str] = field(default_factory=dict)


class QueuePort(abc.ABC):
    """At-least-once queue: receive, then ack; unacked messages come back after a timeout.

    The base class holds the dead-letter policy: a message received more than
    ``max_receives`` times is moved to the dead-letter queue instead of being returned.
    """

    def __init__(self, *, max_receives: int = 5, dead_letter: QueuePort | None = None) -> None:
        self.max_receives = max_receives
        self.dead_letter = dead_letter

    @abc.abstractmethod
    def send(self, body: bytes, attributes: dict[str, str] | None = None) -> str:
        """Enqueue; returns the message id."""

    @abc.abstractmethod
    def _receive(self, max_messages: int, visibility_timeout: float) -> list[Message]:
        """Backend primitive: take up to ``max_messages`` visible messages, hiding them."""

    @abc.abstractmethod
    def ack(self, message: Message) -> None:
        """Delete a received message: it was handled."""

    @abc.abstractmethod
    def release(self, message: Message) -> None:
        """Make a received message visible again now: it failed and may be retried."""

    def receive(self, max_messages: int = 10, visibility_timeout: float = 30.0) -> list[Message]:
        """Visible messages; poison ones (too many receives) go to the dead-letter queue."""
        out: list[Message] = []
        for message in self._receive(max_messages, visibility_timeout):
            if message.receive_count > self.max_receives and self.dead_letter is not None:
                self.dead_letter.send(message.body, dict(message.attributes))
                self.ack(message)
                continue
            out.append(message)
        return out


JobState = Literal["pending", "running", "completed", "failed", "stopped"]


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A training job for the core's training entrypoint, the same on every backend."""

    model_name: str
    data_uri: str
    output_uri: str
    target: str
    estimator: str = "hgb"
    id_column: str | None = None
    instance_type: str | None = None
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JobStatus:
    """Where a job stands."""

    job_id: str
    model_name: str
    state: JobState
    output_uri: str
    message: str = ""

    @property
    def done(self) -> bool:
        """Whether the job reached a final state."""
        return self.state in ("completed", "failed", "stopped")


class JobRunner(abc.ABC):
    """Starts managed training jobs (a subprocess locally; SageMaker, Azure ML, Vertex AI) and
    delivers what a finished one produced."""

    @abc.abstractmethod
    def start(self, spec: JobSpec) -> JobStatus:
        """Launch the job and return at once."""

    @abc.abstractmethod
    def describe(self, job_id: str) -> JobStatus:
        """The job's current state."""

    @abc.abstractmethod
    def list_jobs(self, model_name: str) -> list[JobStatus]:
        """All jobs known for a model, newest first."""

    @abc.abstractmethod
    def materialize(self, status: JobStatus, store: BlobStore) -> None:
        """Turn a completed job's output into ``model.onnx`` and ``card.json`` directly under
        ``status.output_uri`` in ``store``: the files the registry registers.

        Called once a job is ``completed``, before its candidate is judged. A runner whose jobs
        write those files themselves does nothing; one whose service packs them (SageMaker's
        ``model.tar.gz``) unpacks them. Idempotent; raises :class:`skyscore.errors.NotFound`
        or another :class:`skyscore.errors.SkyscoreError` when the output is unusable.
        """

    def active_jobs(self, model_name: str) -> list[JobStatus]:
        """Jobs for a model that have not finished."""
        return [job for job in self.list_jobs(model_name) if not job.done]
