"""Adapters: one implementation of each port (:mod:`skyscore.ports`) per backend.

``local`` is the embedded default (a directory, subprocesses) and is imported here; cloud
adapters live in their own modules and import their SDKs lazily, so importing this package
never pulls in boto3, azure or google-cloud.
"""

from __future__ import annotations

from skyscore.adapters.local import (
    LocalBlobStore,
    LocalJobRunner,
    LocalQueue,
    path_from_uri,
    train_command,
)

__all__ = ["LocalBlobStore", "LocalJobRunner", "LocalQueue", "path_from_uri", "train_command"]
