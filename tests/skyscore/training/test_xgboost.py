"""The XGBoost estimator: ONNX parity on real data sets (binary and multiclass), the device
choice (CUDA only when it really trains there), the card, the entrypoint and the CLI.

Runs on CPU anywhere; on a CUDA machine the same tests train on the GPU (``auto``), and
``bench/gpu_check.py`` measures it.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import numpy as np
import onnx
import pytest

from skyscore.errors import ConfigError, ParityError
from skyscore.lifecycle.hardware import hardware_for
from skyscore.model.card import ModelCard, card_from_json, card_to_json, verify_artifact
from skyscore.model.predictor import Predictor
from skyscore.training import train as train_module
from skyscore.training import xgb
from skyscore.training.datasets import (
    DEMO_ID,
    DEMO_TARGET,
    MULTICLASS_TARGET,
    SYNTHETIC_ID,
    SYNTHETIC_TARGET,
    multiclass_frame,
)
from skyscore.training.export import TARGET_ML_OPSET, TARGET_OPSET
from skyscore.training.train import TrainConfig, TrainResult, main, train

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def multiclass_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("multiclass")
    for name in ("iris", "wine"):
        multiclass_frame(name).to_csv(root / f"{name}.csv", index=False)
    return root


@pytest.fixture(scope="module")
def xgb_binary(data_dir: Path) -> TrainResult:
    """Breast cancer (string classes, one categorical), device chosen as a job would (auto)."""
    return train(
        TrainConfig(
            data=str(data_dir / "breast_cancer.csv"),
            target=DEMO_TARGET,
            name="cancer-xgb",
            estimator="xgboost",
            id_column=DEMO_ID,
        )
    )


def _holdout_parity(result: TrainResult, data: Path, target: str) -> float:
    """Recompute parity independently: XGBoost's probabilities vs the served ONNX graph (through
    the inference-path Predictor) on exactly the rows the card says were held out."""
    import pandas as pd

    from skyscore.training.holdout import holdout_mask

    card = result.card
    frame = pd.read_csv(data)
    numeric, categorical = card.numeric_features, card.categorical_features
    num, cat = train_module.prepare_features(frame, numeric, categorical)
    mask = holdout_mask(num, cat)
    assert int(mask.sum()) == card.training.holdout_rows
    served = Predictor(card, result.onnx_bytes).predict_arrays(num[mask], cat[mask])
    fitted = result.pipeline.predict_proba(train_module._design_frame(num[mask], cat[mask]))
    return float(np.abs(served.astype(np.float64) - fitted).max())


def test_binary_parity_on_breast_cancer(xgb_binary: TrainResult, data_dir: Path) -> None:
    card = xgb_binary.card
    assert card.training.estimator == "xgboost"
    assert card.classes == ["benign", "malignant"]
    assert card.onnx.parity_max_abs_diff <= TOLERANCE
    assert card.onnx.parity_rows == card.training.holdout_rows > 50
    assert card.metrics["roc_auc"] > 0.97
    parity = _holdout_parity(xgb_binary, data_dir / "breast_cancer.csv", DEMO_TARGET)
    assert parity <= TOLERANCE
    assert card.categorical_features == ["size_band"]


@pytest.mark.parametrize(
    ("name", "classes"),
    [("iris", ["setosa", "versicolor", "virginica"]), ("wine", [0, 1, 2])],
)
def test_multiclass_parity(name: str, classes: list[object], multiclass_dir: Path) -> None:
    """Softmax over per-class trees and XGBoost 3's per-class intercepts survive the export."""
    data = multiclass_dir / f"{name}.csv"
    result = train(
        TrainConfig(data=str(data), target=MULTICLASS_TARGET, name=name, estimator="xgboost")
    )
    card = result.card
    assert card.classes == classes
    assert card.onnx.parity_max_abs_diff <= TOLERANCE
    assert _holdout_parity(result, data, MULTICLASS_TARGET) <= TOLERANCE
    assert card.metrics["accuracy"] > 0.85
    probabilities = Predictor(card, result.onnx_bytes).predict_arrays(
        np.zeros((3, len(card.numeric_features)), dtype=np.float32),
        np.empty((3, 0), dtype=object),
    )
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_categoricals_and_integer_classes(data_dir: Path) -> None:
    """The synthetic table's three categoricals go through the same one-hot preprocessing."""
    result = train(
        TrainConfig(
            data=str(data_dir / "synthetic.csv"),
            target=SYNTHETIC_TARGET,
            name="fraud-xgb",
            estimator="xgboost",
            id_column=SYNTHETIC_ID,
            max_iter=50,
            device="cpu",
        )
    )
    assert result.card.classes == [0, 1]
    assert result.card.categorical_features == ["region", "channel", "tier"]
    assert result.card.onnx.parity_max_abs_diff <= TOLERANCE
    assert result.card.training.params["n_estimators"] == 50
    assert _holdout_parity(result, data_dir / "synthetic.csv", SYNTHETIC_TARGET) <= TOLERANCE
    predictor = Predictor(result.card, result.onnx_bytes)
    [prediction] = predictor.predict_instances(
        [
            {
                SYNTHETIC_ID: "x",
                **{f"f{i:02d}": 0.0 for i in range(30)},
                "region": "nowhere",  # unseen: one-hot zeros, as for the other estimators
                "channel": "web",
                "tier": "gold",
            }
        ]
    )
    assert prediction["label"] in (0, 1) and prediction["id"] == "x"


