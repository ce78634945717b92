"""Claims on the local store: new, held, busy (a live copy of our own delivery), taken over
after a crash (no heartbeat) or after the lease, finished, released. The same rules on every
store's conditional writes are in tests/contracts/."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from skyscore.adapters.local import LocalBlobStore
from skyscore.coordination import claims
from skyscore.errors import ConflictError


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "store")


def test_claims(store: LocalBlobStore) -> None:
    now = [1000.0]
    first = claims.acquire(store, "c.json", "a", lease_seconds=60, clock=lambda: now[0])
    assert first.acquired
    assert (
        claims.acquire(store, "c.json", "b", lease_seconds=60, clock=lambda: now[0]).outcome
        == "held"
    )
    # a's own copy while a's attempt beats: busy; once the beats stopped (a crashed): a's
    copy = claims.acquire(store, "c.json", "a", lease_seconds=60, clock=lambda: now[0])
    assert copy.outcome == "busy"
    now[0] += claims.HEARTBEAT_SECONDS * claims.STALLS_AFTER + 1
    retry = claims.acquire(store, "c.json", "a", lease_seconds=60, clock=lambda: now[0])
    assert retry.acquired and retry.record.attempt != first.record.attempt
    now[0] += 61
    assert claims.acquire(store, "c.json", "b", lease_seconds=60, clock=lambda: now[0]).acquired
    claims.settle(store, "c.json", "b", "done")
    assert claims.acquire(store, "c.json", "c", clock=lambda: now[0]).outcome == "finished"
    claims.release(store, "c.json")
    assert claims.acquire(store, "c.json", "c").acquired


def test_a_heartbeat_keeps_a_live_attempt_from_its_own_copies(store: LocalBlobStore) -> None:
    """The claim's time moves while the work runs, so a copy of the delivery stays busy past
    the stall window; after the beats stop, the next copy takes the claim over, and the old
    attempt's beat (had it gone on) could not overwrite it."""
    first = claims.acquire(store, "c.json", "a", heartbeat_seconds=0.05)
    with claims.heartbeat(store, "c.json", first, interval=0.05):
        time.sleep(0.4)  # more than STALLS_AFTER beats
        assert claims.acquire(store, "c.json", "a", heartbeat_seconds=0.05).outcome == "busy"
    time.sleep(0.05 * claims.STALLS_AFTER + 0.1)
    retry = claims.acquire(store, "c.json", "a", heartbeat_seconds=0.05)
    assert retry.acquired
    with pytest.raises(ConflictError):  # the dead attempt's version is gone
        store.write_bytes("c.json", b"{}", if_version=first.token)
    held = claims.acquire(store, "c.json", "b")
    assert held.outcome == "held" and held.token is None
    with pytest.raises(ValueError, match="acquired"), claims.heartbeat(store, "c.json", held):
        pass
