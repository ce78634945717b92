"""Training entrypoint: parity, the model card, and the managed-job container contracts."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import numpy as np
import pytest

from skyscore.errors import IntegrityError, ParityError, TrainingDataError
from skyscore.model.card import ModelCard, card_from_json, card_to_json, sha256_hex, verify_artifact
from skyscore.training import export as onnx_export
from skyscore.training import train as train_module
from skyscore.training.train import TrainConfig, TrainResult, gcs_fuse_path, main, train


def test_demo_model_card_describes_the_model(demo_model: TrainResult) -> None:
    card = demo_model.card
    assert card.classes == ["benign", "malignant"]
    assert card.id_column == "patient_id"
    assert len(card.numeric_features) == 30 and card.categorical_features == ["size_band"]
    assert card.onnx.sha256 == sha256_hex(demo_model.onnx_bytes)
    assert card.onnx.parity_max_abs_diff <= 1e-4
    assert card.metrics["roc_auc"] > 0.95
    band = next(f for f in card.features if f.name == "size_band")
    assert sorted(band.categories) == ["large", "medium", "small"]
    for feature in card.features:
        baseline = feature.baseline
        assert baseline is not None
        shares = baseline.frequencies
        total = sum(shares.values()) if isinstance(shares, dict) else sum(shares)
        assert total == pytest.approx(1.0)
    assert card.prediction_baseline is not None
    assert sum(card.prediction_baseline.class_frequencies.values()) == pytest.approx(1.0)


def test_hgb_parity_within_tolerance(hgb_model: TrainResult) -> None:
    """HGB converts (needs the protobuf-7 bool fix) and matches scikit-learn within 1e-4."""
    assert hgb_model.card.training.estimator == "hgb"
    assert hgb_model.card.onnx.parity_max_abs_diff <= 1e-4
    assert hgb_model.card.classes == [0, 1]
    assert hgb_model.card.categorical_features == ["region", "channel", "tier"]


def test_card_round_trips_and_validates(demo_model: TrainResult) -> None:
    data = card_to_json(demo_model.card)
    assert card_from_json(data) == demo_model.card
    broken = json.loads(data)
    broken["onnx"]["sha256"] = "not-a-checksum"
    with pytest.raises(msgspec.ValidationError, match="sha256"):
        card_from_json(json.dumps(broken))
    broken = json.loads(data)
    del broken["features"]
    with pytest.raises(msgspec.ValidationError, match="features"):
        card_from_json(json.dumps(broken))


def test_tampered_artifact_is_refused(demo_model: TrainResult) -> None:
    tampered = bytearray(demo_model.onnx_bytes)
    tampered[-1] ^= 0xFF
    with pytest.raises(IntegrityError, match="sha256"):
        verify_artifact(demo_model.card, bytes(tampered))


def test_parity_failure_refuses_to_publish(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_module, "PARITY_TOLERANCE", 0.0)
    with pytest.raises(ParityError, match="not published"):
        train(
            TrainConfig(
                data=str(data_dir / "breast_cancer.csv"),
                target="diagnosis",
                name="x",
                estimator="logreg",
            )
        )


def test_tree_ensemble_patch_coerces_booleans() -> None:
    from skl2onnx.common import tree_ensemble

    onnx_export.patch_tree_ensemble_bools()
    assert getattr(tree_ensemble.add_node, "_skyscore_patched", False)
    attrs: dict[str, list[object]] = {
        k: []
        for k in (
            "nodes_treeids",
            "nodes_nodeids",
            "nodes_featureids",
            "nodes_modes",
            "nodes_values",
            "nodes_truenodeids",
            "nodes_falsenodeids",
            "nodes_missing_value_tracks_true",
            "nodes_hitrates",
        )
    }
    tree_ensemble.add_node(
        attrs,
        True,
        0,
        1.0,
        0,
        0,
        "BRANCH_LEQ",
        0.5,
        1,
        2,
        None,
        0,
        False,
        adjust_threshold_for_sklearn=False,
        dtype=np.float32,
        nodes_missing_value_tracks_true=np.bool_(True),
    )
    value = attrs["nodes_missing_value_tracks_true"][0]
    assert value == 1 and type(value) is int


def test_missing_target_is_a_clear_error(data_dir: Path) -> None:
    with pytest.raises(TrainingDataError, match="'nope' not in the data"):
        train(TrainConfig(data=str(data_dir / "breast_cancer.csv"), target="nope", name="x"))


def test_cli_exit_status_and_one_line_reason(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main([str(data_dir / "missing.csv"), "--target", "y", "--output-dir", str(tmp_path)]) == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("skyscore train:") and "does not exist" in err[-1]


def _artifacts(out: Path) -> ModelCard:
    card = card_from_json((out / "card.json").read_bytes())
    verify_artifact(card, (out / "model.onnx").read_bytes())
    return card


def test_sagemaker_contract(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SM_CHANNEL_TRAIN in, SM_MODEL_DIR out, string hyperparameters from the JSON file."""
    channel = tmp_path / "input" / "data" / "train"
    channel.mkdir(parents=True)
    (channel / "part-0.csv").write_bytes((data_dir / "breast_cancer.csv").read_bytes())
    hyper = tmp_path / "hyperparameters.json"
    hyper.write_text(json.dumps({"target": "diagnosis", "name": "sm", "estimator": "logreg"}))
    model_dir = tmp_path / "model"
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(channel))
    monkeypatch.setenv("SM_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("SM_HPS_PATH", str(hyper))
    assert main([]) == 0
    card = _artifacts(model_dir)
    assert card.name == "sm" and card.training.estimator == "logreg"


def test_vertex_contract(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AIP_TRAINING_DATA_URI in, AIP_MODEL_DIR out; gs:// maps onto the /gcs FUSE mount."""
    assert gcs_fuse_path("gs://bucket/data/train.csv") == "/gcs/bucket/data/train.csv"
    assert gcs_fuse_path("/local/path.csv") == "/local/path.csv"
    monkeypatch.setenv("AIP_TRAINING_DATA_URI", str(data_dir / "breast_cancer.csv"))
    monkeypatch.setenv("AIP_MODEL_DIR", str(tmp_path / "vertex-model"))
    assert main(["--target", "diagnosis", "--name", "vx", "--estimator", "logreg"]) == 0
    assert _artifacts(tmp_path / "vertex-model").name == "vx"


def test_azure_ml_contract(data_dir: Path, tmp_path: Path) -> None:
    """Azure ML passes mounted input and output paths as arguments."""
    out = tmp_path / "outputs" / "model"
    code = main(
        [
            str(data_dir / "breast_cancer.csv"),
            "--target",
            "diagnosis",
            "--name",
            "az",
            "--estimator",
            "logreg",
            "--output-dir",
            str(out),
        ]
    )
    assert code == 0
    assert _artifacts(out).name == "az"


def test_parquet_training_data(data_dir: Path, tmp_path: Path) -> None:
    import pandas as pd

    path = tmp_path / "bc.parquet"
    pd.read_csv(data_dir / "breast_cancer.csv").to_parquet(path)
    result = train(TrainConfig(data=str(path), target="diagnosis", name="pq", estimator="logreg"))
    assert result.card.onnx.parity_max_abs_diff <= 1e-4
