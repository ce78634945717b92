"""serverless.yml for real: `serverless package` with the pinned open-source Framework (npm ci),
cfn-lint on the compiled CloudFormation, checks of what moto would silently skip (routes, bucket
notifications, alarms, subscriptions, IAM), the zip itself imported in a clean interpreter, and
a `serverless deploy` to moto server followed by `serverless remove`.

Nothing here skips: without node_modules (``npm ci``, which ``make test`` runs) the tests fail.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from aws_moto import moto_server, reset
from skyscore.adapters.aws import S3BlobStore
from skyscore.batch.pipeline import score_stream
from skyscore.model.card import card_to_json
from skyscore.model.predictor import Predictor
from skyscore.model.registry import ModelRegistry
from skyscore.training.train import TrainResult

ROOT = Path(__file__).resolve().parents[3]
SERVERLESS = ROOT / "node_modules" / ".bin" / "serverless"
STAGE = "local"
BUCKET = "skyscore-local-data"
FUNCTIONS = ("http", "upload", "score", "retrainSchedule", "retrainAlarm", "jobCompleted")
UNZIPPED_LIMIT = 250 * 1024 * 1024  # Lambda's limit for a zip package, layers included
HEADROOM = 0.8  # the package must leave a fifth of it free
LAMBDA_GLIBC = (2, 26)  # the python3.11 runtime runs on Amazon Linux 2
_GLIBC_VERSION = re.compile(rb"GLIBC_2\.(\d+)(?:\.\d+)?\x00")


def glibc_needed(root: Path) -> dict[str, tuple[int, int]]:
    """The newest ``GLIBC_2.x`` symbol version each shared library under ``root`` names.

    The dynamic loader refuses a library that needs a glibc newer than the system's; this
    machine's glibc cannot show that, so the versions are read from the files themselves.
    """
    found: dict[str, tuple[int, int]] = {}
    for path in root.rglob("*.so*"):
        if path.is_file():
            minors = [int(m) for m in _GLIBC_VERSION.findall(path.read_bytes())]
            if minors:
                found[str(path.relative_to(root))] = (2, max(minors))
    return found


# Write actions that IAM cannot scope to a resource; everything else names its resources.
UNSCOPABLE = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "sagemaker:ListTrainingJobs",
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
}


def serverless(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> str:
    assert SERVERLESS.exists(), (
        f"{SERVERLESS} is missing: run `npm ci` in {ROOT} (`make test` does it)"
    )
    environment = {
        **os.environ,
        "SLS_TELEMETRY_DISABLED": "1",
        "SLS_NOTIFICATIONS_MODE": "off",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "SKYSCORE_PYTHON": sys.executable,  # the venv's python runs pip for the package
        **(env or {}),
    }
    if "AWS_ENDPOINT_URL" not in (env or {}):
        environment.pop("AWS_ENDPOINT_URL", None)
    result = subprocess.run(
        [str(SERVERLESS), *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"serverless {' '.join(args)} failed:\n{output[-4000:]}"
    return output


@pytest.fixture(scope="session")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`serverless package --stage local` into a temporary directory (once per session)."""
    target = tmp_path_factory.mktemp("serverless") / "package"
    serverless("package", "--stage", STAGE, "--package", str(target))
    return target


