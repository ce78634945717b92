"""The blob store contract: what the core relies on, the same on every backend."""

from __future__ import annotations

import threading

import pytest

from skyscore.coordination import claims
from skyscore.errors import ConflictError, NotFound
from skyscore.ports import BlobStore


def test_create_only_writes(blob_store: BlobStore) -> None:
    first = blob_store.write_bytes("a/created.json", b"one", if_absent=True)
    with pytest.raises(ConflictError):
        blob_store.write_bytes("a/created.json", b"two", if_absent=True)
    data, version = blob_store.read_versioned("a/created.json")
    assert data == b"one" and blob_store.same_version(version, first)


def test_compare_and_swap(blob_store: BlobStore) -> None:
    blob_store.write_bytes("cas.json", b"v1")
    data, token = blob_store.read_versioned("cas.json")
    assert data == b"v1"
    newer = blob_store.write_bytes("cas.json", b"v2", if_version=token)
    assert not blob_store.same_version(newer, token)
    info = blob_store.stat("cas.json")
    assert info is not None and blob_store.same_version(info.version, newer)
    with pytest.raises(ConflictError):  # the token we read is stale now
        blob_store.write_bytes("cas.json", b"v3", if_version=token)
    assert blob_store.read_bytes("cas.json") == b"v2"
    with pytest.raises(ConflictError):  # no object: no version can match
        blob_store.write_bytes("missing.json", b"x", if_version=token)
    assert blob_store.stat("missing.json") is None


def test_two_writers_on_one_version_exactly_one_wins(blob_store: BlobStore) -> None:
    blob_store.write_bytes("race.json", b"start")
    _, token = blob_store.read_versioned("race.json")
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def writer(name: str) -> None:
        barrier.wait()
        try:
            blob_store.write_bytes("race.json", name.encode(), if_version=token)
            outcomes.append(f"won:{name}")
        except ConflictError:
            outcomes.append("lost")

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(o.split(":")[0] for o in outcomes) == ["lost", "won"], outcomes
    winner = next(o for o in outcomes if o.startswith("won")).split(":")[1]
    assert blob_store.read_bytes("race.json") == winner.encode()


def test_stale_claim_taken_over_by_exactly_one(blob_store: BlobStore) -> None:
    """Two takers read the same stale claim; the conditional write lets exactly one win."""
    key = "work/claims/stale.json"
    claims.acquire(blob_store, key, "dead-attempt", clock=lambda: 0.0)
    barrier = threading.Barrier(2)
    original = blob_store.read_versioned

    def read_then_wait(k: str) -> tuple[bytes, str]:
        found = original(k)
        if k == key:
            barrier.wait(timeout=10)  # both have read the stale claim before either writes
        return found

    blob_store.read_versioned = read_then_wait  # type: ignore[method-assign]
    outcomes: dict[str, str] = {}

    def taker(owner: str) -> None:
        outcomes[owner] = claims.acquire(blob_store, key, owner, lease_seconds=60).outcome

    threads = [threading.Thread(target=taker, args=(o,)) for o in ("taker-1", "taker-2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    del blob_store.read_versioned
    assert sorted(outcomes.values()) == ["acquired", "held"], outcomes


def test_reads_ranges_and_missing(blob_store: BlobStore) -> None:
    blob_store.write_bytes("r/data.bin", b"0123456789")
    with blob_store.open_read("r/data.bin") as handle:
        assert handle.read() == b"0123456789"
    with blob_store.open_range("r/data.bin", 2, 5) as handle:
        assert handle.read() == b"234"
    with blob_store.open_range("r/data.bin", 8, 20) as handle:
        assert handle.read() == b"89"
    with blob_store.open_range("r/data.bin", 12, 20) as handle:
        assert handle.read() == b""
    with pytest.raises(NotFound):
        blob_store.read_bytes("r/none.bin")
    with pytest.raises(NotFound), blob_store.open_read("r/none.bin") as handle:
        handle.read()
    assert blob_store.stat("r/none.bin") is None
    blob_store.delete("r/none.bin")  # deleting a missing object is fine
    blob_store.delete("r/data.bin")
    assert not blob_store.exists("r/data.bin")


def test_listing_in_key_order_by_prefix(blob_store: BlobStore) -> None:
    for key in ("p/b.txt", "p/a.txt", "p/sub/c.txt", "q/d.txt", "pp.txt"):
        blob_store.write_bytes(key, key.encode())
    assert [i.key for i in blob_store.list("p/")] == ["p/a.txt", "p/b.txt", "p/sub/c.txt"]
    sizes = {i.key: i.size for i in blob_store.list("p/")}
    assert sizes["p/a.txt"] == len(b"p/a.txt")


def test_streamed_writes_appear_only_when_complete(blob_store: BlobStore) -> None:
    block = bytes(range(256)) * 4096  # 1 MiB
    with blob_store.open_write("big/out.bin") as sink:
        for _ in range(6):  # above S3's 5 MiB part: a real multipart / staged-block upload
            sink.write(block)
        assert blob_store.stat("big/out.bin") is None
    info = blob_store.stat("big/out.bin")
    assert info is not None and info.size == 6 * len(block)
    with blob_store.open_range("big/out.bin", 5 * len(block), 5 * len(block) + 4) as handle:
        assert handle.read() == block[:4]
    with pytest.raises(RuntimeError), blob_store.open_write("big/broken.bin") as sink:
        sink.write(block)
        raise RuntimeError("the writer failed half-way")
    assert blob_store.stat("big/broken.bin") is None


def test_uris_and_event_names(blob_store: BlobStore) -> None:
    blob_store.write_bytes("incoming/x y.csv", b"a\n")
    uri = blob_store.uri_for("incoming/x y.csv")
    assert blob_store.key_for_uri(uri) == "incoming/x y.csv"
    assert blob_store.key_for_uri("zz://elsewhere/incoming/x.csv") is None
