"""The GPU-capable estimator: XGBoost's histogram trees, on CUDA when a device is visible.

A managed retraining job for ``xgboost`` runs on GPU hardware (see
:mod:`skyscore.lifecycle.hardware`); this module is what makes that hardware worth paying for.
It chooses ``device="cuda"`` only after a real (tiny) training round on CUDA succeeds, because
XGBoost silently falls back to the CPU with a warning when asked for a GPU it cannot find, and a
card that said ``cuda`` for a CPU fit would mislead whoever reads the bill.

Training-side only: imports XGBoost (and, to export, onnxmltools and skl2onnx).
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from dataclasses import dataclass
from typing import Any, Literal, Self

import numpy as np
import xgboost
from xgboost import XGBClassifier

from skyscore.errors import ConfigError

Device = Literal["cpu", "cuda"]
DEVICE_CHOICES = ("auto", "cpu", "cuda")
HIDDEN_DEVICES = frozenset({"", "-1", "none", "nodevfiles", "void"})


@dataclass(frozen=True, slots=True)
class DeviceChoice:
    """Where XGBoost will train, and why (the training log says both)."""

    device: Device
    reason: str


@functools.cache
def cuda_probe() -> tuple[bool, str]:
    """Whether XGBoost can train on CUDA here, and why (or why not). Cached: asked once.

    Cheap checks first (``CUDA_VISIBLE_DEVICES`` hiding every device, a wheel built without
    CUDA), then one boosting round on 8 rows with ``device="cuda"``: XGBoost resets the booster
    to ``cpu`` when no GPU is visible, so the booster's own configuration says what really ran.
    A few milliseconds either way; any failure means ``cpu``.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip().lower() in HIDDEN_DEVICES:
        return False, f"CUDA_VISIBLE_DEVICES={visible!r} hides every device"
    if not xgboost.build_info().get("USE_CUDA", False):
        return False, f"xgboost {xgboost.__version__} was built without CUDA"
    features = np.arange(16, dtype=np.float32).reshape(8, 2)
    labels = np.asarray([0, 1] * 4, dtype=np.float32)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            booster = xgboost.train(
                {"device": "cuda", "tree_method": "hist", "verbosity": 0},
                xgboost.DMatrix(features, label=labels),
                num_boost_round=1,
            )
        device = str(json.loads(booster.save_config())["learner"]["generic_param"]["device"])
    except Exception as error:  # a broken driver or runtime: train on the CPU
        return False, f"CUDA probe failed ({type(error).__name__}: {error})".splitlines()[0]
    if device.startswith("cuda"):
        return True, f"CUDA device visible ({device}, xgboost {xgboost.__version__})"
    return False, "no visible CUDA device"


def choose_device(requested: str = "auto") -> DeviceChoice:
    """``cuda`` when asked for or, with ``auto``, when the probe says a device is usable; ``cpu``
    otherwise. Asking for ``cuda`` where none is usable is a configuration error, not a fallback:
    a job that demanded a GPU should not quietly become a slow CPU job."""
    if requested not in DEVICE_CHOICES:
        raise ConfigError(f"unknown device {requested!r}; choose one of {DEVICE_CHOICES}")
    if requested == "cpu":
        return DeviceChoice("cpu", "cpu requested")
    usable, why = cuda_probe()
    if usable:
        return DeviceChoice("cuda", why)
    if requested == "cuda":
        raise ConfigError(f"device 'cuda' requested but unusable: {why}")
    return DeviceChoice("cpu", why)


class LabelledXGBClassifier(XGBClassifier):
    """XGBClassifier that accepts any class labels (strings too), as scikit-learn's do.

    XGBoost insists on labels ``0..n-1``; the pipeline (and so the ONNX graph's ``label``
    output and the card's classes) keeps the data's own. ``classes_`` returns those labels,
    which is also what onnxmltools writes into the graph's ``classlabels_*``. Probabilities are
    in the order of ``classes_`` (sorted, like ``np.unique``).
    """

    _labels: np.ndarray | None = None

    @property
    def classes_(self) -> np.ndarray:
        """The original labels once fitted (XGBoost's own ``0..n-1`` while it fits)."""
        if self._labels is not None:
            return self._labels
        codes: np.ndarray = super().classes_
        return codes

    def fit(self, X: Any, y: Any, **kwargs: Any) -> Self:  # noqa: N803 (scikit-learn names)
        """Encode labels as ``0..n-1`` for XGBoost, remember the originals."""
        self._labels = None
        labels, codes = np.unique(np.asarray(y), return_inverse=True)
        super().fit(X, codes.astype(np.int64), **kwargs)
        self._labels = labels
        return self

    def predict(self, X: Any, **kwargs: Any) -> np.ndarray:  # noqa: N803
        """Original labels, not codes."""
        codes = np.asarray(super().predict(X, **kwargs)).astype(np.int64)
        return self.classes_[codes]


def make_classifier(device: Device, *, seed: int, n_estimators: int) -> LabelledXGBClassifier:
    """XGBoost 3 histogram trees with settings close to the HGB estimator's (200 rounds, 0.1
    learning rate), so the two compare on the same footing."""
    return LabelledXGBClassifier(
        n_estimators=n_estimators,
        learning_rate=0.1,
        max_depth=6,
        tree_method="hist",
        device=device,
        random_state=seed,
        verbosity=1,
    )


def xgboost_params(
    model: LabelledXGBClassifier, device_reason: str
) -> dict[str, str | int | float | bool | None]:
    """What the card records about the fit (scalars only)."""
    params = model.get_params()
    return {
        "tree_method": str(params["tree_method"]),
        "n_estimators": int(params["n_estimators"]),
        "learning_rate": float(params["learning_rate"]),
        "max_depth": int(params["max_depth"]),
        "xgboost_version": str(xgboost.__version__),
        "device_reason": device_reason,
    }


def predict_on_cpu(model: LabelledXGBClassifier) -> None:
    """Point a (possibly CUDA-trained) booster at the CPU for the parity check.

    The held-out rows are host numpy arrays; a CUDA booster would copy them over with a
    "mismatched devices" warning. The trees are the same either way, and the ONNX graph they
    are compared with runs on the CPU too.
    """
    model.set_params(device="cpu")


@functools.cache
def register_onnx_converter() -> bool:
    """Teach skl2onnx's pipeline converter the XGBoost classifiers (onnxmltools' converter).

    onnxmltools 1.15+ reads XGBoost 3's ``base_score`` (per-class intercepts included). Idempotent.
    """
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import (  # type: ignore[import-untyped]
        convert_xgboost,
    )
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes

    options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    for model_type, alias in (
        (XGBClassifier, "XGBoostXGBClassifier"),
        (LabelledXGBClassifier, "SkyscoreXGBClassifier"),
    ):
        update_registered_converter(
            model_type,
            alias,
            calculate_linear_classifier_output_shapes,
            convert_xgboost,
            options=options,
        )
    return True