def test_onnx_graph_runs_on_the_lambda_runtime_opsets(xgb_binary: TrainResult) -> None:
    """ai.onnx 17 and ai.onnx.ml 3: what onnxruntime 1.16 (the Lambda package) can load."""
    model = onnx.load_from_string(xgb_binary.onnx_bytes)
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets[""] == TARGET_OPSET
    assert opsets["ai.onnx.ml"] == TARGET_ML_OPSET
    ops = {node.op_type for node in model.graph.node}
    assert "TreeEnsembleClassifier" in ops
    assert xgb_binary.card.onnx.size_bytes == len(xgb_binary.onnx_bytes)


def test_card_records_the_device_and_the_fit(xgb_binary: TrainResult) -> None:
    card = xgb_binary.card
    expected = xgb.choose_device("auto").device
    assert card.training.device == expected
    params = card.training.params
    assert params["tree_method"] == "hist"
    assert params["n_estimators"] == 200
    assert isinstance(params["device_reason"], str) and params["device_reason"]
    assert xgb_binary.fit_seconds > 0
    assert card_from_json(card_to_json(card)) == card
    # and the retraining loop will ask for GPU hardware for this model
    assert hardware_for(card.training.estimator) == "gpu"


def test_cards_without_a_device_still_decode(xgb_binary: TrainResult) -> None:
    """Cards written before the field existed read as CPU-trained."""
    raw = json.loads(card_to_json(xgb_binary.card))
    del raw["training"]["device"]
    assert card_from_json(json.dumps(raw)).training.device == "cpu"
    raw["training"]["device"] = "tpu"
    with pytest.raises(msgspec.ValidationError, match="device"):
        card_from_json(json.dumps(raw))


def test_other_estimators_record_cpu(hgb_model: TrainResult, demo_model: TrainResult) -> None:
    assert hgb_model.card.training.device == "cpu"
    assert demo_model.card.training.device == "cpu"


