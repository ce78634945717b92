"""Ports: what the core needs from a cloud, as abstract classes.

Each cloud (and the local embedded runtime) supplies one adapter per port (:mod:`skyscore.adapters`).
The abstract classes hold the policy every backend shares; a backend implements only the storage,
queue or job primitives. Adapters import their SDKs lazily so that the inference path stays light.
"""

from skyscore.ports.blob import BlobStore, ObjectInfo
from skyscore.ports.jobs import JobRunner, JobSpec, JobState, JobStatus
from skyscore.ports.queue import Message, QueuePort

__all__ = [
    "BlobStore",
    "JobRunner",
    "JobSpec",
    "JobState",
    "JobStatus",
    "Message",
    "ObjectInfo",
    "QueuePort",
]
