"""Model registry: versions, aliases, decision log, integrity and hot reload of promotions."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np
import pytest

from skyscore.adapters.local import LocalBlobStore
from skyscore.errors import BadRequest, ConflictError, IntegrityError, ModelNotFound
from skyscore.model.card import ModelCard, card_from_json, card_to_json
from skyscore.model.registry import ModelRegistry, default_refresh_seconds, is_version
from tiny_model import tiny_model

Model = tuple[ModelCard, bytes]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "registry")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def registry(store: LocalBlobStore, clock: FakeClock) -> ModelRegistry:
    return ModelRegistry(store, refresh_seconds=5.0, clock=clock)


@pytest.fixture(scope="module")
def models() -> list[Model]:
    """Five distinct artifacts (different bias, so different bytes and outputs)."""
    return [tiny_model(float(i)) for i in range(5)]


def register_all(registry: ModelRegistry, models: list[Model], n: int) -> list[ModelCard]:
    return [registry.register(card, data) for card, data in models[:n]]


def p_yes(registry: ModelRegistry, ref: str = "production") -> float:
    """Probability of class 1 for a fixed row: identifies which artifact is being served."""
    predictor = registry.get_predictor("tiny", ref)
    numeric = np.array([[0.0, 0.0]], dtype=np.float32)
    categorical = np.array([["red"]], dtype=object)
    return float(predictor.predict_arrays(numeric, categorical)[0, 1])


def expected_p_yes(bias: float) -> float:
    return float(1.0 / (1.0 + np.exp(-bias)))


# -- registering -----------------------------------------------------------------------------------


def test_register_assigns_sequential_versions_and_stores_both_objects(
    registry: ModelRegistry, store: LocalBlobStore, models: list[Model]
) -> None:
    cards = register_all(registry, models, 3)
    assert [c.version for c in cards] == ["1", "2", "3"]
    assert all(c.name == "tiny" for c in cards)
    assert registry.list_versions("tiny") == ["1", "2", "3"]
    assert registry.list_models() == ["tiny"]
    for card, (_, data) in zip(cards, models, strict=False):
        assert store.read_bytes(f"models/tiny/{card.version}/model.onnx") == data
        stored = card_from_json(store.read_bytes(f"models/tiny/{card.version}/card.json"))
        assert stored == card
        loaded_card, loaded_bytes = registry.load("tiny", card.version)
        assert (loaded_card, loaded_bytes) == (card, data)


def test_register_under_another_name(registry: ModelRegistry, models: list[Model]) -> None:
    card, data = models[0]
    final = registry.register(card, data, name="fraud")
    assert (final.name, final.version) == ("fraud", "1")
    assert registry.list_models() == ["fraud"]
    assert registry.load("fraud", "1")[0].name == "fraud"


def test_versions_sort_numerically(registry: ModelRegistry, models: list[Model]) -> None:
    card, data = models[0]
    for _ in range(11):
        registry.register(card, data)
    assert registry.list_versions("tiny") == [str(i) for i in range(1, 12)]


def test_register_refuses_a_checksum_mismatch(
    registry: ModelRegistry, store: LocalBlobStore, models: list[Model]
) -> None:
    card, _ = models[0]
    _, other = models[1]
    with pytest.raises(IntegrityError, match="sha256"):
        registry.register(card, other)
    assert list(store.list()) == []


def test_a_half_registered_version_is_skipped_not_reused(
    registry: ModelRegistry, store: LocalBlobStore, models: list[Model]
) -> None:
    register_all(registry, models, 1)
    # A registrant that died after claiming version 2's artifact, before writing its card.
    store.write_bytes("models/tiny/2/model.onnx", b"partial")
    card = registry.register(*models[1])
    assert card.version == "3"
    assert registry.list_versions("tiny") == ["1", "3"]
    assert store.read_bytes("models/tiny/2/model.onnx") == b"partial"


def test_concurrent_registers_get_distinct_versions(
    registry: ModelRegistry, models: list[Model]
) -> None:
    jobs = [models[i % len(models)] for i in range(24)]
    barrier = threading.Barrier(8)

    def register(model: Model) -> ModelCard:
        barrier.wait(timeout=30)  # release eight registrants at once, three times over
        return registry.register(*model)

    with ThreadPoolExecutor(max_workers=8) as pool:
        cards = list(pool.map(register, jobs))
    versions = sorted(int(c.version) for c in cards)
    assert versions == list(range(1, 25))
    for card in cards:
        loaded, _ = registry.load("tiny", card.version)
        assert loaded == card


# -- aliases: promote and roll back ----------------------------------------------------------------


def test_promote_and_rollback_sequence(registry: ModelRegistry, models: list[Model]) -> None:
    register_all(registry, models, 3)
    assert registry.alias_target("tiny") is None
    for version in ("1", "2", "3"):
        registry.promote("tiny", version, reason=f"ship {version}")
    assert registry.alias_target("tiny", "production") == "3"
    assert registry.aliases("tiny") == {"production": "3"}

    assert registry.rollback("tiny", reason="bad latency") == "2"
    assert registry.alias_target("tiny") == "2"
    assert registry.rollback("tiny") == "1"
    with pytest.raises(ConflictError, match="no previous version to roll back to"):
        registry.rollback("tiny")
    assert registry.alias_target("tiny") == "1"

    # Promoting after a rollback starts a new history from the current target.
    registry.promote("tiny", "3")
    assert registry.rollback("tiny") == "1"


def test_alias_object_layout(
    registry: ModelRegistry, store: LocalBlobStore, models: list[Model]
) -> None:
    register_all(registry, models, 3)
    for version in ("1", "2", "3"):
        registry.promote("tiny", version)
    record = json.loads(store.read_bytes("models/tiny/aliases/production.json"))
    assert record["version"] == "3"
    assert record["history"] == ["1", "2"]
    assert record["updated_at"].endswith("Z")
    datetime.fromisoformat(record["updated_at"])


def test_aliases_are_independent(registry: ModelRegistry, models: list[Model]) -> None:
    register_all(registry, models, 2)
    registry.promote("tiny", "1", alias="production")
    registry.promote("tiny", "2", alias="staging")
    assert registry.aliases("tiny") == {"production": "1", "staging": "2"}
    assert registry.load("tiny", "staging")[0].version == "2"
    assert registry.load("tiny", "production")[0].version == "1"
    with pytest.raises(ConflictError):
        registry.rollback("tiny", alias="staging")


def test_promoting_the_current_target_is_a_no_op(
    registry: ModelRegistry, models: list[Model]
) -> None:
    register_all(registry, models, 2)
    registry.promote("tiny", "1")
    registry.promote("tiny", "1")
    with pytest.raises(ConflictError):
        registry.rollback("tiny")
    assert [e["action"] for e in registry.history("tiny")].count("promoted") == 1


def test_history_is_an_append_only_event_log(
    registry: ModelRegistry, store: LocalBlobStore, models: list[Model]
) -> None:
    register_all(registry, models, 2)
    registry.promote("tiny", "1", reason="first", details={"auc": 0.91})
    registry.promote("tiny", "2", reason="better", details={"auc": 0.93})
    registry.rollback("tiny", reason="drift")
    events = registry.history("tiny")
    assert [(e["action"], e["version"]) for e in events] == [
        ("registered", "1"),
        ("registered", "2"),
        ("promoted", "1"),
        ("promoted", "2"),
        ("rolled_back", "1"),
    ]
    assert events[0]["metrics"] == {"accuracy": 0.5}
    assert events[3]["previous"] == "1"
    assert events[3]["alias"] == "production"
    assert events[3]["reason"] == "better"
    assert events[3]["details"] == {"auc": 0.93}
    assert events[4]["previous"] == "2"
    assert events[4]["reason"] == "drift"
    keys = [info.key for info in store.list("models/tiny/history/")]
    assert len(keys) == 5
    assert keys[0].startswith("models/tiny/history/") and keys[0].endswith("-registered-1.json")
    assert keys[-1].endswith("-rolled_back-1.json")


def test_callers_can_record_their_own_decisions(
    registry: ModelRegistry, models: list[Model]
) -> None:
    register_all(registry, models, 1)
    event = registry.record(
        "tiny",
        "rejected",
        "1",
        reason="quality gate failed",
        details={"auc": np.float64(0.4), "counts": np.array([1, 2]), "ok": np.bool_(False)},
    )
    assert event["action"] == "rejected"
    last = registry.history("tiny")[-1]
    assert last["details"] == {"auc": 0.4, "counts": [1, 2], "ok": False}
    assert last["reason"] == "quality gate failed"
    assert datetime.fromisoformat(last["at"].replace("Z", "+00:00")).tzinfo is not None
    with pytest.raises(BadRequest, match="invalid action"):
        registry.record("tiny", "../../x", "1")
    with pytest.raises(BadRequest, match="invalid version"):
        registry.record("tiny", "rejected", "../1")


def test_history_keeps_order_when_the_wall_clock_stands_still(
    store: LocalBlobStore, models: list[Model]
) -> None:
    frozen = datetime(2025, 1, 1, tzinfo=UTC)
    registry = ModelRegistry(store, wall_clock=lambda: frozen)
    register_all(registry, models, 2)
    registry.promote("tiny", "1")
    registry.promote("tiny", "2")
    actions = [e["action"] for e in registry.history("tiny")]
    assert actions == ["registered", "registered", "promoted", "promoted"]
    # A second registry object (another process) at the same instant does not collide.
    other = ModelRegistry(store, wall_clock=lambda: frozen)
    other.rollback("tiny")
    assert len(registry.history("tiny")) == 5


# -- integrity -------------------------------------------------------------------------------------


def flip_byte(path: Path, offset: int = -10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_tampered_model_is_never_loaded(
    registry: ModelRegistry, store: LocalBlobStore, models: list[Model]
) -> None:
    register_all(registry, models, 2)
    registry.promote("tiny", "1")
    flip_byte(store.path("models/tiny/2/model.onnx"))
    with pytest.raises(IntegrityError, match="refusing to load"):
        registry.load("tiny", "2")
    with pytest.raises(IntegrityError):
        registry.get_predictor("tiny", "2")
    with pytest.raises(IntegrityError):
        registry.promote("tiny", "2")
    assert registry.alias_target("tiny") == "1"


def test_tampering_is_caught_on_every_load_not_only_the_first(
    registry: ModelRegistry, store: LocalBlobStore, models: list[Model]
) -> None:
    register_all(registry, models, 1)
    registry.load("tiny", "1")
    flip_byte(store.path("models/tiny/1/model.onnx"), offset=20)
    with pytest.raises(IntegrityError):
        registry.load("tiny", "1")


def test_rollback_refuses_a_tampered_previous_version(
    registry: ModelRegistry, store: LocalBlobStore, models: list[Model]
) -> None:
    register_all(registry, models, 2)
    registry.promote("tiny", "1")
    registry.promote("tiny", "2")
    flip_byte(store.path("models/tiny/1/model.onnx"))
    with pytest.raises(IntegrityError):
        registry.rollback("tiny")
    assert registry.alias_target("tiny") == "2"


def test_a_card_copied_to_another_version_is_refused(
    registry: ModelRegistry, store: LocalBlobStore, models: list[Model]
) -> None:
    register_all(registry, models, 2)
    store.write_bytes("models/tiny/2/card.json", store.read_bytes("models/tiny/1/card.json"))
    store.write_bytes("models/tiny/2/model.onnx", store.read_bytes("models/tiny/1/model.onnx"))
    with pytest.raises(IntegrityError, match="describes model 'tiny' version '1'"):
        registry.load("tiny", "2")


def test_a_corrupt_card_is_an_integrity_error(
    registry: ModelRegistry, store: LocalBlobStore, models: list[Model]
) -> None:
    register_all(registry, models, 1)
    store.write_bytes("models/tiny/1/card.json", b"{not json")
    with pytest.raises(IntegrityError, match=r"card\.json is invalid"):
        registry.load("tiny", "1")


def test_a_card_with_a_forged_checksum_fails_against_the_artifact(
    registry: ModelRegistry, store: LocalBlobStore, models: list[Model]
) -> None:
    register_all(registry, models, 1)
    card = card_from_json(store.read_bytes("models/tiny/1/card.json"))
    forged = msgspec.structs.replace(card, onnx=msgspec.structs.replace(card.onnx, sha256="f" * 64))
    store.write_bytes("models/tiny/1/card.json", card_to_json(forged))
    with pytest.raises(IntegrityError):
        registry.load("tiny", "1")


# -- not found and bad input -----------------------------------------------------------------------


def test_not_found_messages_name_what_is_missing(
    registry: ModelRegistry, models: list[Model]
) -> None:
    with pytest.raises(ModelNotFound, match="no model named 'ghost'"):
        registry.load("ghost", "1")
    with pytest.raises(ModelNotFound, match="no model named 'ghost'"):
        registry.get_predictor("ghost")
    with pytest.raises(ModelNotFound, match="no model named 'ghost'"):
        registry.history("ghost")
    register_all(registry, models, 2)
    with pytest.raises(ModelNotFound, match=r"no version '7' \(versions: 1, 2\)"):
        registry.load("tiny", "7")
    with pytest.raises(ModelNotFound, match=r"no alias 'production'.*promote a version first"):
        registry.load("tiny", "production")
    registry.promote("tiny", "1", alias="staging")
    with pytest.raises(ModelNotFound, match=r"no alias 'production' \(aliases: staging\)"):
        registry.get_predictor("tiny")
    with pytest.raises(ModelNotFound, match="no version '9'"):
        registry.promote("tiny", "9")
    with pytest.raises(ModelNotFound, match="nothing to roll back"):
        registry.rollback("tiny", alias="canary")
    with pytest.raises(ModelNotFound, match="neither a version"):
        registry.load("tiny", "01")
    assert registry.alias_target("tiny", "canary") is None
    assert registry.list_versions("ghost") == []
    assert registry.aliases("ghost") == {}


@pytest.mark.parametrize("name", ["", "../etc", "a/b", ".hidden", "x" * 256, "x" * 300])
def test_invalid_model_names_are_rejected(
    registry: ModelRegistry, models: list[Model], name: str
) -> None:
    card, data = models[0]
    with pytest.raises(BadRequest, match="invalid model name"):
        registry.register(card, data, name=name)
    with pytest.raises(BadRequest):
        registry.load(name, "1")


def test_the_longest_name_fits_one_file_name(registry: ModelRegistry, models: list[Model]) -> None:
    """255 characters is the most one directory entry holds: such a model registers and loads."""
    card, data = models[0]
    longest = "m" * 255
    registered = registry.register(card, data, name=longest)
    loaded_card, _ = registry.load(longest, registered.version)
    assert loaded_card.name == longest


def test_aliases_cannot_look_like_versions(registry: ModelRegistry, models: list[Model]) -> None:
    register_all(registry, models, 1)
    with pytest.raises(BadRequest, match="invalid alias"):
        registry.promote("tiny", "1", alias="2")
    with pytest.raises(BadRequest, match="invalid version"):
        registry.promote("tiny", "production")
    assert is_version("12")
    assert not is_version("production")
    assert not is_version("0")


# -- serving: cache and hot reload -----------------------------------------------------------------


def test_alias_hot_reload_follows_promotions_after_refresh_seconds(
    store: LocalBlobStore, clock: FakeClock, models: list[Model]
) -> None:
    serving = ModelRegistry(store, refresh_seconds=5.0, clock=clock)
    admin = ModelRegistry(store)  # another process: the CLI or a pipeline
    register_all(admin, models, 3)
    admin.promote("tiny", "1")
    assert serving.get_predictor("tiny").version == "1"
    assert p_yes(serving) == pytest.approx(expected_p_yes(0.0))

    admin.promote("tiny", "2")
    clock.advance(4.9)
    assert serving.get_predictor("tiny").version == "1"  # still within refresh_seconds
    clock.advance(0.1)
    assert serving.get_predictor("tiny").version == "2"
    assert p_yes(serving) == pytest.approx(expected_p_yes(1.0))

    admin.rollback("tiny")
    clock.advance(1.0)
    assert serving.get_predictor("tiny").version == "2"
    clock.advance(5.0)
    assert serving.get_predictor("tiny").version == "1"


def test_each_alias_refreshes_on_its_own_schedule(
    registry: ModelRegistry, clock: FakeClock, models: list[Model]
) -> None:
    register_all(registry, models, 3)
    registry.promote("tiny", "1")
    registry.promote("tiny", "1", alias="staging")
    assert registry.get_predictor("tiny", "production").version == "1"
    clock.advance(3.0)
    assert registry.get_predictor("tiny", "staging").version == "1"
    registry.promote("tiny", "2")
    registry.promote("tiny", "3", alias="staging")
    clock.advance(2.0)  # production checked 5 s ago, staging 2 s ago
    assert registry.get_predictor("tiny", "production").version == "2"
    assert registry.get_predictor("tiny", "staging").version == "1"
    clock.advance(3.0)
    assert registry.get_predictor("tiny", "staging").version == "3"


def test_zero_refresh_seconds_reads_the_alias_every_time(
    store: LocalBlobStore, models: list[Model]
) -> None:
    registry = ModelRegistry(store, refresh_seconds=0.0, clock=lambda: 0.0)
    register_all(registry, models, 2)
    registry.promote("tiny", "1")
    assert registry.get_predictor("tiny").version == "1"
    registry.promote("tiny", "2")
    assert registry.get_predictor("tiny").version == "2"


def test_version_refs_are_cached_forever(
    registry: ModelRegistry, clock: FakeClock, models: list[Model], monkeypatch: pytest.MonkeyPatch
) -> None:
    register_all(registry, models, 1)
    first = registry.get_predictor("tiny", "1")
    calls: list[str] = []
    original = registry.load

    def counting_load(name: str, ref: str = "production") -> tuple[ModelCard, bytes]:
        calls.append(ref)
        return original(name, ref)

    monkeypatch.setattr(registry, "load", counting_load)
    clock.advance(3600.0)
    assert registry.get_predictor("tiny", "1") is first
    assert calls == []
    registry.clear_cache()
    assert registry.get_predictor("tiny", "1") is not first
    assert calls == ["1"]


def test_concurrent_get_predictor_loads_once(
    registry: ModelRegistry, models: list[Model], monkeypatch: pytest.MonkeyPatch
) -> None:
    register_all(registry, models, 1)
    registry.promote("tiny", "1")
    calls: list[str] = []
    original: Callable[[str, str], tuple[ModelCard, bytes]] = registry.load

    def slow_load(name: str, ref: str = "production") -> tuple[ModelCard, bytes]:
        calls.append(ref)
        threading.Event().wait(0.05)
        return original(name, ref)

    monkeypatch.setattr(registry, "load", slow_load)
    with ThreadPoolExecutor(max_workers=16) as pool:
        predictors = list(pool.map(lambda _: registry.get_predictor("tiny"), range(64)))
    assert len({id(p) for p in predictors}) == 1
    assert calls == ["1"]


def test_refresh_seconds_comes_from_the_environment(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SKYSCORE_REFRESH_SECONDS", raising=False)
    assert default_refresh_seconds() == 5.0
    assert ModelRegistry(store).refresh_seconds == 5.0
    monkeypatch.setenv("SKYSCORE_REFRESH_SECONDS", "0.25")
    assert ModelRegistry(store).refresh_seconds == 0.25
    assert ModelRegistry(store, refresh_seconds=9).refresh_seconds == 9.0
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("SKYSCORE_REFRESH_SECONDS", bad)
        with pytest.raises(ValueError, match="SKYSCORE_REFRESH_SECONDS"):
            ModelRegistry(store)


class FlakyStore(LocalBlobStore):
    """A store whose reads fail while ``down`` is set, like a throttled bucket."""

    down = False

    def read_bytes(self, key: str) -> bytes:
        if self.down:
            raise OSError("storage unavailable")
        return super().read_bytes(key)

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        if self.down:
            raise OSError("storage unavailable")
        return super().read_versioned(key)


def test_a_storage_error_on_refresh_keeps_serving_the_cached_version(
    tmp_path: Path, clock: FakeClock, models: list[Model]
) -> None:
    store = FlakyStore(tmp_path / "flaky")
    registry = ModelRegistry(store, refresh_seconds=5.0, clock=clock)
    register_all(registry, models, 2)
    registry.promote("tiny", "1")
    assert registry.get_predictor("tiny").version == "1"
    registry.promote("tiny", "2")
    store.down = True
    clock.advance(10.0)
    assert registry.get_predictor("tiny").version == "1"
    with pytest.raises(OSError, match="storage unavailable"):
        registry.get_predictor("tiny", "staging")  # nothing cached to fall back on
    store.down = False
    assert registry.get_predictor("tiny").version == "1"  # retried after the interval only
    clock.advance(5.0)
    assert registry.get_predictor("tiny").version == "2"