def test_parity_beyond_tolerance_is_refused(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = train_module._onnx_probabilities

    def skewed(*args: object, **kwargs: object) -> np.ndarray:
        probabilities = real(*args, **kwargs)  # type: ignore[arg-type]
        probabilities[0] += np.asarray([2e-4, -2e-4])
        return probabilities

    monkeypatch.setattr(train_module, "_onnx_probabilities", skewed)
    with pytest.raises(ParityError, match=r"differ from XGBoost .*not published"):
        train(
            TrainConfig(
                data=str(data_dir / "breast_cancer.csv"),
                target=DEMO_TARGET,
                name="x",
                estimator="xgboost",
                max_iter=20,
                device="cpu",
            )
        )


# ------------------------------------------------------------------------------ device choice
@pytest.fixture
def fresh_probe() -> object:
    xgb.cuda_probe.cache_clear()
    yield
    xgb.cuda_probe.cache_clear()


def test_hidden_devices_mean_cpu(fresh_probe: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    usable, why = xgb.cuda_probe()
    assert not usable and "CUDA_VISIBLE_DEVICES" in why
    assert xgb.choose_device("auto") == xgb.DeviceChoice("cpu", why)


def test_a_build_without_cuda_means_cpu(
    fresh_probe: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(xgb.xgboost, "build_info", lambda: {"USE_CUDA": False})
    usable, why = xgb.cuda_probe()
    assert not usable and "without CUDA" in why


def test_a_failing_probe_means_cpu(fresh_probe: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(xgb.xgboost, "build_info", lambda: {"USE_CUDA": True})

    def broken(*args: object, **kwargs: object) -> object:
        raise xgb.xgboost.core.XGBoostError("cudaErrorInsufficientDriver\nmore lines")

    monkeypatch.setattr(xgb.xgboost, "train", broken)
    usable, why = xgb.cuda_probe()
    assert not usable and why == "CUDA probe failed (XGBoostError: cudaErrorInsufficientDriver"


def test_the_probe_believes_the_booster(fresh_probe: object) -> None:
    """Without a GPU, XGBoost resets the probe's booster to cpu; with one it stays cuda."""
    usable, why = xgb.cuda_probe()
    assert usable == why.startswith("CUDA device visible")


def test_explicit_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    assert xgb.choose_device("cpu").device == "cpu"
    monkeypatch.setattr(xgb, "cuda_probe", lambda: (False, "no visible CUDA device"))
    with pytest.raises(ConfigError, match="'cuda' requested but unusable: no visible CUDA"):
        xgb.choose_device("cuda")
    assert xgb.choose_device("auto").device == "cpu"
    monkeypatch.setattr(xgb, "cuda_probe", lambda: (True, "CUDA device visible (cuda:0)"))
    assert xgb.choose_device("cuda") == xgb.DeviceChoice("cuda", "CUDA device visible (cuda:0)")
    assert xgb.choose_device("auto").device == "cuda"
    with pytest.raises(ConfigError, match="unknown device"):
        xgb.choose_device("gpu")


def test_cuda_device_reaches_the_estimator(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the probe says CUDA, the pipeline's XGBoost is built with ``device="cuda"``."""
    pipeline = train_module.build_pipeline("xgboost", 3, 1, seed=0, max_iter=5, device="cuda")
    classifier = pipeline.named_steps["classifier"]
    assert classifier.get_params()["device"] == "cuda"
    assert classifier.get_params()["tree_method"] == "hist"
    assert (
        train_module.build_pipeline("xgboost", 3, 0, seed=0, max_iter=5)
        .named_steps["classifier"]
        .get_params()["device"]
        == "cpu"
    )


def test_labelled_classifier_keeps_the_labels() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 2))
    labels = np.where(features[:, 0] > 0, "yes", "no")
    model = xgb.make_classifier("cpu", seed=0, n_estimators=5).fit(features, labels)
    assert model.classes_.tolist() == ["no", "yes"]
    assert set(model.predict(features).tolist()) <= {"no", "yes"}
    assert (model.predict(features) == labels).mean() > 0.9


# -------------------------------------------------------------------------- entrypoints
def _artifacts(out: Path) -> ModelCard:
    card = card_from_json((out / "card.json").read_bytes())
    verify_artifact(card, (out / "model.onnx").read_bytes())
    return card


def test_managed_job_entrypoint(multiclass_dir: Path, tmp_path: Path) -> None:
    """``python -m skyscore.training.train --estimator xgboost`` (the Azure ML form)."""
    out = tmp_path / "outputs"
    code = main(
        [
            str(multiclass_dir / "iris.csv"),
            "--target",
            MULTICLASS_TARGET,
            "--name",
            "iris",
            "--estimator",
            "xgboost",
            "--device",
            "cpu",
            "--max-iter",
            "30",
            "--output-dir",
            str(out),
        ]
    )
    assert code == 0
    card = _artifacts(out)
    assert card.training.estimator == "xgboost" and card.training.device == "cpu"


def test_sagemaker_hyperparameters_choose_xgboost(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = tmp_path / "train"
    channel.mkdir()
    (channel / "part-0.csv").write_bytes((data_dir / "breast_cancer.csv").read_bytes())
    hyper = tmp_path / "hyperparameters.json"
    hyper.write_text(
        json.dumps({"target": DEMO_TARGET, "name": "sm", "estimator": "xgboost", "max-iter": "20"})
    )
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(channel))
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    monkeypatch.setenv("SM_HPS_PATH", str(hyper))
    assert main([]) == 0
    card = _artifacts(tmp_path / "model")
    assert card.training.estimator == "xgboost"
    assert card.training.device == xgb.choose_device("auto").device


def test_cli_train_with_xgboost(
    multiclass_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from skyscore import cli

    home = tmp_path / "home"
    data = str(multiclass_dir / "wine.csv")
    args = ["train", data, "--home", str(home), "--target", MULTICLASS_TARGET, "--name", "wine"]
    assert cli.main([*args, "--estimator", "xgboost"]) == 0
    captured = capsys.readouterr()
    assert "registered wine version" in captured.out
    assert "xgboost trains on " in captured.err
    with pytest.raises(SystemExit):
        cli.main([*args, "--estimator", "catboost"])
