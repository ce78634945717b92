"""A tiny, valid ONNX classifier plus a matching model card, built without scikit-learn.

Registry and adapter tests need real artifacts (the predictor loads them, checksums must match)
but not the seconds it takes to train; this graph builds in milliseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from skyscore.model.card import (
    CategoricalBaseline,
    Feature,
    ModelCard,
    NumericBaseline,
    OnnxInfo,
    TrainingInfo,
    sha256_hex,
)

NUMERIC_INPUT = "numeric"
CATEGORICAL_INPUT = "categorical"
PROBABILITIES = "probabilities"
COLORS = ("red", "green", "blue")
OPSET = 17


def tiny_onnx(bias: float = 0.0, *, categorical: bool = True) -> bytes:
    """Softmax of a linear layer over ``numeric`` [N,2] (+ ``categorical`` [N,1] strings).

    ``bias`` shifts class 1's logit: different biases give different bytes (and sha256) and
    different probabilities, so tests can tell model versions apart by their output.
    """
    nodes = []
    inputs = [helper.make_tensor_value_info(NUMERIC_INPUT, TensorProto.FLOAT, ["N", 2])]
    features = NUMERIC_INPUT
    width = 2
    if categorical:
        inputs.append(
            helper.make_tensor_value_info(CATEGORICAL_INPUT, TensorProto.STRING, ["N", 1])
        )
        nodes += [
            helper.make_node(
                "CategoryMapper",
                [CATEGORICAL_INPUT],
                ["color_code"],
                domain="ai.onnx.ml",
                cats_strings=list(COLORS),
                cats_int64s=list(range(len(COLORS))),
                default_int64=-1,
            ),
            helper.make_node("Cast", ["color_code"], ["color_float"], to=TensorProto.FLOAT),
            helper.make_node("Concat", [NUMERIC_INPUT, "color_float"], ["features"], axis=1),
        ]
        features = "features"
        width = 3
    weights = np.zeros((width, 2), dtype=np.float32)
    weights[0, 1] = 1.0
    weights[1, 1] = -1.0
    if categorical:
        weights[2, 1] = 0.5
    biases = np.array([0.0, bias], dtype=np.float32)
    nodes += [
        helper.make_node("MatMul", [features, "W"], ["logits_raw"]),
        helper.make_node("Add", ["logits_raw", "B"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [PROBABILITIES], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        inputs,
        [helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(biases, "B")],
    )
    opsets = [helper.make_opsetid("", OPSET)]
    if categorical:
        opsets.append(helper.make_opsetid("ai.onnx.ml", 3))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="skyscore-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def tiny_card(onnx_bytes: bytes, *, name: str = "tiny", categorical: bool = True) -> ModelCard:
    """A card whose checksum, inputs and output match :func:`tiny_onnx`'s bytes."""
    features = [
        Feature(
            name=column,
            kind="numeric",
            baseline=NumericBaseline(
                edges=[0.0],
                frequencies=[0.5, 0.5],
                missing_rate=0.0,
                min=-1.0,
                max=1.0,
                mean=0.0,
                std=0.5,
            ),
        )
        for column in ("x1", "x2")
    ]
    if categorical:
        features.append(
            Feature(
                name="color",
                kind="categorical",
                categories=list(COLORS),
                baseline=CategoricalBaseline(
                    frequencies={c: 1 / len(COLORS) for c in COLORS}, missing_rate=0.0
                ),
            )
        )
    return ModelCard(
        name=name,
        version="",
        created_at=datetime.now(UTC).isoformat(),
        target="label",
        features=features,
        classes=["no", "yes"],
        metrics={"accuracy": 0.5},
        training=TrainingInfo(
            data_uri="memory://tiny",
            data_sha256="0" * 64,
            rows=4,
            train_rows=3,
            holdout_rows=1,
            seed=0,
            estimator="tiny",
        ),
        onnx=OnnxInfo(
            sha256=sha256_hex(onnx_bytes),
            size_bytes=len(onnx_bytes),
            opset=OPSET,
            numeric_input=NUMERIC_INPUT,
            categorical_input=CATEGORICAL_INPUT if categorical else None,
            probabilities_output=PROBABILITIES,
            parity_max_abs_diff=0.0,
            parity_rows=0,
        ),
    )


def tiny_model(
    bias: float = 0.0, *, name: str = "tiny", categorical: bool = True
) -> tuple[ModelCard, bytes]:
    """A ready ``(card, onnx_bytes)`` pair; vary ``bias`` for distinct artifacts."""
    data = tiny_onnx(bias, categorical=categorical)
    return tiny_card(data, name=name, categorical=categorical), data
