"""The card is checksummed and checked against its ONNX graph: a card that lies is refused with
a reason, never served (reversed classes swapped labels silently; a removed feature gave a
traceback while the server reported ready; one class gave a numpy broadcast error)."""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec
import pytest

from skyscore.adapters.local import LocalBlobStore
from skyscore.errors import IntegrityError
from skyscore.model.card import ModelCard, card_from_json, card_to_json
from skyscore.model.predictor import Predictor
from skyscore.model.registry import ModelRegistry
from skyscore.serving.dataplane import DataPlane, RegistryModelProvider, Request
from skyscore.training.train import TrainResult
from tiny_model import tiny_model

JSON = {"content-type": "application/json"}


def reversed_classes(card: ModelCard) -> ModelCard:
    return msgspec.structs.replace(card, classes=list(reversed(card.classes)))


def without_feature(card: ModelCard, index: int = 0) -> ModelCard:
    return msgspec.structs.replace(
        card, features=[f for i, f in enumerate(card.features) if i != index]
    )


def single_class(card: ModelCard) -> ModelCard:
    return msgspec.structs.replace(card, classes=card.classes[:1])


def renamed_input(card: ModelCard) -> ModelCard:
    return msgspec.structs.replace(card, onnx=msgspec.structs.replace(card.onnx, numeric_input="x"))


def wrong_output(card: ModelCard) -> ModelCard:
    onnx = msgspec.structs.replace(card.onnx, probabilities_output="label")
    return msgspec.structs.replace(card, onnx=onnx)


def extra_class(card: ModelCard) -> ModelCard:
    return msgspec.structs.replace(card, classes=[*card.classes, "maybe"])


def duplicate_class(card: ModelCard) -> ModelCard:
    return msgspec.structs.replace(card, classes=[card.classes[0], card.classes[0]])


BROKEN = {
    "single-class": (single_class, "at least two"),
    "extra-class": (extra_class, "3 classes"),
    "duplicate-class": (duplicate_class, "twice"),
    "removed-feature": (without_feature, "columns"),
    "renamed-input": (renamed_input, "inputs"),
    "wrong-output": (wrong_output, "output"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_card_that_does_not_match_its_graph_is_refused(case: str) -> None:
    edit, reason = BROKEN[case]
    card, data = tiny_model()
    Predictor(card, data)  # the card as built matches
    with pytest.raises(IntegrityError, match=r"does not match model\.onnx") as caught:
        Predictor(edit(card), data)
    assert reason in caught.value.detail


def test_reversed_classes_are_caught_by_the_graphs_own_labels(demo_model: TrainResult) -> None:
    """sklearn-onnx graphs carry a label output: the class order must give the same label."""
    Predictor(demo_model.card, demo_model.onnx_bytes)
    with pytest.raises(IntegrityError, match="class order"):
        Predictor(reversed_classes(demo_model.card), demo_model.onnx_bytes)


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "home")


@pytest.fixture
def registry(store: LocalBlobStore) -> ModelRegistry:
    return ModelRegistry(store, refresh_seconds=0)


def test_register_refuses_a_card_that_does_not_match(registry: ModelRegistry) -> None:
    card, data = tiny_model()
    with pytest.raises(IntegrityError, match=r"does not match model\.onnx"):
        registry.register(single_class(card), data)
    assert registry.list_models() == []


def test_the_card_is_covered_by_a_checksum(registry: ModelRegistry, store: LocalBlobStore) -> None:
    card, data = tiny_model()
    version = registry.register(card, data).version
    assert store.exists(f"models/tiny/{version}/card.sha256")
    registry.load("tiny", version)
    # the same card re-encoded with its classes reversed: valid JSON, a valid card, the
    # artifact's checksum still right; only the card's own checksum tells
    stored = card_from_json(store.read_bytes(f"models/tiny/{version}/card.json"))
    store.write_bytes(f"models/tiny/{version}/card.json", card_to_json(reversed_classes(stored)))
    with pytest.raises(IntegrityError, match=r"card\.json has sha256"):
        registry.load("tiny", version)
    with pytest.raises(IntegrityError):
        registry.card("tiny", version)


def test_a_card_without_a_checksum_is_refused_until_sealed(
    registry: ModelRegistry, store: LocalBlobStore
) -> None:
    """A version registered before cards had checksums: refused with the way out, and
    ``seal_card`` (which checks the card against its graph first) brings it back."""
    card, data = tiny_model()
    version = registry.register(card, data).version
    store.delete(f"models/tiny/{version}/card.sha256")
    with pytest.raises(IntegrityError, match="no checksum") as caught:
        registry.load("tiny", version)
    assert "seal_card" in caught.value.detail
    registry.seal_card("tiny", version)
    registry.load("tiny", version)
    registry.seal_card("tiny", version)  # sealing again changes nothing


def test_seal_card_refuses_a_card_that_does_not_match(
    registry: ModelRegistry, store: LocalBlobStore
) -> None:
    card, data = tiny_model()
    version = registry.register(card, data).version
    key = f"models/tiny/{version}/card.json"
    store.write_bytes(key, card_to_json(single_class(card_from_json(store.read_bytes(key)))))
    store.delete(f"models/tiny/{version}/card.sha256")
    with pytest.raises(IntegrityError, match=r"does not match model\.onnx"):
        registry.seal_card("tiny", version)
    assert not store.exists(f"models/tiny/{version}/card.sha256")


def test_the_server_keeps_serving_the_previous_version(
    registry: ModelRegistry, store: LocalBlobStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The alias moves to a version whose card is then tampered with: the running server
    refuses it, says why in its log, and goes on serving the version it has."""
    card, data = tiny_model()
    first = registry.register(card, data).version
    card2, data2 = tiny_model(1.0)
    second = registry.register(card2, data2).version
    registry.promote("tiny", first)
    plane = DataPlane(RegistryModelProvider(registry))
    body = msgspec.json.encode({"instances": [{"x1": 1, "x2": 0, "color": "red"}]})

    def predict() -> tuple[int, str | None]:
        response = plane.handle(Request("POST", "/v1/models/tiny/predict", JSON, body))
        return response.status, response.json().get("version")

    assert predict() == (200, first)
    registry.promote("tiny", second)
    key = f"models/tiny/{second}/card.json"
    store.write_bytes(key, card_to_json(reversed_classes(card_from_json(store.read_bytes(key)))))
    with caplog.at_level(logging.ERROR, logger="skyscore.model.registry"):
        assert predict() == (200, first)
        assert predict() == (200, first)
    refusals = [r for r in caplog.records if "card.json has sha256" in r.getMessage()]
    assert len(refusals) == 1  # said once, not on every refresh
    assert plane.handle(Request("GET", "/v2/health/ready")).status == 200