@pytest.fixture(scope="session")
def template(packaged: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (packaged / "cloudformation-template-update-stack.json").read_text()
    )
    return loaded


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def test_template_passes_cfn_lint(packaged: Path) -> None:
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run(
        [
            str(cfn_lint),
            str(packaged / "cloudformation-template-update-stack.json"),
            # W3005: Serverless adds DependsOn on roles that are also referenced; harmless
            "--ignore-checks",
            "W3005",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_http_route_and_function_url_require_iam(template: dict[str, Any]) -> None:
    routes = resources(template, "AWS::ApiGatewayV2::Route")
    assert [r["Properties"]["RouteKey"] for r in routes.values()] == ["ANY /{proxy+}"]
    assert all(r["Properties"]["AuthorizationType"] == "AWS_IAM" for r in routes.values())
    [url] = resources(template, "AWS::Lambda::Url").values()
    assert url["Properties"]["AuthType"] == "AWS_IAM"
    integration = next(iter(resources(template, "AWS::ApiGatewayV2::Integration").values()))
    assert integration["Properties"]["PayloadFormatVersion"] == "2.0"


def test_bucket_notifications(template: dict[str, Any]) -> None:
    bucket = template["Resources"]["S3BucketData"]
    assert bucket["Properties"]["BucketName"] == BUCKET
    assert bucket["DeletionPolicy"] == "Retain"
    configs = bucket["Properties"]["NotificationConfiguration"]["LambdaConfigurations"]
    rules = {
        c["Function"]["Fn::GetAtt"][0]: {
            r["Name"]: r["Value"] for r in c["Filter"]["S3Key"]["Rules"]
        }
        for c in configs
    }
    assert rules == {
        "UploadLambdaFunction": {"prefix": "incoming/"},
        "JobCompletedLambdaFunction": {"prefix": "staging/", "suffix": "model.tar.gz"},
    }
    assert all(c["Event"] == "s3:ObjectCreated:*" for c in configs)
    block = bucket["Properties"]["PublicAccessBlockConfiguration"]
    assert all(block.values())


def test_work_queue_redrive_and_event_source(template: dict[str, Any]) -> None:
    queue = template["Resources"]["WorkQueue"]["Properties"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["WorkDeadLetterQueue", "Arn"]},
        "maxReceiveCount": 3,
    }
    score = template["Resources"]["ScoreLambdaFunction"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * score["Timeout"]
    [mapping] = resources(template, "AWS::Lambda::EventSourceMapping").values()
    props = mapping["Properties"]
    assert props["EventSourceArn"] == {"Fn::GetAtt": ["WorkQueue", "Arn"]}
    assert props["FunctionName"] == {"Fn::GetAtt": ["ScoreLambdaFunction", "Arn"]}
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    upload_env = template["Resources"]["UploadLambdaFunction"]["Properties"]["Environment"]
    assert upload_env["Variables"]["SKYSCORE_WORK_QUEUE_URL"] == {"Ref": "WorkQueue"}


def test_async_failures_are_kept(template: dict[str, Any]) -> None:
    """Events that fail every retry (S3, SNS, EventBridge invoke asynchronously) go to a queue
    that has an alarm, and each function's role may send there."""
    configs = resources(template, "AWS::Lambda::EventInvokeConfig").values()
    kept = {c["Properties"]["FunctionName"]["Ref"]: c["Properties"] for c in configs}
    assert set(kept) == {
        "UploadLambdaFunction",
        "RetrainAlarmLambdaFunction",
        "JobCompletedLambdaFunction",
    }
    for props in kept.values():
        assert props["DestinationConfig"]["OnFailure"]["Destination"] == {
            "Fn::GetAtt": ["FailedEventsQueue", "Arn"]
        }
    roles = resources(template, "AWS::IAM::Role")
    for function in kept:
        role = template["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"][0]
        sends = [
            r
            for st in statements(roles[role])
            if "sqs:SendMessage" in listify(st["Action"])
            for r in listify(st["Resource"])
        ]
        assert {"Fn::GetAtt": ["FailedEventsQueue", "Arn"]} in sends, function
    alarm = template["Resources"]["FailedEventsAlarm"]["Properties"]
    assert alarm["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["FailedEventsQueue", "QueueName"]}


def test_schedule_rules_and_retrain_topic(template: dict[str, Any]) -> None:
    rules = resources(template, "AWS::Events::Rule")
    targets = {
        r["Properties"]["Targets"][0]["Arn"]["Fn::GetAtt"][0]: r["Properties"]
        for r in rules.values()
    }
    assert targets["RetrainScheduleLambdaFunction"]["ScheduleExpression"] == "rate(1 day)"
    assert targets["RetrainScheduleLambdaFunction"]["State"] == "ENABLED"
    sagemaker = targets["JobCompletedLambdaFunction"]["EventPattern"]
    assert sagemaker["detail-type"] == ["SageMaker Training Job State Change"]
    assert sagemaker["detail"]["TrainingJobStatus"] == ["Completed", "Failed", "Stopped"]
    alarms = targets["RetrainAlarmLambdaFunction"]["EventPattern"]
    assert alarms["detail-type"] == ["CloudWatch Alarm State Change"]
    assert alarms["detail"]["state"]["value"] == ["ALARM"]
    s3 = targets["UploadLambdaFunction"]
    assert s3["EventPattern"]["detail"]["object"]["key"] == [{"prefix": "incoming/"}]
    assert s3["State"] == "DISABLED"  # only for buckets that send events to EventBridge
    [subscription] = resources(template, "AWS::SNS::Subscription").values()
    assert subscription["Properties"]["Protocol"] == "lambda"
    assert subscription["Properties"]["TopicArn"] == {"Ref": "RetrainTopic"}
    assert subscription["Properties"]["Endpoint"] == {
        "Fn::GetAtt": ["RetrainAlarmLambdaFunction", "Arn"]
    }
    permissions = resources(template, "AWS::Lambda::Permission").values()
    assert any(p["Properties"]["Principal"] == "sns.amazonaws.com" for p in permissions)


def test_alarms_watch_emitted_metrics_and_notify_the_topic(template: dict[str, Any]) -> None:
    from skyscore.batch.pipeline import ScoreReport
    from skyscore.monitoring.batch import publish_batch
    from skyscore.monitoring.drift import PSI_ALARM
    from skyscore.monitoring.metrics import InMemoryMetrics

    metrics = InMemoryMetrics()
    report = ScoreReport(
        "f.csv",
        "csv",
        "csv",
        rows_read=10,
        rows_scored=9,
        rows_failed=1,
        model_name="cancer",
        model_version="1",
    )
    drift = {
        "rows": 9,
        "max_psi": 0.3,
        "prediction_psi": 0.1,
        "missing_rate": 0.0,
        "out_of_range_rate": 0.0,
    }
    publish_batch(metrics, report, drift)
    emitted = {name for _, values in metrics.records for name in values}
    dimensions = {key for dims, _ in metrics.records for key in dims}
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    for name, metric in (("DriftAlarm", "max_psi"), ("PredictionDriftAlarm", "prediction_psi")):
        props = alarms[name]["Properties"]
        assert props["AlarmActions"] == [{"Ref": "RetrainTopic"}]
        [query] = props["Metrics"]
        expression = query["Expression"]
        assert metric in emitted and f"MAX({metric})" in expression
        assert f"SCHEMA(skyscore, {', '.join(sorted(dimensions))})" in expression
        assert "WHERE model = 'cancer'" in expression
        assert props["Threshold"] == PSI_ALARM
        assert "model=cancer" in props["AlarmDescription"]
    errors = alarms["ErrorRateAlarm"]["Properties"]
    assert errors["AlarmActions"] == [{"Ref": "RetrainTopic"}]
    assert "alarm=error_rate" in errors["AlarmDescription"]
    watched = {
        m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"]
        for m in errors["Metrics"]
        if "MetricStat" in m
    }
    assert watched == {"HttpLambdaFunction", "UploadLambdaFunction", "ScoreLambdaFunction"}


def statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for policy in role["Properties"]["Policies"]:
        out.extend(policy["PolicyDocument"]["Statement"])
    return out


def listify(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_iam_least_privilege(template: dict[str, Any]) -> None:
    roles = resources(template, "AWS::IAM::Role")
    used = {
        name: props["Properties"]["Role"]["Fn::GetAtt"][0]
        for name, props in resources(template, "AWS::Lambda::Function").items()
    }
    assert used == {
        "HttpLambdaFunction": "HttpRole",
        "UploadLambdaFunction": "ScoringRole",
        "ScoreLambdaFunction": "QueueRole",
        "RetrainScheduleLambdaFunction": "RetrainRole",
        "RetrainAlarmLambdaFunction": "RetrainRole",
        "JobCompletedLambdaFunction": "RetrainRole",
    }
    bucket = f"arn:aws:s3:::{BUCKET}"
    for name, role in roles.items():
        for statement in statements(role):
            actions = listify(statement["Action"])
            assert all("*" not in action for action in actions), (name, statement)
            for resource in listify(statement["Resource"]):
                if resource == "*":
                    assert set(actions) <= UNSCOPABLE, (name, statement)
                elif isinstance(resource, str) and resource.startswith("arn:aws:s3"):
                    assert resource == bucket or resource.startswith(bucket + "/"), resource
                    assert resource != bucket + "/*", (name, "a whole bucket")

    def s3_grants(role: str) -> dict[str, set[str]]:
        grants: dict[str, set[str]] = {}
        for statement in statements(roles[role]):
            for action in listify(statement["Action"]):
                if action.startswith("s3:"):
                    for resource in listify(statement["Resource"]):
                        grants.setdefault(action, set()).add(resource.removeprefix(bucket))
        return grants

    http = s3_grants("HttpRole")
    assert http == {"s3:GetObject": {"/models/*"}, "s3:ListBucket": {""}}
    scoring = s3_grants("ScoringRole")
    assert "/models/*" not in scoring["s3:PutObject"]  # scoring cannot change the registry
    assert scoring["s3:PutObject"] == {"/predictions/*", "/work/*"}
    assert "/incoming/*" not in scoring["s3:DeleteObject"]  # never deletes an input
    retrain = s3_grants("RetrainRole")
    assert "/incoming/*" not in set().union(*retrain.values())
    assert "/models/*" in retrain["s3:PutObject"]
    training = s3_grants("SageMakerTrainingRole")
    assert training == {
        "s3:GetObject": {"/training/*"},
        "s3:ListBucket": {""},
        "s3:PutObject": {"/staging/*"},
    }
    passes = [s for s in statements(roles["RetrainRole"]) if "iam:PassRole" in listify(s["Action"])]
    assert passes[0]["Resource"] == [{"Fn::GetAtt": ["SageMakerTrainingRole", "Arn"]}]
    assert passes[0]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
    }
    consume = {
        a
        for s in statements(roles["QueueRole"])
        for a in listify(s["Action"])
        if a.startswith("sqs:Rec")
    }
    assert consume == {"sqs:ReceiveMessage"}
    assert not any(
        a.startswith("sqs:Rec")
        for s in statements(roles["ScoringRole"])
        for a in listify(s["Action"])
    )


def test_functions_config(template: dict[str, Any]) -> None:
    functions = resources(template, "AWS::Lambda::Function")
    assert len(functions) == len(FUNCTIONS)
    for props in (f["Properties"] for f in functions.values()):
        assert props["Runtime"] == "python3.11"
        assert props["Architectures"] == ["x86_64"]
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["Environment"]["Variables"]["SKYSCORE_BUCKET"] == BUCKET
    retrain = functions["RetrainScheduleLambdaFunction"]["Properties"]["Environment"]["Variables"]
    assert retrain["SKYSCORE_TRAINING_INSTANCE_TYPE"] == "ml.g5.xlarge"
    assert retrain["SKYSCORE_SAGEMAKER_ROLE_ARN"] == {
        "Fn::GetAtt": ["SageMakerTrainingRole", "Arn"]
    }


BLOCKER = textwrap.dedent(
    """
    import importlib.abc, json, sys, time
    sys.path.insert(0, sys.argv[1])  # what Lambda puts on sys.path: the package root ...
    sys.path.append(sys.argv[3])  # ... and, last, its runtime's own boto3 and botocore
    started = time.perf_counter()

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"sklearn", "scipy", "pandas", "pyarrow"}:
                raise ImportError(f"{name} is not in the function package")
            return None

    sys.meta_path.insert(0, Block())
    from functions.aws import http, queue, retrain, upload  # noqa: F401
    import io, numpy, onnxruntime, msgspec
    from pathlib import Path
    from skyscore.model.card import card_from_json
    from skyscore.model.predictor import Predictor
    from skyscore.batch.pipeline import score_stream
    model = Path(sys.argv[2])
    predictor = Predictor(card_from_json((model / "card.json").read_bytes()),
                          (model / "model.onnx").read_bytes())
    out, errors = io.BytesIO(), io.BytesIO()
    with open(model / "input.csv", "rb") as source:
        report = score_stream(source, out, fmt="csv", predictor=predictor, errors_sink=errors)
    answer = http.handler(
        {"version": "2.0", "rawPath": "/v2/health/live", "headers": {},
         "requestContext": {"http": {"method": "GET", "path": "/v2/health/live"},
                            "requestId": "x", "stage": "$default"},
         "isBase64Encoded": False},
        type("Context", (), {"function_name": "f", "memory_limit_in_mb": 128, "aws_request_id": "r",
                             "invoked_function_arn": "arn:aws:lambda:us-east-1:1:function:f"})(),
    )
    print(json.dumps({"status": answer["statusCode"], "body": answer["body"],
                      "scored": report.rows_scored, "failed": report.rows_failed,
                      "output": out.getvalue().decode(),
                      "numpy": numpy.__file__, "onnxruntime": onnxruntime.__file__,
                      "seconds": time.perf_counter() - started}))
    """
)


# What the Lambda Python runtime itself provides (serverless.yml's noDeploy list).
RUNTIME_MODULES = ("boto3", "botocore", "s3transfer", "urllib3", "dateutil", "six", "jmespath")


def lambda_runtime_modules(target: Path) -> Path:
    """A directory holding (links to) the modules the Lambda runtime provides, from this venv."""
    import importlib.util

    target.mkdir()
    for name in RUNTIME_MODULES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, f"{name} is not installed"
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (target / source.name).symlink_to(source)
    return target


def test_package_contents_and_imports(
    packaged: Path, tmp_path: Path, demo_model: TrainResult, data_dir: Path
) -> None:
    archive = packaged / "skyscore.zip"
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        unzipped = sum(info.file_size for info in zf.infolist())
        zf.extractall(tmp_path / "task")
    tops = {name.split("/", 1)[0] for name in names}
    assert {
        "functions",
        "skyscore",
        "numpy",
        "onnxruntime",
        "msgspec",
        "aws_lambda_powertools",
    } <= tops
    assert not tops & {"sklearn", "scipy", "pandas", "pyarrow", "boto3", "botocore", "skl2onnx"}
    assert "functions/aws/http.py" in names and "skyscore/batch.py" in names
    assert not any(
        name.startswith(("tests/", "node_modules/", ".venv/", "shared/")) for name in names
    )
    assert unzipped < UNZIPPED_LIMIT * HEADROOM, f"{unzipped / 2**20:.0f} MiB unzipped"
    needs = glibc_needed(tmp_path / "task")
    assert len(needs) >= 10, "the package holds no compiled libraries: nothing was checked"
    too_new = {path: version for path, version in needs.items() if version > LAMBDA_GLIBC}
    assert not too_new, f"need a newer glibc than Lambda python3.11's {LAMBDA_GLIBC}: {too_new}"
    print(
        f"package: {archive.stat().st_size / 2**20:.1f} MiB zipped, {unzipped / 2**20:.1f} MiB unzipped"
    )
    # The package's own wheels run the handlers and score a CSV in a clean interpreter (no venv,
    # no site, no pyarrow): what the Lambda runtime has.
    model = tmp_path / "model"
    model.mkdir()
    (model / "card.json").write_bytes(card_to_json(demo_model.card))
    (model / "model.onnx").write_bytes(demo_model.onnx_bytes)
    lines = (data_dir / "breast_cancer.csv").read_text().splitlines()
    target = lines[0].split(",").index("diagnosis")
    unlabelled = [
        ",".join(f for i, f in enumerate(line.split(",")) if i != target) for line in lines
    ]
    unlabelled[5] = unlabelled[5].replace(unlabelled[5].split(",")[1], "oops", 1)
    (model / "input.csv").write_text("\n".join(unlabelled) + "\n")
    reference = io.BytesIO()
    local = score_stream(
        io.BytesIO((model / "input.csv").read_bytes()),
        reference,
        fmt="csv",
        predictor=Predictor(demo_model.card, demo_model.onnx_bytes),
    )
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            BLOCKER,
            str(tmp_path / "task"),
            str(model),
            str(lambda_runtime_modules(tmp_path / "runtime")),
        ],
        cwd=tmp_path / "task",
        env={
            "SKYSCORE_BUCKET": "unused",
            "POWERTOOLS_TRACE_DISABLED": "1",
            "PATH": os.environ.get("PATH", ""),
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["status"] == 200 and json.loads(answer["body"]) == {"live": True}
    assert (
        (answer["scored"], answer["failed"]) == (local.rows_scored, local.rows_failed) == (568, 1)
    )
    assert answer["output"] == reference.getvalue().decode()
    assert answer["numpy"].startswith(str(tmp_path / "task"))
    assert answer["onnxruntime"].startswith(str(tmp_path / "task"))


@pytest.fixture
def emulator() -> Iterator[str]:
    """A moto server with nothing in it (moto keeps one state per process: reset it)."""
    with moto_server() as url:
        reset(url)
        yield url
        reset(url)


@pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning")
def test_deploy_and_remove_on_moto(packaged: Path, emulator: str) -> None:
    port = emulator.rsplit(":", 1)[1]
    env = {"EDGE_PORT": port}
    aws = {
        "endpoint_url": emulator,
        "region_name": "us-east-1",
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
    }
    serverless("deploy", "--stage", STAGE, "--package", str(packaged), env=env)
    try:
        lam = boto3.client("lambda", **aws)
        deployed = {f["FunctionName"]: f for f in lam.list_functions()["Functions"]}
        assert set(deployed) == {f"skyscore-{STAGE}-{name}" for name in FUNCTIONS}
        http = deployed[f"skyscore-{STAGE}-http"]
        assert http["Runtime"] == "python3.11" and http["Handler"] == "functions/aws/http.handler"
        assert ":role/skyscore-local-HttpRole" in http["Role"]
        sqs = boto3.client("sqs", **aws)
        work = sqs.get_queue_url(QueueName=f"skyscore-{STAGE}-work")["QueueUrl"]
        dlq = sqs.get_queue_url(QueueName=f"skyscore-{STAGE}-work-dlq")["QueueUrl"]
        redrive = json.loads(
            sqs.get_queue_attributes(QueueUrl=work, AttributeNames=["RedrivePolicy"])["Attributes"][
                "RedrivePolicy"
            ]
        )
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        assert redrive == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3}
        [mapping] = [
            m
            for m in lam.list_event_source_mappings()["EventSourceMappings"]
            if m["FunctionArn"].endswith(f":function:skyscore-{STAGE}-score")
        ]
        assert mapping["EventSourceArn"].endswith(f":skyscore-{STAGE}-work")
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        events = boto3.client("events", **aws)
        schedules = [r for r in events.list_rules()["Rules"] if r.get("ScheduleExpression")]
        assert [r["ScheduleExpression"] for r in schedules] == ["rate(1 day)"]
        [target] = events.list_targets_by_rule(Rule=schedules[0]["Name"])["Targets"]
        assert target["Arn"].endswith(f":function:skyscore-{STAGE}-retrainSchedule")
        topics = boto3.client("sns", **aws).list_topics()["Topics"]
        assert [t["TopicArn"].rsplit(":", 1)[1] for t in topics] == [f"skyscore-{STAGE}-retrain"]
        buckets = [b["Name"] for b in boto3.client("s3", **aws).list_buckets()["Buckets"]]
        assert BUCKET in buckets
        env_vars = deployed[f"skyscore-{STAGE}-upload"]["Environment"]["Variables"]
        assert env_vars["SKYSCORE_WORK_QUEUE_URL"].endswith(f"/skyscore-{STAGE}-work")
    finally:
        serverless("remove", "--stage", STAGE, env=env)
    assert boto3.client("lambda", **aws).list_functions()["Functions"] == []
    assert not boto3.client("sqs", **aws).list_queues(QueueNamePrefix="skyscore-").get("QueueUrls")
    stacks = boto3.client("cloudformation", **aws).list_stacks()["StackSummaries"]
    assert [s["StackStatus"] for s in stacks] == ["DELETE_COMPLETE"]
    # the data bucket is retained on purpose (DeletionPolicy: Retain)
    assert BUCKET in [b["Name"] for b in boto3.client("s3", **aws).list_buckets()["Buckets"]]


def test_documented_local_invocation(emulator: str, demo_model: TrainResult) -> None:
    """The command in serverless.yml's header: `serverless invoke local` with a sample event."""
    aws = {
        "endpoint_url": emulator,
        "region_name": "us-east-1",
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
    }
    s3 = boto3.client("s3", **aws)
    s3.create_bucket(Bucket="skyscore-dev-us-east-1-data")
    registry = ModelRegistry(S3BlobStore("skyscore-dev-us-east-1-data", client=s3))
    card = registry.register(demo_model.card, demo_model.onnx_bytes, name="cancer")
    registry.promote("cancer", card.version)
    output = serverless(
        "invoke",
        "local",
        "--stage",
        "dev",
        "-f",
        "http",
        "-p",
        "events/aws/http-api-predict.json",
        env={
            "AWS_ENDPOINT_URL": emulator,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "POWERTOOLS_TRACE_DISABLED": "1",
        },
    )
    answer, _ = json.JSONDecoder().raw_decode(output[output.index('{\n    "statusCode"') :])
    assert answer["statusCode"] == 200, answer
    assert json.loads(answer["body"])["predictions"][0]["id"] == "P0000"


def test_glibc_check_sees_what_a_newer_wheel_needs() -> None:
    """The check above can fail: the dev venv's onnxruntime is a manylinux_2_28 wheel."""
    import onnxruntime

    needs = glibc_needed(Path(onnxruntime.__file__).parent)
    assert max(needs.values()) >= (2, 27), needs
