"""AWS figures: function package sizes, HTTP cold start from the Lambda package against the same
handler on scikit-learn + joblib, and upload scoring with exactly the dependency set each function
is deployed with: the zip (no pyarrow) and the scoring image (the zip's wheels plus pyarrow,
python3.13 manylinux x86_64 wheels, as the Dockerfile installs), each in a fresh process taking a
cold and then a warm invocation, beside the local embedded path and the naive pandas +
scikit-learn job on the same file in the same rounds.

    .venv/bin/python -m bench.aws                  # uses .serverless/skyscore.zip, else packages
    .venv/bin/python -m bench.aws --rows 500000 --repeats 5

Not a test: it prints figures. moto answers on localhost, so S3 latency here is far below real
S3's (tens of milliseconds per request), while its throughput (one Python process sharing the
CPUs) is below it: the CPU seconds per row, counted in the scoring process only, are the figure
that does not depend on the storage.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.report import table

if TYPE_CHECKING:
    from skyscore.training.train import TrainResult

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "skyscore-bench-data"

SKYSCORE_CHILD = """
import sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[1])       # the Lambda task root: the package's own wheels first
sys.path.append(sys.argv[2])          # boto3 (in the Lambda runtime, not in the package)
import json
import math
from functions.aws import http
t1 = time.perf_counter()
event = json.loads(sys.argv[3])
ctx = type("C", (), {"function_name": "f", "memory_limit_in_mb": 1769, "aws_request_id": "r",
                     "invoked_function_arn": "arn:aws:lambda:us-east-1:1:function:f"})()
answer = http.handler(event, ctx)
assert answer["statusCode"] == 200, answer
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first": t2 - t1, "total": t2 - t0}))
"""

UPLOAD_CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])       # the function's task root: its own wheels only
sys.path.append(sys.argv[2])          # boto3 and friends (the Lambda runtime's)
import importlib.abc, json, resource
if sys.argv[3] == "block":
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"pyarrow", "pandas", "sklearn", "scipy"}:
                raise ImportError(name + " is not in this dependency set")
    sys.meta_path.insert(0, Block())
from functions.aws import upload
ctx = type("C", (), {"function_name": "f", "memory_limit_in_mb": 3008, "aws_request_id": "r",
                     "invoked_function_arn": "arn:aws:lambda:us-east-1:1:function:f"})()
figures = []
for event in json.loads(sys.argv[4]):   # the first call is a cold container's, then warm ones
    usage = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    answer = upload.handler(event, ctx)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime  # every thread's
    figures.append({"seconds": elapsed, "cpu": cpu, "status": answer["results"][0]["status"],
                    "pyarrow": "pyarrow" in sys.modules})
print(json.dumps(figures))
"""


def rehearsed_image(out: Path) -> dict[str, Any]:
    """The scoring image's file system, built without Docker by running its Dockerfile's steps
    (infra/aws/rehearse.py): the task root, and the base's site with the boto3 it ships."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "infra" / "aws" / "rehearse.py"),
            str(ROOT / "infra" / "aws" / "scoring.Dockerfile"),
            str(out),
            "--context",
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


SKLEARN_CHILD = """
import sys, time
t0 = time.perf_counter()
import io, json
import boto3, joblib, pandas as pd, sklearn
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
app = APIGatewayHttpResolver()
columns = json.loads(sys.argv[3])
models = {}

@app.post("/v1/models/<name>/predict")
def predict(name):
    if name not in models:
        body = boto3.client("s3").get_object(Bucket=sys.argv[1], Key=f"sklearn/{name}.joblib")["Body"]
        models[name] = joblib.load(io.BytesIO(body.read()))
    model = models[name]
    instances = app.current_event.json_body["instances"]
    frame = pd.DataFrame([[row[c] for c in columns] for row in instances])
    probabilities = model.predict_proba(frame)
    return {"predictions": [{"probabilities": list(map(float, p))} for p in probabilities]}

t1 = time.perf_counter()
ctx = type("C", (), {"function_name": "f", "memory_limit_in_mb": 1769, "aws_request_id": "r",
                     "invoked_function_arn": "arn:aws:lambda:us-east-1:1:function:f"})()
