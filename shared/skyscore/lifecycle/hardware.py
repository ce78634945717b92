"""Which hardware a training job needs: a GPU only for an estimator that can use one.

Import-light on purpose (no scikit-learn, no XGBoost): the retrain functions on every cloud read
it to pick the managed job's machine, and they carry only the inference dependencies.
"""

from __future__ import annotations

from typing import Literal

Hardware = Literal["cpu", "gpu"]

GPU_ESTIMATORS = frozenset({"xgboost"})
"""Estimators that train on CUDA when a device is visible (XGBoost's ``device="cuda"``)."""


def hardware_for(estimator: str) -> Hardware:
    """``gpu`` for an estimator that uses one, ``cpu`` for the rest (a GPU would only cost more)."""
    return "gpu" if estimator in GPU_ESTIMATORS else "cpu"
