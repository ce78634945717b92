"""Shared fixtures: real trained models (trained once per test session) and their files."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyscore.model.predictor import Predictor
from skyscore.training.datasets import (
    DEMO_ID,
    DEMO_TARGET,
    SYNTHETIC_ID,
    SYNTHETIC_TARGET,
    breast_cancer_frame,
    write_synthetic_csv,
)
from skyscore.training.train import TrainConfig, TrainResult, train


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Labelled CSVs: the demo's breast cancer table and a synthetic 30+3-feature table."""
    root = tmp_path_factory.mktemp("data")
    breast_cancer_frame().to_csv(root / "breast_cancer.csv", index=False)
    write_synthetic_csv(root / "synthetic.csv", 5_000, seed=1)
    return root


@pytest.fixture(scope="session")
def demo_model(data_dir: Path) -> TrainResult:
    """Logistic regression on breast cancer (string classes, id column ``patient_id``)."""
    return train(
        TrainConfig(
            data=str(data_dir / "breast_cancer.csv"),
            target=DEMO_TARGET,
            name="cancer",
            estimator="logreg",
            id_column=DEMO_ID,
        )
    )


@pytest.fixture(scope="session")
def worse_model(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """The demo model retrained on shuffled labels: valid, verified, and clearly worse (what a
    quality gate must reject)."""
    import pandas as pd

    frame = pd.read_csv(data_dir / "breast_cancer.csv")
    frame[DEMO_TARGET] = frame[DEMO_TARGET].sample(frac=1.0, random_state=7).to_numpy()
    path = tmp_path_factory.mktemp("worse") / "shuffled.csv"
    frame.to_csv(path, index=False)
    config = TrainConfig(
        data=str(path), target=DEMO_TARGET, name="cancer", estimator="logreg", id_column=DEMO_ID
    )
    return train(config)


@pytest.fixture(scope="session")
def hgb_model(data_dir: Path) -> TrainResult:
    """Histogram gradient boosting on the synthetic table (int classes, 3 categoricals)."""
    return train(
        TrainConfig(
            data=str(data_dir / "synthetic.csv"),
            target=SYNTHETIC_TARGET,
            name="fraud",
            estimator="hgb",
            id_column=SYNTHETIC_ID,
            max_iter=50,
        )
    )


@pytest.fixture(scope="session")
def demo_predictor(demo_model: TrainResult) -> Predictor:
    """A ready predictor for the demo model."""
    return Predictor(demo_model.card, demo_model.onnx_bytes)


@pytest.fixture(scope="session")
def hgb_predictor(hgb_model: TrainResult) -> Predictor:
    """A ready predictor for the synthetic HGB model."""
    return Predictor(hgb_model.card, hgb_model.onnx_bytes)
