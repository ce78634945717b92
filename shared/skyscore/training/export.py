"""scikit-learn Pipeline → ONNX, with the one workaround skl2onnx needs here.

Training-side only: imports scikit-learn, skl2onnx and onnx (and onnxmltools for XGBoost).
"""

from __future__ import annotations

import functools
from typing import Any

NUMERIC_INPUT = "numeric"
CATEGORICAL_INPUT = "categorical"
PROBABILITIES_OUTPUT = "probabilities"
TARGET_OPSET = 17  # <= 19: the AWS Lambda package runs onnxruntime 1.16 (glibc 2.26 wheels)
# skl2onnx's own choice for opset 17; said explicitly for XGBoost, whose onnxmltools converter
# would otherwise write TreeEnsembleClassifier from ai.onnx.ml 5, which onnxruntime 1.16 lacks.
TARGET_ML_OPSET = 3


@functools.cache
def patch_tree_ensemble_bools() -> bool:
    """Make skl2onnx write ints, not booleans, for ``nodes_missing_value_tracks_true``.

    skl2onnx 1.20 passes histogram gradient boosting's ``missing_go_to_left`` (a numpy bool)
    straight into an INTS attribute; protobuf 7 rejects it ("Expected an int, got a boolean").
    We coerce that one argument at its only entry point, ``tree_ensemble.add_node``. Returns
    whether a patch was applied (idempotent; a fixed skl2onnx gets the same, harmless wrapper).
    """
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.add_node
    if getattr(original, "_skyscore_patched", False):
        return False

    @functools.wraps(original)
    def add_node(*args: Any, **kwargs: Any) -> Any:
        if "nodes_missing_value_tracks_true" in kwargs:
            kwargs["nodes_missing_value_tracks_true"] = int(
                kwargs["nodes_missing_value_tracks_true"]
            )
        return original(*args, **kwargs)

    add_node._skyscore_patched = True  # type: ignore[attr-defined]
    tree_ensemble.add_node = add_node
    return True


def uses_xgboost(estimator: Any) -> bool:
    """Whether an estimator is an XGBoost model, told without importing XGBoost (slow to import,
    and only the ``xgboost`` estimator needs it)."""
    return any(cls.__module__.split(".")[0] == "xgboost" for cls in type(estimator).__mro__)


def pipeline_to_onnx(
    pipeline: Any,
    n_numeric: int,
    n_categorical: int,
    *,
    name: str = "skyscore",
) -> bytes:
    """Convert the whole fitted pipeline (preprocessing + classifier) to one ONNX graph.

    The graph has up to two inputs, ``numeric`` float32 [N, n_numeric] and ``categorical``
    string [N, n_categorical], and outputs ``label`` and ``probabilities`` (no ZipMap), which is
    what lets the serving side build two contiguous arrays instead of one tensor per column.
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    patch_tree_ensemble_bools()
    estimator = pipeline.steps[-1][1]
    target_opset: int | dict[str, int] = TARGET_OPSET
    if uses_xgboost(estimator):
        from skyscore.training.xgb import register_onnx_converter

        register_onnx_converter()
        target_opset = {"": TARGET_OPSET, "ai.onnx.ml": TARGET_ML_OPSET}
    initial_types: list[tuple[str, Any]] = []
    if n_numeric:
        initial_types.append((NUMERIC_INPUT, FloatTensorType([None, n_numeric])))
    if n_categorical:
        initial_types.append((CATEGORICAL_INPUT, StringTensorType([None, n_categorical])))
    model = convert_sklearn(
        pipeline,
        name=name,
        initial_types=initial_types,
        options={id(estimator): {"zipmap": False}},
        target_opset=target_opset,
    )
    data: bytes = model.SerializeToString()
    return data
