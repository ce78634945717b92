"""Claims: "this piece of work is mine" markers in a blob store, so duplicate deliveries of one
event (S3, SQS, Event Grid and Pub/Sub all deliver at least once) do the work once.

A claim is a small JSON object written with ``if_absent``, which every blob store makes atomic;
a stale one is taken over with a conditional write on the version that was read (S3 ``If-Match``,
an Azure ETag, a GCS generation), so two takers cannot both win.
Its ``owner`` is the delivery's stable id (a Lambda request id survives async retries, an SQS
message id survives redeliveries), so the retry of a crashed attempt takes its own claim back,
while a duplicate delivery with another id sees the claim and stands aside. A claim older than
its lease belongs to an attempt that died without a retry; anyone may take it over.

One delivery id can also arrive twice *at once*: SQS and Pub/Sub hand a copy of a message to a
second consumer while the first still works on it. Each attempt therefore writes its own
``attempt`` id and keeps its claim fresh with :func:`heartbeat`; a copy with the same owner
takes the claim only once the heartbeat stopped (the attempt crashed), and is told ``busy``
otherwise, so that it is retried later rather than acknowledged while the work may still fail.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import msgspec

from skyscore.errors import ConflictError, NotFound
from skyscore.ports import BlobStore

DEFAULT_LEASE_SECONDS = 900.0  # AWS Lambda's longest run
HEARTBEAT_SECONDS = 10.0  # how often a working attempt refreshes its claim
STALLS_AFTER = 3  # missed heartbeats after which an attempt with our owner id is taken as dead
Outcome = Literal["acquired", "held", "busy", "finished"]


class ClaimRecord(msgspec.Struct, kw_only=True):
    """What a claim object holds."""

    owner: str
    at: float
    state: str = "working"
    attempt: str = ""


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of :func:`acquire`, with the record found (or written)."""

    outcome: Outcome
    record: ClaimRecord
    token: str | None = None  # the version of our claim object, when acquired

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
    heartbeat_seconds: float = HEARTBEAT_SECONDS,
) -> Claim:
    """Take the claim at ``key`` for ``owner``.

    ``acquired``: new; left by a crashed attempt of ours (no heartbeat for ``STALLS_AFTER``
    intervals); or stale (older than the lease). ``busy``: a live attempt with our owner id
    (a concurrent copy of this delivery). ``held``: another owner is working on it.
    ``finished``: someone marked it done with :func:`settle`.
    """
    now = clock()
    mine = ClaimRecord(owner=owner, at=now, attempt=uuid.uuid4().hex)
    try:
        token = store.write_bytes(key, msgspec.json.encode(mine), if_absent=True)
        return Claim("acquired", mine, token)
    except ConflictError:
        pass
    try:
        data, token = store.read_versioned(key)
    except NotFound:  # released between our write and read: try once more
        return acquire(
            store,
            key,
            owner,
            lease_seconds=lease_seconds,
            clock=clock,
            heartbeat_seconds=heartbeat_seconds,
        )
    try:
        found = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        found = ClaimRecord(owner="", at=0.0)  # unreadable: treat as stale
    if found.state != "working":
        return Claim("finished", found)
    ours = found.owner == owner
    if ours and now - found.at <= heartbeat_seconds * STALLS_AFTER:
        return Claim("busy", found)
    if ours or now - found.at > lease_seconds:
        # Take the claim over only if it is still the object we read: of two takers, exactly
        # one wins the conditional write; the other sees it held (or busy, if it is ours).
        try:
            token = store.write_bytes(key, msgspec.json.encode(mine), if_version=token)
        except ConflictError:
            return Claim("busy" if ours else "held", found)
        return Claim("acquired", mine, token)
    return Claim("held", found)


@contextlib.contextmanager
def heartbeat(
    store: BlobStore,
    key: str,
    claim: Claim,
    *,
    interval: float = HEARTBEAT_SECONDS,
    clock: Callable[[], float] = time.time,
) -> Iterator[None]:
    """Keep an acquired claim fresh while the work runs: every ``interval`` its time is
    rewritten on the version we wrote last. A lost conditional write means another attempt
    took the claim over; the beat stops (the work's own conditional writes settle the rest)."""
    if claim.token is None:
        raise ValueError("only an acquired claim has a heartbeat")
    stop = threading.Event()
    state = {"token": claim.token}

    def beat() -> None:
        while not stop.wait(interval):
            record = msgspec.structs.replace(claim.record, at=clock())
            try:
                state["token"] = store.write_bytes(
                    key, msgspec.json.encode(record), if_version=state["token"]
                )
            except ConflictError:
                return
            except Exception:  # a storage blip: the next interval beats again
                continue

    thread = threading.Thread(target=beat, name=f"claim-heartbeat {key}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def settle(store: BlobStore, key: str, owner: str, state: str = "done") -> None:
    """Mark claimed work as finished (any state but ``working``): later duplicates skip it."""
    store.write_bytes(
        key, msgspec.json.encode(ClaimRecord(owner=owner, at=time.time(), state=state))
    )


def release(store: BlobStore, key: str) -> None:
    """Give a claim up (the work failed and may be retried by anyone at once)."""
    store.delete(key)
