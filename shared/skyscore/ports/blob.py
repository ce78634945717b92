"""The blob store port: versioned reads and compare-and-swap writes on each store's native primitive.

A version token is opaque to the core: an S3 ETag, an Azure Blob ETag, a GCS generation, a local
file's identity. The core only hands a token back to the store that gave it (``if_version``) or
asks the store whether two tokens name the same version (:meth:`BlobStore.same_version`).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a blob store knows of one object: its key, size and opaque version token."""

    key: str
    size: int
    version: str


class BlobStore(abc.ABC):
    """Keys are ``/``-separated paths relative to the store's root (a directory or a bucket).

    Missing keys raise :class:`skyscore.errors.NotFound`. A conditional write whose condition
    fails (``if_absent`` on an existing object, ``if_version`` on a changed or missing one)
    raises :class:`skyscore.errors.ConflictError` and changes nothing: S3 ``If-None-Match``/
    ``If-Match``, Azure ``MatchConditions`` on the ETag, GCS ``if_generation_match``.
    """

    uri: str = ""

    @abc.abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes, str]:
        """The whole object and the version token of exactly those bytes."""

    def read_bytes(self, key: str) -> bytes:
        """The whole object (for small things: cards, aliases, manifests)."""
        return self.read_versioned(key)[0]

    @abc.abstractmethod
    def write_bytes(
        self, key: str, data: bytes, *, if_absent: bool = False, if_version: str | None = None
    ) -> str:
        """Write atomically (readers see the old object or the new one) and return the new
        version token. ``if_absent``: only if there is no object; ``if_version``: only if the
        object is still at that version."""

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
        """A streaming (multipart, staged-block, resumable) writer; the object appears under
        ``key`` only when the block exits cleanly, never half-written."""

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Size and version, or ``None`` when there is no such object."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; removing a missing one is not an error."""

    @abc.abstractmethod
    def uri_for(self, key: str) -> str:
        """The object's URI in the store's own scheme (``s3://``, ``https://``, ``gs://``, ``file://``)."""

    @abc.abstractmethod
    def key_for_uri(self, uri: str) -> str | None:
        """The key a URI names in this store, or ``None`` when it names another store."""

    @abc.abstractmethod
    def key_for_object(self, container: str, name: str) -> str | None:
        """The key of an object an event names by its bucket/container and full name, or
        ``None`` when it lies outside this store (another bucket, outside the prefix)."""

    def same_version(self, a: str, b: str) -> bool:
        """Whether two tokens (one from an event, one from :meth:`stat`) name one version.

        Backends whose events spell tokens differently from their API (quoted ETags) override it.
        """
        return a == b

    def exists(self, key: str) -> bool:
        """True when ``key`` names an object."""
        return self.stat(key) is not None
