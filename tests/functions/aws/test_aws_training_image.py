"""The training image's entry point honours SageMaker's container contract: the `train` channel,
/opt/ml/model, the hyperparameters SageMakerJobRunner sends, and a failure reason file.

No Docker engine runs here, so the script runs on this machine with the paths moved by the
variables it reads; the Dockerfile is checked for what SageMaker relies on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from skyscore.adapters.aws import SageMakerJobRunner
from skyscore.model.card import card_from_json
from skyscore.ports import JobSpec
from skyscore.training.datasets import DEMO_ID, DEMO_TARGET

ROOT = Path(__file__).resolve().parents[3]
TRAIN = ROOT / "infra" / "aws" / "train"


def run_train(tmp_path: Path, data_dir: Path, target: str) -> subprocess.CompletedProcess[str]:
    channel = tmp_path / "input" / "data" / "train"
    channel.mkdir(parents=True)
    (channel / "part-0.csv").write_bytes((data_dir / "breast_cancer.csv").read_bytes())
    spec = JobSpec(
        model_name="cancer",
        data_uri="s3://bucket/training/cancer/",
        output_uri="s3://bucket/staging/cancer/x/",
        target=target,
        estimator="logreg",
        id_column=DEMO_ID,
    )
    hyperparameters = tmp_path / "input" / "config" / "hyperparameters.json"
    hyperparameters.parent.mkdir(parents=True)
    hyperparameters.write_text(json.dumps(SageMakerJobRunner.hyperparameters(spec)))
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "SM_CHANNEL_TRAIN": str(channel),
        "SM_MODEL_DIR": str(tmp_path / "model"),
        "SM_HPS_PATH": str(hyperparameters),
        "SKYSCORE_FAILURE_FILE": str(tmp_path / "output" / "failure"),
        "HOME": str(tmp_path),
    }
    return subprocess.run(
        ["bash", str(TRAIN), "train"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_train_script_writes_the_artifacts_sagemaker_packs(tmp_path: Path, data_dir: Path) -> None:
    result = run_train(tmp_path, data_dir, DEMO_TARGET)
    assert result.returncode == 0, result.stderr[-2000:]
    card = card_from_json((tmp_path / "model" / "card.json").read_bytes())
    assert (card.name, card.target, card.id_column) == ("cancer", DEMO_TARGET, DEMO_ID)
    assert card.training.estimator == "logreg"
    assert (tmp_path / "model" / "model.onnx").stat().st_size == card.onnx.size_bytes
    assert not (tmp_path / "output" / "failure").exists()


def test_train_script_reports_why_it_failed(tmp_path: Path, data_dir: Path) -> None:
    result = run_train(tmp_path, data_dir, "no_such_column")
    assert result.returncode == 1
    reason = (tmp_path / "output" / "failure").read_text()
    assert "no_such_column" in reason


def test_dockerfile_contract() -> None:
    dockerfile = (ROOT / "infra" / "aws" / "Dockerfile").read_text()
    assert "FROM python:3.11" in dockerfile
    assert "'.[train]'" in dockerfile
    assert "COPY infra/aws/train /usr/local/bin/train" in dockerfile
    instructions = [line.split()[0] for line in dockerfile.splitlines() if line and line[0] != "#"]
    assert 'CMD ["train"]' in dockerfile and "ENTRYPOINT" not in instructions
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    assert os.access(TRAIN, os.X_OK)
