"""The two images, built here without Docker: infra/aws/rehearse.py runs each Dockerfile's steps
(COPY through its ignore file, pip for the base's Python and glibc, its own smoke checks, its
CMD), and then the functions run from what it made, on nothing else.

- The scoring image (upload, score, jobCompleted): its task root holds the fast path (pyarrow)
  and nothing heavy; every function command in serverless.yml imports there; the upload
  handler, run in a clean interpreter on the image's paths only, scores a CSV and a Parquet
  upload from moto exactly as the core does in process.
- The training image: `train` runs SageMaker's container contract on the image's own packages.
- The rehearsal can fail: a hidden COPY source, a step it does not know, a base not pinned to
  linux/amd64 and a wheel the base cannot install each stop it.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from aws_moto import Aws
from aws_package import LAMBDA_GLIBC, ROOT, glibc_needed, rehearse, rehearsed, run_train
from demo_table import cancer_csv
from skyscore.batch.pipeline import score_path
from skyscore.model.predictor import Predictor
from skyscore.model.registry import ModelRegistry
from terraform import checkov_summary, skip_reasons

INFRA = ROOT / "infra" / "aws"
HEAVY = {"sklearn", "scipy", "pandas", "skl2onnx", "xgboost"}

# A clean interpreter on the image's sys.path only (task root, then the base's site), the way
# the Lambda runtime imports a handler; it reports every module that came from elsewhere.
IMAGE_CHILD = textwrap.dedent(
    """
    import json, sys, sysconfig
    task, site, handler = sys.argv[1], sys.argv[2], sys.argv[3]
    sys.path[:0] = [task]
    sys.path.append(site)
    module, _, name = handler.rpartition(".")
    function = getattr(__import__(module, fromlist=[name]), name)
    ctx = type("C", (), {"function_name": "upload", "memory_limit_in_mb": 3008,
                         "aws_request_id": "r",
                         "invoked_function_arn": "arn:aws:lambda:us-east-1:1:function:upload"})()
    answers = [function(event, ctx) for event in json.loads(sys.argv[4])]
    stdlib = sysconfig.get_paths()["stdlib"]
    outside = sorted({m.__name__.split(".")[0] for m in list(sys.modules.values())
                      if getattr(m, "__file__", None)
                      and not m.__file__.startswith((task, site, stdlib))})
    print(json.dumps({"answers": answers, "outside": outside,
                      "pyarrow": getattr(sys.modules.get("pyarrow"), "__file__", None)}))
    """
)


@pytest.fixture(scope="module")
def scoring_image(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return rehearsed(INFRA / "scoring.Dockerfile", tmp_path_factory.mktemp("scoring-image"))


def image_commands() -> list[str]:
    """The handler each image function of serverless.yml names."""
    text = (ROOT / "serverless.yml").read_text()
    return re.findall(r"^\s+command: \[([\w.]+)\]$", text, flags=re.MULTILINE)


def test_scoring_image_holds_the_fast_path_and_nothing_heavy(scoring_image: dict[str, Any]) -> None:
    task = Path(scoring_image["task_root"])
    tops = {p.name for p in task.iterdir()}
    assert {"pyarrow", "onnxruntime", "numpy", "msgspec", "aws_lambda_powertools"} <= tops
    assert {"skyscore", "functions"} <= tops and (task / "functions/aws/upload.py").is_file()
    assert not tops & (HEAVY | {"boto3", "botocore"})  # boto3 comes with the base image
    assert not (task / "pyarrow" / "include").exists() and not (task / "pyarrow" / "tests").exists()
    needs = glibc_needed(task)
    assert any(path.startswith("pyarrow/") for path in needs), "pyarrow's libraries unchecked"
    too_new = {path: v for path, v in needs.items() if v > LAMBDA_GLIBC}
    assert not too_new, f"need a newer glibc than the python3.13 base's {LAMBDA_GLIBC}: {too_new}"
    print(f"scoring image task root: {scoring_image['bytes'] / 2**20:.1f} MiB")


def test_every_image_function_command_imports_in_the_image(scoring_image: dict[str, Any]) -> None:
    commands = image_commands()
    assert len(commands) == 3 and scoring_image["cmd"][0] in commands
    code = "import sys\n" + "\n".join(
        f"from {c.rpartition('.')[0]} import {c.rpartition('.')[2]} as f{i}; assert callable(f{i})"
        for i, c in enumerate(commands)
    )
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            f"import sys; sys.path[:0] = [{scoring_image['task_root']!r}]; "
            f"sys.path.append({scoring_image['site']!r})\n{code}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def upload_event(aws: Aws, key: str) -> dict[str, Any]:
    etag = aws.s3.head_object(Bucket=aws.bucket, Key=key)["ETag"].strip('"')
    record = {
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": aws.bucket}, "object": {"key": key, "eTag": etag}},
    }
    return {"Records": [record]}


def test_upload_function_scores_csv_and_parquet_from_the_image(
    scoring_image: dict[str, Any],
    aws: Aws,
    cancer: ModelRegistry,
    demo_predictor: Predictor,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    data = cancer_csv(data_dir)
    table = pa_csv.read_csv(io.BytesIO(cancer_csv(data_dir, bad_rows=False)))
    parquet = io.BytesIO()
    pq.write_table(table, parquet)
    inputs = {"incoming/cancer/a.csv": data, "incoming/cancer/b.parquet": parquet.getvalue()}
    for key, body in inputs.items():
        aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=body)
    events = [upload_event(aws, key) for key in inputs]
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            IMAGE_CHILD,
            scoring_image["task_root"],
            scoring_image["site"],
            scoring_image["cmd"][0],
            json.dumps(events),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "POWERTOOLS_TRACE_DISABLED": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["outside"] == [], f"imported from outside the image: {report['outside']}"
    assert report["pyarrow"].startswith(scoring_image["task_root"])
    statuses = [answer["results"][0]["status"] for answer in report["answers"]]
    assert statuses == ["scored", "scored"]

    for key, body in inputs.items():
        source = tmp_path / Path(key).name
        source.write_bytes(body)
        reference = tmp_path / f"{source.stem}.predictions{source.suffix}"
        score_path(source, reference, demo_predictor)
        out = key.replace("incoming/", "predictions/").replace(".", ".predictions.", 1)
        got = aws.s3.get_object(Bucket=aws.bucket, Key=out)["Body"].read()
        if source.suffix == ".csv":
            assert got == reference.read_bytes()
        else:
            assert pq.read_table(io.BytesIO(got)).equals(pq.read_table(reference))
        manifest = json.loads(
            aws.s3.get_object(Bucket=aws.bucket, Key=out + ".manifest.json")["Body"].read()
        )
        assert manifest["rows_scored"] == (567 if source.suffix == ".csv" else 569)


def test_training_image_runs_sagemakers_contract_on_its_own_packages(
    tmp_path: Path, data_dir: Path
) -> None:
    image = rehearsed(INFRA / "Dockerfile", tmp_path / "image")
    site = Path(image["site"])
    assert {"sklearn", "skl2onnx", "xgboost", "pyarrow", "skyscore"} <= {
        p.name for p in site.iterdir()
    }
    assert not (Path(image["workdir"]) / "shared").exists()  # the source is not left behind
    train = Path(image["root"]) / "usr" / "local" / "bin" / "train"
    assert os.access(train, os.X_OK) and image["cmd"] == ["train"]
    # `python` in the image: this machine's 3.13 on the image's site only
    bin_dir = tmp_path / "image-python"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(
        f'#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} -S -s "$@"\n'
    )
    (bin_dir / "python").chmod(0o755)
    result = run_train(tmp_path / "run", data_dir, "diagnosis", train=train, python_dir=bin_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "model" / "model.onnx").is_file()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("COPY shared/skyscore", "COPY tests"), "nothing in the build context"),
        (("RUN python -c", "RUN apt-get install -y gcc && python -c"), "not rehearsed"),
        (("FROM --platform=linux/amd64 ", "FROM "), "linux/amd64"),
        (
            ("requirements-image.txt \\", "requirements-image.txt onnx==1.14.0 \\"),
            "onnx==1.14.0",  # no wheel for Python 3.13: the real build fails the same way
        ),
    ],
    ids=["hidden-copy", "unknown-step", "no-platform", "no-wheel-for-the-base"],
)
def test_the_rehearsal_fails_where_the_build_would(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    dockerfile = (INFRA / "scoring.Dockerfile").read_text()
    old, new = change
    assert old in dockerfile
    dockerfile = dockerfile.replace(old, new, 1)
    broken = tmp_path / "scoring.Dockerfile"  # the context stays the repository root
    broken.write_text(dockerfile)
    ignore = broken.with_name(broken.name + ".dockerignore")
    ignore.write_text((INFRA / "scoring.Dockerfile.dockerignore").read_text())
    done = rehearse(broken, tmp_path / "out")
    assert done.returncode == 1, done.stdout
    assert message in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("name", ["scoring.Dockerfile", "Dockerfile"])
def test_checkov_passes_each_dockerfile_with_a_reason_for_every_skip(name: str) -> None:
    dockerfile = INFRA / name
    summary, failed = checkov_summary(dockerfile, framework="dockerfile")
    assert failed == [] and summary["failed"] == 0 and summary["passed"] >= 30, summary
    skips = skip_reasons(dockerfile.read_text())
    assert skips and all(reason and len(reason.strip()) > 20 for _, reason in skips), skips
    assert summary["skipped"] == len(skips)
