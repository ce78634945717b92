"""Races on every backend: what must not happen twice is a conditional write on the store's
native primitive, so of two processes doing it at once exactly one wins."""

from __future__ import annotations

import threading
from collections.abc import Callable

import msgspec
import pytest

from skyscore.errors import ConflictError
from skyscore.model.registry import AliasConflict, ModelRegistry
from skyscore.ports import BlobStore
from tiny_model import tiny_model


def _both_read_first(store: BlobStore, suffix: str) -> Callable[[], None]:
    """Make the next two reads of a key ending in ``suffix`` wait for each other, so both racers
    hold the same version before either writes; returns the undo."""
    barrier = threading.Barrier(2)
    original = store.read_versioned

    def read(key: str) -> tuple[bytes, str]:
        found = original(key)
        if key.endswith(suffix):
            barrier.wait(timeout=10)
        return found

    store.read_versioned = read  # type: ignore[method-assign]
    return lambda: delattr(store, "read_versioned")


def _race(*work: Callable[[], object]) -> list[BaseException | object]:
    results: list[BaseException | object] = [None] * len(work)

    def run(i: int) -> None:
        try:
            results[i] = work[i]()
        except BaseException as error:
            results[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.fixture
def registry(blob_store: BlobStore) -> ModelRegistry:
    registry = ModelRegistry(blob_store, refresh_seconds=0)
    for bias in (0.1, 0.2, 0.3):
        card, data = tiny_model(bias)
        registry.register(card, data, name="tiny")
    registry.promote("tiny", "1")
    return registry


def test_two_promoters_exactly_one_wins(registry: ModelRegistry, blob_store: BlobStore) -> None:
    undo = _both_read_first(blob_store, "/aliases/production.json")
    results = _race(lambda: registry.promote("tiny", "2"), lambda: registry.promote("tiny", "3"))
    undo()
    lost = [r for r in results if isinstance(r, AliasConflict)]
    won = [r for r in results if not isinstance(r, BaseException)]
    assert len(lost) == 1 and len(won) == 1, results
    target = registry.alias_target("tiny")
    assert target in ("2", "3")
    assert registry.alias_history("tiny") == ["1"]  # one move recorded, none lost or doubled
    promoted = [e for e in registry.history("tiny") if e["action"] == "promoted"]
    assert [e["version"] for e in promoted] == ["1", target]


def test_promote_and_rollback_race_leaves_a_consistent_alias(
    registry: ModelRegistry, blob_store: BlobStore
) -> None:
    registry.promote("tiny", "2")
    undo = _both_read_first(blob_store, "/aliases/production.json")
    results = _race(lambda: registry.promote("tiny", "3"), lambda: registry.rollback("tiny"))
    undo()
    assert sum(isinstance(r, AliasConflict) for r in results) == 1, results
    target, history = registry.alias_target("tiny"), registry.alias_history("tiny")
    assert (target, history) in (("3", ["1", "2"]), ("1", []))


def test_promotion_expecting_a_moved_alias_fails(registry: ModelRegistry) -> None:
    registry.promote("tiny", "2")
    with pytest.raises(AliasConflict, match="moved since the candidate was judged"):
        registry.promote("tiny", "3", expect="1")
    assert registry.alias_target("tiny") == "2"


def test_two_copies_taking_over_a_stalled_claim_exactly_one_wins(blob_store: BlobStore) -> None:
    """A crashed attempt's claim (no heartbeat): two copies of its delivery take it over at
    once; the conditional write on the version both read lets one through, the other is busy.
    The winner's heartbeat moves the claim on; the crashed attempt's version can no longer
    write."""
    from skyscore.coordination import claims

    key = "work/claims/contract.json"
    crashed_at = 1_000.0
    dead = claims.acquire(blob_store, key, "delivery-1", clock=lambda: crashed_at)
    undo = _both_read_first(blob_store, "contract.json")
    try:
        outcomes = _race(*(lambda: claims.acquire(blob_store, key, "delivery-1") for _ in range(2)))
    finally:
        undo()
    assert sorted(o.outcome for o in outcomes if isinstance(o, claims.Claim)) == [
        "acquired",
        "busy",
    ], outcomes
    [winner] = [o for o in outcomes if isinstance(o, claims.Claim) and o.acquired]
    with claims.heartbeat(blob_store, key, winner, interval=0.05):
        threading.Event().wait(0.3)
    beaten = msgspec.json.decode(blob_store.read_bytes(key), type=claims.ClaimRecord)
    assert beaten.attempt == winner.record.attempt and beaten.at > winner.record.at
    assert claims.acquire(blob_store, key, "delivery-1").outcome == "busy"
    assert dead.token is not None
    with pytest.raises(ConflictError):
        blob_store.write_bytes(key, b"{}", if_version=dead.token)