answer = app.resolve(json.loads(sys.argv[2]), ctx)
assert answer["statusCode"] == 200, answer
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first": t2 - t1, "total": t2 - t0}))
"""


def package(path: Path | None) -> Path:
    """The function package: the given zip, the last `serverless package`, or a fresh one."""
    if path is not None:
        return path
    default = ROOT / ".serverless" / "skyscore.zip"
    if not default.exists():
        env = {
            **os.environ,
            "SLS_TELEMETRY_DISABLED": "1",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "SKYSCORE_PYTHON": sys.executable,
        }
        subprocess.run(
            [
                str(ROOT / "node_modules" / ".bin" / "serverless"),
                "package",
                "--stage",
                "dev",
                # the zip is what is measured here; an image by digest needs no Docker
                "--param=scoringImageUri=123456789012.dkr.ecr.us-east-1.amazonaws.com/"
                "serverless-skyscore-dev@sha256:" + "0" * 64,
            ],
            cwd=ROOT,
            env=env,
            check=True,
        )
    return default


def sizes(zip_path: Path, image_root: Path) -> None:
    with zipfile.ZipFile(zip_path) as zf:
        unzipped = sum(i.file_size for i in zf.infolist())
        tops: dict[str, int] = {}
        for info in zf.infolist():
            top = info.filename.split("/", 1)[0]
            tops[top] = tops.get(top, 0) + info.file_size
    zipped = zip_path.stat().st_size
    image = tree_bytes(image_root)
    limit = 250 * 2**20
    rows = [
        [f, "zip", f"{zipped / 2**20:.1f}", f"{unzipped / 2**20:.1f}", f"{unzipped / limit:.0%}"]
        for f in ("http", "retrainSchedule", "retrainAlarm")
    ] + [
        [
            f,
            "image (+ pyarrow)",
            "",
            f"{image / 2**20:.1f}",
            f"{image / (10 * 10**9):.0%} of the 10 GB image limit",
        ]
        for f in ("upload", "score", "jobCompleted")
    ]
    table(
        "Function packages (one zip; one image: task root without the base image's Python)",
        ["function", "package", "zipped MiB", "unzipped MiB", "of the 250 MB zip limit"],
        rows,
    )
    biggest = sorted(tops.items(), key=lambda kv: -kv[1])[:6]
    table(
        "Largest parts of the zip (unzipped)",
        ["top-level", "MiB"],
        [[k, f"{v / 2**20:.1f}"] for k, v in biggest],
    )


@dataclass(frozen=True)
class LocalBaseline:
    """The same model in a local home and as a joblib pipeline: the local embedded path
    (`skyscore score`, file to file) and the naive pandas + scikit-learn job, run beside the
    upload function in the same rounds so the ratios compare one machine state."""

    home: Path
    joblib_path: Path
    columns: list[str]
    id_column: str

    def local(self, source: Path, out: Path) -> tuple[float, float]:
        from bench.__main__ import OURS_CHILD

        child = [sys.executable, "-c", OURS_CHILD, str(self.home), "fraud", str(source), str(out)]
        line = subprocess.run(
            [*child, "drift"], check=True, capture_output=True, text=True
        ).stdout.split()
        out.unlink(missing_ok=True)
        return float(line[0]), float(line[3])

    def naive(self, source: Path, out: Path) -> float:
        from bench.__main__ import NAIVE_CHILD

        line = subprocess.run(
            [
                sys.executable,
                "-c",
                NAIVE_CHILD,
                str(self.joblib_path),
                str(source),
                str(out),
                json.dumps(self.columns),
                self.id_column,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        out.unlink(missing_ok=True)
        return float(line[0])


def local_baseline(work: Path, result: TrainResult) -> LocalBaseline:
    import joblib

    from skyscore.local.home import LocalHome

    home = LocalHome.resolve(work / "home").ensure()
    registry = home.registry()
    registry.promote(result.card.name, registry.register(result.card, result.onnx_bytes).version)
    joblib.dump(result.pipeline, work / "fraud.joblib")
    card = result.card
    return LocalBaseline(
        home.root,
        work / "fraud.joblib",
        card.numeric_features + card.categorical_features,
        card.id_column or "",
    )


def upload_throughput(
    s3: Any,
    source: Path,
    rows: int,
    repeats: int,
    sets: tuple[tuple[str, Path, str], ...],
    runtime: Path,
    child_env: dict[str, str],
    local: LocalBaseline,
) -> None:
    """The upload function per deployed dependency set: a fresh process (a new container) takes
    two uploads, the first a cold container's, the second a warm one's. Beside them, in the same
    rounds: the local path and the naive job on the same file. CPU seconds count every thread
    of the scoring process only (moto runs in this one), so they show what each path costs per
    row whatever the storage's speed; wall-clock rows/s here include moto on loopback."""
    payload = source.read_bytes()
    samples: dict[str, list[tuple[float, float]]] = {}
    statuses: dict[str, str] = {}
    pyarrow: dict[str, bool] = {}
    for round_ in range(repeats):
        for name, root, block in sets:
            events: list[dict[str, Any]] = []
            for call in ("cold", "warm"):
                key = f"incoming/fraud/{name}-{round_}-{call}.csv"
                s3.put_object(Bucket=BUCKET, Key=key, Body=payload)
                etag = s3.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
                record = {
                    "eventSource": "aws:s3",
                    "eventName": "ObjectCreated:Put",
                    "s3": {"bucket": {"name": BUCKET}, "object": {"key": key, "eTag": etag}},
                }
                events.append({"Records": [record]})
            child = [
                sys.executable,
                "-I",
                "-S",
                "-c",
                UPLOAD_CHILD,
                str(root),
                str(runtime),
                block,
                json.dumps(events),
            ]
            done = subprocess.run(child, capture_output=True, text=True, check=False, env=child_env)
            if done.returncode:
                raise RuntimeError(done.stderr[-2000:])
            for call, figures in zip(
                ("cold", "warm"), json.loads(done.stdout.splitlines()[-1]), strict=True
            ):
                samples.setdefault(f"{name} {call}", []).append(
                    (figures["seconds"], figures["cpu"])
                )
                statuses[f"{name} {call}"] = figures["status"]
                pyarrow[name] = figures["pyarrow"]
            for event in events:
                key = event["Records"][0]["s3"]["object"]["key"]
                out_key = key.replace("incoming/", "predictions/").replace(
                    ".csv", ".predictions.csv"
                )
                body = s3.get_object(Bucket=BUCKET, Key=out_key + ".manifest.json")["Body"]
                manifest = json.loads(body.read())
                assert manifest["rows_scored"] == rows, manifest
        samples.setdefault("local", []).append(local.local(source, source.with_suffix(".l.csv")))
        samples.setdefault("naive", []).append(
            (local.naive(source, source.with_suffix(".n.csv")), float("nan"))
        )

    def median(label: str, index: int) -> float:
        return statistics.median(sample[index] for sample in samples[label])

    local_rate = rows / median("local", 0)
    naive_rate = rows / median("naive", 0)
    labels = {
        "local": "local embedded path (`skyscore score`, file to file)",
        "image cold": "upload function, scoring image (+ pyarrow): cold container",
        "image warm": "upload function, scoring image (+ pyarrow): warm container",
        "zip cold": "upload function on the zip's set (no pyarrow): cold container",
        "zip warm": "upload function on the zip's set (no pyarrow): warm container",
        "naive": "naive pandas + scikit-learn + to_csv (file to file)",
    }
    table_rows = []
    for label, text in labels.items():
        seconds = median(label, 0)
        cpu = median(label, 1)
        rate = rows / seconds
        table_rows.append(
            [
                text,
                f"{seconds:.2f}",
                f"{rate:,.0f}",
                "" if math.isnan(cpu) else f"{cpu / rows * 1e6:.2f}",
                f"{rate / local_rate:.0%}",
                f"**{rate / naive_rate:.1f}x**",
                statuses.get(label, ""),
            ]
        )
    assert pyarrow == {"zip": False, "image": True}, pyarrow
    table(
        f"Upload scoring, {rows:,} rows ({len(payload) / 2**20:.0f} MiB CSV, hgb), median of "
        f"{repeats} rounds; upload function against moto ({os.cpu_count()} CPUs shared with it)",
        ["path", "seconds", "rows/s", "CPU s per 1M rows", "of local rows/s", "vs naive", "status"],
        table_rows,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.aws", description=__doc__)
    parser.add_argument("--zip", type=Path, default=None)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="upload rounds (median)")
    args = parser.parse_args(argv)

    import boto3
    import joblib
    from moto.server import ThreadedMotoServer

    from skyscore.adapters.aws import S3BlobStore
    from skyscore.model.registry import ModelRegistry
    from skyscore.training.datasets import (
        DEMO_ID,
        DEMO_TARGET,
        breast_cancer_frame,
        write_synthetic_csv,
    )
    from skyscore.training.train import TrainConfig, train

    zip_path = package(args.zip)

    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    work = Path(tempfile.mkdtemp(prefix="skyscore-bench-aws-"))
    (work / "aws").write_text("")
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(work / "aws"),
        "AWS_SHARED_CREDENTIALS_FILE": str(work / "aws"),
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "SKYSCORE_BUCKET": BUCKET,
        "SKYSCORE_MODEL": "cancer",
    }
    os.environ.update(env)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    registry = ModelRegistry(S3BlobStore(BUCKET, client=s3))

    frame = breast_cancer_frame()
    data = work / "cancer.csv"
    frame.to_csv(data, index=False)
    result = train(
        TrainConfig(
            data=str(data), target=DEMO_TARGET, name="cancer", estimator="logreg", id_column=DEMO_ID
        )
    )
    registry.promote("cancer", registry.register(result.card, result.onnx_bytes).version)
    buffer = io.BytesIO()
    joblib.dump(result.pipeline, buffer)
    s3.put_object(Bucket=BUCKET, Key="sklearn/cancer.joblib", Body=buffer.getvalue())

    # ---- cold start: a fresh process imports the handler and answers one prediction
    task = work / "task"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(task)
    image = rehearsed_image(work / "scoring-image")
    image_root = Path(image["task_root"])
    sizes(zip_path, image_root)
    runtime = Path(image["site"])  # the python3.13 runtime's own boto3, zip or image alike
    columns = [c for c in frame.columns if c != DEMO_TARGET]
    row = {c: (v.item() if hasattr(v, "item") else v) for c, v in frame[columns].iloc[0].items()}
    body = json.dumps({"instances": [row]})
    event = {
        "version": "2.0",
        "routeKey": "ANY /{proxy+}",
        "rawPath": "/v1/models/cancer/predict",
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {
            "http": {"method": "POST", "path": "/v1/models/cancer/predict"},
            "requestId": "r",
            "stage": "$default",
        },
        "body": body,
        "isBase64Encoded": False,
    }
    boto_site = str(Path(boto3.__file__).parents[1])
    sky = [
        sys.executable,
        "-I",
        "-S",
        "-c",
        SKYSCORE_CHILD,
        str(task),
        boto_site,
        json.dumps(event),
    ]
    features = [c for c in columns if c != DEMO_ID]
    skl = [sys.executable, "-c", SKLEARN_CHILD, BUCKET, json.dumps(event), json.dumps(features)]

    def spawn(command: list[str]) -> dict[str, float]:
        started = time.perf_counter()
        done = subprocess.run(
            command, capture_output=True, text=True, check=False, env={**os.environ, **env}
        )
        if done.returncode:
            raise RuntimeError(done.stderr[-2000:])
        figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
        figures["process"] = time.perf_counter() - started
        return figures

    spawn(sky), spawn(skl)  # warm the page cache for both
    ours = [spawn(sky) for _ in range(args.runs)]
    theirs = [spawn(skl) for _ in range(args.runs)]

    def med(samples: list[dict[str, float]], key: str) -> float:
        return statistics.median(s[key] for s in samples) * 1e3

    rows = [
        [
            label,
            f"{med(s, 'import'):.0f}",
            f"{med(s, 'first'):.0f}",
            f"{med(s, 'total'):.0f}",
            f"{med(s, 'process'):.0f}",
        ]
        for label, s in (
            ("skyscore package (ONNX, S3 registry)", ours),
            ("scikit-learn + joblib + pandas", theirs),
        )
    ]
    rows.append(
        [
            "speed-up",
            "",
            "",
            f"**{med(theirs, 'total') / med(ours, 'total'):.1f}x**",
            f"**{med(theirs, 'process') / med(ours, 'process'):.1f}x**",
        ]
    )
    table(
        f"HTTP cold start, fresh process, model read from moto S3 (median of {args.runs})",
        ["handler", "import ms", "first request ms", "import + first ms", "process wall ms"],
        rows,
    )

    # ---- upload scoring throughput, end to end through moto, per deployed dependency set
    fraud_data = work / "fraud-train.csv"
    write_synthetic_csv(fraud_data, 20_000, seed=1)
    fraud = train(
        TrainConfig(
            data=str(fraud_data),
            target="fraud",
            name="fraud",
            estimator="hgb",
            id_column="id",
            max_iter=50,
        )
    )
    registry.promote("fraud", registry.register(fraud.card, fraud.onnx_bytes).version)
    big = work / "big.csv"
    write_synthetic_csv(big, args.rows, seed=7, labelled=False)
    upload_throughput(
        s3,
        big,
        args.rows,
        args.repeats,
        sets=(("zip", task, "block"), ("image", image_root, "none")),
        runtime=runtime,
        child_env={**os.environ, **env, "SKYSCORE_FANOUT_BYTES": str(1 << 40)},
        local=local_baseline(work, fraud),
    )
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
