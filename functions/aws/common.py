"""What every AWS handler shares: configuration from environment variables and the core objects
built from it once per Lambda container (and reset between tests).

| variable | meaning |
|---|---|
| ``SKYSCORE_BUCKET`` | the data bucket: ``models/``, ``incoming/``, ``predictions/``, ``training/`` ... |
| ``SKYSCORE_PREFIX`` | optional key prefix of the store inside the bucket |
| ``SKYSCORE_MODEL`` | the model for files directly under ``incoming/`` and for alarms without one |
| ``SKYSCORE_WORK_QUEUE_URL`` | the SQS queue for fan-out parts (and queue scoring) |
| ``SKYSCORE_FANOUT_BYTES`` / ``SKYSCORE_PART_BYTES`` | split uploads above this size into parts of that size |
| ``SKYSCORE_SAGEMAKER_ROLE_ARN`` / ``SKYSCORE_TRAINING_IMAGE_URI`` | the training job's role and image |
| ``SKYSCORE_TRAINING_INSTANCE_TYPE`` | default ``ml.g5.xlarge`` |
| ``SKYSCORE_RETRAIN_MODELS`` | comma-separated models the schedule considers (default: all) |
| ``SKYSCORE_RETRAIN_COOLDOWN_SECONDS`` / ``_DAILY_CAP`` / ``_MIN_ROWS`` | retraining policy |
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger, Metrics

if TYPE_CHECKING:
    from skyscore.adapters.aws import S3BlobStore, SageMakerJobRunner, SQSQueue
    from skyscore.batch.scorer import BatchScorer
    from skyscore.lifecycle.retrain import RetrainController
    from skyscore.model.registry import ModelRegistry
    from skyscore.monitoring.metrics import LogMetrics

SERVICE = "skyscore"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace=SERVICE, service=SERVICE)


def env(name: str, default: str | None = None) -> str:
    """A required setting (``default`` makes it optional)."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    if default is not None:
        return default
    raise RuntimeError(f"the function is not configured: set {name}")


def env_int(name: str, default: int) -> int:
    """An integer setting."""
    return int(env(name, str(default)))


@functools.cache
def store() -> S3BlobStore:
    """The data bucket as a blob store."""
    from skyscore.adapters.aws import S3BlobStore

    return S3BlobStore(env("SKYSCORE_BUCKET"), env("SKYSCORE_PREFIX", ""))


@functools.cache
def registry() -> ModelRegistry:
    """The model registry in the data bucket (alias targets re-read every few seconds)."""
    from skyscore.model.registry import ModelRegistry

    return ModelRegistry(store())


@functools.cache
def core_metrics() -> LogMetrics:
    """The core's metrics as EMF lines (namespace ``skyscore``), read by CloudWatch."""
    from skyscore.monitoring.metrics import LogMetrics

    return LogMetrics()


@functools.cache
def work_queue() -> SQSQueue | None:
    """The fan-out queue, when configured."""
    url = env("SKYSCORE_WORK_QUEUE_URL", "")
    if not url:
        return None
    from skyscore.adapters.aws import SQSQueue

    return SQSQueue(url)


@functools.cache
def scorer() -> BatchScorer:
    """Scores uploads, queue messages and fan-out parts."""
    from skyscore.batch.scorer import DEFAULT_FANOUT_BYTES, DEFAULT_PART_BYTES, BatchScorer

    queue = work_queue()
    return BatchScorer(
        store(),
        registry(),
        default_model=env("SKYSCORE_MODEL", ""),
        metrics=core_metrics(),
        enqueue=None if queue is None else queue.send,
        fanout_bytes=env_int("SKYSCORE_FANOUT_BYTES", DEFAULT_FANOUT_BYTES),
        part_bytes=env_int("SKYSCORE_PART_BYTES", DEFAULT_PART_BYTES),
    )


@functools.cache
def job_runner() -> SageMakerJobRunner:
    """SageMaker training jobs for the core's training image."""
    from skyscore.adapters.aws import DEFAULT_INSTANCE_TYPE, SageMakerJobRunner

    return SageMakerJobRunner(
        env("SKYSCORE_SAGEMAKER_ROLE_ARN"),
        env("SKYSCORE_TRAINING_IMAGE_URI"),
        instance_type=env("SKYSCORE_TRAINING_INSTANCE_TYPE", DEFAULT_INSTANCE_TYPE),
        max_runtime_seconds=env_int("SKYSCORE_TRAINING_MAX_SECONDS", 4 * 3600),
    )


@functools.cache
def controller() -> RetrainController:
    """The retraining loop over the data bucket, the registry and SageMaker."""
    from skyscore.lifecycle.retrain import RetrainController, RetrainPolicy

    defaults = RetrainPolicy()
    policy = RetrainPolicy(
        cooldown_seconds=float(
            env("SKYSCORE_RETRAIN_COOLDOWN_SECONDS", str(defaults.cooldown_seconds))
        ),
        daily_cap=env_int("SKYSCORE_RETRAIN_DAILY_CAP", defaults.daily_cap),
        min_new_rows=env_int("SKYSCORE_RETRAIN_MIN_ROWS", defaults.min_new_rows),
        rollback_window_seconds=float(
            env("SKYSCORE_ROLLBACK_WINDOW_SECONDS", str(defaults.rollback_window_seconds))
        ),
    )
    return RetrainController(
        store(), registry(), job_runner(), policy=policy, metrics=core_metrics()
    )


def retrain_models() -> list[str]:
    """The models the schedule considers (empty: every registered model)."""
    return [name.strip() for name in env("SKYSCORE_RETRAIN_MODELS", "").split(",") if name.strip()]


def reset() -> None:
    """Forget every cached object (tests switch buckets and endpoints between cases)."""
    for cached in (store, registry, core_metrics, work_queue, scorer, job_runner, controller):
        cached.cache_clear()
