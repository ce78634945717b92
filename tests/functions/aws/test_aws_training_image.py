"""The training image's entry point honours SageMaker's container contract: the `train` channel,
/opt/ml/model, the hyperparameters SageMakerJobRunner sends, and a failure reason file.

No Docker engine runs here, so the script runs on this machine with the paths moved by the
variables it reads; the Dockerfile is checked for what SageMaker relies on.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from aws_package import ROOT, TRAIN, run_train
from skyscore.model.card import card_from_json
from skyscore.training.datasets import DEMO_ID, DEMO_TARGET


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
    assert "FROM --platform=linux/amd64 python:3.13" in dockerfile
    assert "'.[train]'" in dockerfile
    assert "COPY infra/aws/train /usr/local/bin/train" in dockerfile
    instructions = [line.split()[0] for line in dockerfile.splitlines() if line and line[0] != "#"]
    assert 'CMD ["train"]' in dockerfile and "ENTRYPOINT" not in instructions
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    assert os.access(TRAIN, os.X_OK)


def _sends(dockerfile: Path) -> list[str]:
    """The paths a Dockerfile copies from the build context (the repository root)."""
    sources = []
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            sources.extend(line.split()[1:-1])
    return sources


def test_images_are_built_for_amd64_with_their_own_ignore_files() -> None:
    """SageMaker and the Lambda functions run x86_64; a build on an arm64 laptop must not ship
    an arm64 image. The context is the repository root, so each Dockerfile has an ignore file
    (BuildKit's <Dockerfile>.dockerignore) that keeps .venv and node_modules out."""
    infra = ROOT / "infra" / "aws"
    makefile = (infra / "Makefile").read_text()
    for name in ("Dockerfile", "scoring.Dockerfile"):
        dockerfile = infra / name
        [base] = [line for line in dockerfile.read_text().splitlines() if line.startswith("FROM")]
        assert base.startswith("FROM --platform=linux/amd64 "), base
        ignore = (infra / f"{name}.dockerignore").read_text().splitlines()
        assert ignore[ignore.index("**")] == "**"  # everything out, then what COPY needs
        for source in _sends(dockerfile):
            assert (ROOT / source.split("*")[0]).exists() or list(ROOT.glob(source)), source
            assert any(line.startswith("!") and source.split("*")[0] in line for line in ignore)
        assert f"-f infra/aws/{name}" in makefile
    assert makefile.count("--platform linux/amd64") == 2
    # the training image goes into the repository the deploy creates; no account id to fill in
    assert "skyscore-$(STAGE)-train" in makefile and "sts get-caller-identity" in makefile


def test_scoring_image_is_the_lambda_python313_base_with_pyarrow() -> None:
    dockerfile = (ROOT / "infra" / "aws" / "scoring.Dockerfile").read_text()
    assert "public.ecr.aws/lambda/python:3.13" in dockerfile
    assert "requirements-image.txt" in dockerfile and "--no-deps" in dockerfile
    requirements = (ROOT / "functions" / "aws" / "requirements-image.txt").read_text()
    assert "-r requirements.txt" in requirements and "pyarrow==" in requirements
    zip_requirements = (ROOT / "functions" / "aws" / "requirements.txt").read_text()
    pins = [line.split("#")[0].strip() for line in zip_requirements.splitlines()]
    assert [p for p in pins if p] and not [p for p in pins if p.startswith("pyarrow")]
    assert 'CMD ["functions.aws.upload.handler"]' in dockerfile


def test_the_deploy_target_pushes_the_training_image_where_the_stack_expects_it(
    tmp_path: Path,
) -> None:
    """`make -n` of the deploy with an `aws` that answers an account id: the stack is deployed
    with the stage, region and alarm e-mail, then the image is built for linux/amd64 and pushed
    to the repository the stack creates (serverless.yml), under the account from the
    credentials, with the tag the stack's SKYSCORE_TRAINING_IMAGE_URI names."""
    fake_aws = tmp_path / "aws"
    fake_aws.write_text("#!/bin/sh\necho 210987654321\n")
    fake_aws.chmod(0o755)
    done = subprocess.run(
        [
            "make",
            "-n",
            "-f",
            str(ROOT / "infra" / "aws" / "Makefile"),
            "deploy",
            "STAGE=prod",
            "REGION=eu-west-1",
            "TAG=v7",
            "ALARM_EMAIL=ops@example.com",
            f"AWS={fake_aws}",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    commands = " ".join(done.stdout.replace("\\\n", " ").split())
    registry = "210987654321.dkr.ecr.eu-west-1.amazonaws.com"
    deploy = commands.index("serverless deploy --stage prod --region eu-west-1")
    assert '--param="alarmEmail=ops@example.com"' in commands
    assert '--param="trainingImageTag=v7"' in commands
    build = commands.index(
        "docker build --platform linux/amd64 -f infra/aws/Dockerfile -t skyscore-prod-train:v7 ."
    )
    push = commands.index(f"docker push {registry}/skyscore-prod-train:v7")
    assert deploy < build < push  # the repository exists before the push
    assert f"docker login --username AWS --password-stdin {registry}" in commands
    template = (ROOT / "serverless.yml").read_text()
    assert "RepositoryName: skyscore-${sls:stage}-train" in template
    assert "${TrainingImageRepository}:${param:trainingImageTag}" in template
