"""The model card: everything needed to serve, validate, monitor and trust one model version.

A card travels with every ``model.onnx``. It is a typed ``msgspec.Struct`` tree, so decoding a
card *is* validating it (a wrong type or a missing field raises), with no pydantic import on the
inference path: the card is read on every cold start.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

import msgspec

from skyscore.errors import IntegrityError

CARD_SCHEMA_VERSION = 1

NonNegative = Annotated[float, msgspec.Meta(ge=0.0)]
Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Sha256 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


class NumericBaseline(msgspec.Struct, frozen=True, kw_only=True, tag="numeric"):
    """Training distribution of a numeric feature: histogram on fixed edges plus summary stats.

    ``edges`` has ``len(frequencies) - 1`` interior cut points; the outer bins are open-ended,
    so any value falls in exactly one bin (drift is computed on these bins).
    """

    edges: list[float]
    frequencies: list[Probability]
    missing_rate: Probability
    min: float
    max: float
    mean: float
    std: NonNegative


class CategoricalBaseline(msgspec.Struct, frozen=True, kw_only=True, tag="categorical"):
    """Training distribution of a categorical feature: frequency of each known category."""

    frequencies: dict[str, Probability]
    missing_rate: Probability


class Feature(msgspec.Struct, frozen=True, kw_only=True):
    """One model input column."""

    name: Name
    kind: Literal["numeric", "categorical"]
    # Known categories (categorical only); values outside them are accepted and one-hot to zeros.
    categories: list[str] = []
    baseline: NumericBaseline | CategoricalBaseline | None = None


class OnnxInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What the ONNX artifact is and how it was checked against scikit-learn."""

    sha256: Sha256
    size_bytes: int
    opset: int
    numeric_input: str | None
    categorical_input: str | None
    probabilities_output: str
    parity_max_abs_diff: NonNegative
    parity_rows: int


class TrainingInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Provenance: which data, how much of it, and how it was split."""

    data_uri: str
    data_sha256: Sha256
    rows: int
    train_rows: int
    holdout_rows: int
    seed: int
    estimator: str
    params: dict[str, str | int | float | bool | None] = {}
    # where the estimator was fitted: "cuda" only for xgboost on a visible GPU (default for older cards)
    device: Literal["cpu", "cuda"] = "cpu"


class PredictionBaseline(msgspec.Struct, frozen=True, kw_only=True):
    """Held-out prediction distribution: share of each predicted class (for prediction drift)."""

    class_frequencies: dict[str, Probability]


class ModelCard(msgspec.Struct, frozen=True, kw_only=True):
    """The contract of one model version."""

    schema_version: int = CARD_SCHEMA_VERSION
    name: Name
    version: str
    created_at: str
    target: str
    id_column: str | None = None
    features: list[Feature]
    classes: list[str | int]
    metrics: dict[str, float]
    prediction_baseline: PredictionBaseline | None = None
    training: TrainingInfo
    onnx: OnnxInfo
    description: str = ""

    @property
    def numeric_features(self) -> list[str]:
        """Numeric inputs, in the column order of the ONNX numeric tensor."""
        return [f.name for f in self.features if f.kind == "numeric"]

    @property
    def categorical_features(self) -> list[str]:
        """Categorical inputs, in the column order of the ONNX string tensor."""
        return [f.name for f in self.features if f.kind == "categorical"]

    @property
    def class_names(self) -> list[str]:
        """Classes as strings: the keys of the per-class probability map."""
        return [str(c) for c in self.classes]


_encoder = msgspec.json.Encoder(order="deterministic")
_decoder = msgspec.json.Decoder(ModelCard)


def card_to_json(card: ModelCard) -> bytes:
    """Stable, pretty-enough JSON for a card (deterministic key order, for diffs and checksums)."""
    return msgspec.json.format(_encoder.encode(card), indent=2)


def card_from_json(data: bytes | str) -> ModelCard:
    """Decode and validate a card; raises ``msgspec.ValidationError`` naming the bad field."""
    return _decoder.decode(data)


def card_json_schema() -> dict[str, object]:
    """JSON Schema of the card, for documentation and external validators."""
    return msgspec.json.schema(ModelCard)


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def verify_artifact(card: ModelCard, onnx_bytes: bytes, *, action: str = "load") -> None:
    """Refuse an ONNX file whose checksum is not the one its card promises (the one checksum
    check: loading, registering and the gate all call it)."""
    actual = sha256_hex(onnx_bytes)
    if actual != card.onnx.sha256:
        raise IntegrityError(
            f"model {card.name!r} version {card.version!r}: model.onnx has sha256 {actual}, "
            f"its card says {card.onnx.sha256}; refusing to {action} it",
            extra={"expected_sha256": card.onnx.sha256, "actual_sha256": actual},
        )


class CardMismatch(IntegrityError):
    """A card that does not describe its ONNX graph (inputs, widths, classes): never served."""

    slug = "card-mismatch"
    title = "Model card does not match its ONNX graph"


def verify_card(name: str, version: str, card_bytes: bytes, expected_sha256: str | None) -> None:
    """Refuse a ``card.json`` whose sha256 is not the one recorded beside it at registration
    (or that has none recorded): the card says which column is which and which class is which,
    so an edited card is as dangerous as an edited artifact."""
    if expected_sha256 is None:
        raise IntegrityError(
            f"model {name!r} version {version!r}: card.json has no checksum (card.sha256), so "
            "it cannot be trusted (a version registered before cards had one): register it "
            "again, or check the card and run ModelRegistry.seal_card(name, version)"
        )
    actual = sha256_hex(card_bytes)
    if actual != expected_sha256:
        raise IntegrityError(
            f"model {name!r} version {version!r}: card.json has sha256 {actual}, "
            f"{expected_sha256} was recorded when it was registered; refusing to load it",
            extra={"expected_sha256": expected_sha256, "actual_sha256": actual},
        )
