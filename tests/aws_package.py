"""What the AWS tests check on a deployable package or image: the glibc its compiled libraries
need, and the images built without Docker (infra/aws/rehearse.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from skyscore.adapters.aws import SageMakerJobRunner
from skyscore.ports import JobSpec
from skyscore.training.datasets import DEMO_ID

ROOT = Path(__file__).resolve().parents[1]
REHEARSE = ROOT / "infra" / "aws" / "rehearse.py"
TRAIN = ROOT / "infra" / "aws" / "train"
LAMBDA_GLIBC = (2, 34)  # the python3.13 runtime (zip or base image) runs on Amazon Linux 2023
_GLIBC_VERSION = re.compile(rb"GLIBC_2\.(\d+)(?:\.\d+)?\x00")


def glibc_needed(root: Path) -> dict[str, tuple[int, int]]:
    """The newest ``GLIBC_2.x`` symbol version each shared library under ``root`` names.

    The dynamic loader refuses a library that needs a glibc newer than the system's; this
    machine's glibc cannot show that, so the versions are read from the files themselves.
    """
    found: dict[str, tuple[int, int]] = {}
    for path in root.rglob("*.so*"):
        if path.is_file() and not path.is_symlink():
            minors = [int(m) for m in _GLIBC_VERSION.findall(path.read_bytes())]
            if minors:
                found[str(path.relative_to(root))] = (2, max(minors))
    return found


def rehearse(dockerfile: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run a Dockerfile's steps into ``out`` (no Docker engine here); the caller checks it."""
    return subprocess.run(
        [sys.executable, str(REHEARSE), str(dockerfile), str(out), "--context", str(ROOT), *extra],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def rehearsed(dockerfile: Path, out: Path) -> dict[str, Any]:
    """The summary of a rehearsal that must succeed."""
    done = rehearse(dockerfile, out)
    assert done.returncode == 0, done.stderr[-3000:]
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def run_train(
    tmp_path: Path,
    data_dir: Path,
    target: str,
    train: Path = TRAIN,
    python_dir: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """The training image's `train` as SageMaker runs it, the /opt/ml paths moved by the
    variables it reads; `python` is the first on PATH (python_dir, else this venv's)."""
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
        "PATH": f"{python_dir or Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "SM_CHANNEL_TRAIN": str(channel),
        "SM_MODEL_DIR": str(tmp_path / "model"),
        "SM_HPS_PATH": str(hyperparameters),
        "SKYSCORE_FAILURE_FILE": str(tmp_path / "output" / "failure"),
        "HOME": str(tmp_path),
    }
    return subprocess.run(
        ["bash", str(train), "train"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
