"""The job runner port: managed training jobs (a subprocess locally; SageMaker, Azure ML, Vertex AI)."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from skyscore.ports.blob import BlobStore


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
