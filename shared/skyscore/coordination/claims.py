"""Claims: "this piece of work is mine" markers in a blob store, so duplicate deliveries of one
event (S3, SQS, Event Grid and Pub/Sub all deliver at least once) do the work once.

A claim is a small JSON object written with ``if_absent``, which every blob store makes atomic;
a stale one is taken over with a conditional write on the version that was read (S3 ``If-Match``,
an Azure ETag, a GCS generation), so two takers cannot both win.
Its ``owner`` is the delivery's stable id (a Lambda request id survives async retries, an SQS
message id survives redeliveries), so the retry of a crashed attempt takes its own claim back,
while a duplicate delivery with another id sees the claim and stands aside. A claim older than
its lease belongs to an attempt that died without a retry; anyone may take it over.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import msgspec

from skyscore.errors import ConflictError, NotFound
from skyscore.ports import BlobStore

DEFAULT_LEASE_SECONDS = 900.0  # AWS Lambda's longest run
Outcome = Literal["acquired", "held", "finished"]


class ClaimRecord(msgspec.Struct, kw_only=True):
    """What a claim object holds."""

    owner: str
    at: float
    state: str = "working"


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of :func:`acquire`, with the record found (or written)."""

    outcome: Outcome
    record: ClaimRecord

    @property
    def acquired(self) -> bool:
        """Whether the caller may do the work."""
        return self.outcome == "acquired"


_decoder = msgspec.json.Decoder(ClaimRecord)


def acquire(
    store: BlobStore,
    key: str,
    owner: str,
    *,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    clock: Callable[[], float] = time.time,
) -> Claim:
    """Take the claim at ``key`` for ``owner``.

    ``acquired``: new, ours already, or stale (older than the lease). ``held``: another owner
    is working on it. ``finished``: someone marked it done with :func:`settle`.
    """
    now = clock()
    mine = ClaimRecord(owner=owner, at=now)
    try:
        store.write_bytes(key, msgspec.json.encode(mine), if_absent=True)
        return Claim("acquired", mine)
    except ConflictError:
        pass
    try:
        data, token = store.read_versioned(key)
    except NotFound:  # released between our write and read: try once more
        return acquire(store, key, owner, lease_seconds=lease_seconds, clock=clock)
    try:
        found = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        found = ClaimRecord(owner="", at=0.0)  # unreadable: treat as stale
    if found.state != "working":
        return Claim("finished", found)
    if found.owner == owner:
        return Claim("acquired", found)
    if now - found.at > lease_seconds:
        # Take the stale claim over only if it is still the object we read: of two takers,
        # exactly one wins the conditional write; the other sees it held.
        try:
            store.write_bytes(key, msgspec.json.encode(mine), if_version=token)
        except ConflictError:
            return Claim("held", found)
        return Claim("acquired", mine)
    return Claim("held", found)


def settle(store: BlobStore, key: str, owner: str, state: str = "done") -> None:
    """Mark claimed work as finished (any state but ``working``): later duplicates skip it."""
    store.write_bytes(
        key, msgspec.json.encode(ClaimRecord(owner=owner, at=time.time(), state=state))
    )


def release(store: BlobStore, key: str) -> None:
    """Give a claim up (the work failed and may be retried by anyone at once)."""
    store.delete(key)
