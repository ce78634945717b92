"""serverless.yml for real: `serverless package` offline with the pinned open-source Framework
(osls, npm ci), cfn-lint on the compiled CloudFormation, checks of what moto would silently skip
(routes, EventBridge rules, alarms, subscriptions, IAM), the zip itself imported in a clean
interpreter with ONNX parity against scikit-learn, and `serverless deploy` to moto server,
`serverless remove`, and a second deploy onto the retained bucket.

Nothing here skips: without node_modules (``npm ci``, which ``make test`` runs) the tests fail.
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from aws_moto import moto_server, reset
from aws_package import LAMBDA_GLIBC, glibc_needed
from skyscore.adapters.aws import S3BlobStore
from skyscore.batch.pipeline import score_stream
from skyscore.model.card import card_to_json
from skyscore.model.predictor import Predictor
from skyscore.model.registry import ModelRegistry
from skyscore.training.datasets import DEMO_ID
from skyscore.training.train import TrainResult

ROOT = Path(__file__).resolve().parents[3]
SERVERLESS = ROOT / "node_modules" / ".bin" / "serverless"
STAGE = "local"
ACCOUNT, REGION = "123456789012", "us-east-1"  # moto's account
BUCKET_SUB = {"Fn::Sub": "skyscore-local-${AWS::AccountId}-${AWS::Region}"}
BUCKET = f"skyscore-local-{ACCOUNT}-{REGION}"  # what CloudFormation makes of it in moto
# The scoring image by digest: packaging needs neither Docker nor an ECR call.
SCORING_IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/serverless-skyscore-local@sha256:" + (
    "0" * 64
)
FUNCTIONS = ("http", "upload", "score", "retrainSchedule", "retrainAlarm", "jobCompleted")
UNZIPPED_LIMIT = 250 * 1024 * 1024  # Lambda's limit for a zip package, layers included
HEADROOM = 0.8  # the package must leave a fifth of it free
PARITY = 1e-4  # ONNX against scikit-learn, per probability
ZIP_FUNCTIONS = ("http", "retrainSchedule", "retrainAlarm")
IMAGE_FUNCTIONS = ("upload", "score", "jobCompleted")
# Write actions that IAM cannot scope to a resource; everything else names its resources.
UNSCOPABLE = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "sagemaker:ListTrainingJobs",
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
}


def serverless(
    *args: str, env: dict[str, str] | None = None, timeout: int = 300, cwd: Path = ROOT
) -> str:
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
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"serverless {' '.join(args)} failed:\n{output[-4000:]}"
    return output


@functools.cache
def package_once() -> Path:
    """`serverless package --stage local` into a temporary directory, once per test process
    (test_aws_template scans the same output)."""
    target = Path(tempfile.mkdtemp(prefix="skyscore-serverless-")) / "package"
    serverless(
        "package",
        "--stage",
        STAGE,
        "--package",
        str(target),
        f"--param=scoringImageUri={SCORING_IMAGE}",
    )
    return target


@pytest.fixture(scope="session")
def packaged() -> Path:
    """The packaged service (zip + CloudFormation)."""
    return package_once()


@pytest.fixture(scope="session")
def template(packaged: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (packaged / "cloudformation-template-update-stack.json").read_text()
    )
    return loaded


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def test_http_route_requires_iam_and_is_throttled_and_logged(template: dict[str, Any]) -> None:
    routes = resources(template, "AWS::ApiGatewayV2::Route")
    assert [r["Properties"]["RouteKey"] for r in routes.values()] == ["ANY /{proxy+}"]
    assert all(r["Properties"]["AuthorizationType"] == "AWS_IAM" for r in routes.values())
    assert not resources(template, "AWS::Lambda::Url")  # no way around the API's limits
    integration = next(iter(resources(template, "AWS::ApiGatewayV2::Integration").values()))
    assert integration["Properties"]["PayloadFormatVersion"] == "2.0"
    [stage] = resources(template, "AWS::ApiGatewayV2::Stage").values()
    settings = stage["Properties"]["DefaultRouteSettings"]
    assert settings["ThrottlingRateLimit"] > 0 and settings["ThrottlingBurstLimit"] > 0
    access = stage["Properties"]["AccessLogSettings"]
    assert access["DestinationArn"] == {"Fn::GetAtt": ["HttpApiLogGroup", "Arn"]}
    assert "$context.requestId" in access["Format"] and "$context.status" in access["Format"]


def test_bucket_events_go_through_eventbridge(template: dict[str, Any]) -> None:
    """No notification ties the bucket to a function: a retained bucket serves the next stack."""
    bucket = template["Resources"]["DataBucket"]
    props = bucket["Properties"]
    assert props["BucketName"] == BUCKET_SUB
    assert bucket["DeletionPolicy"] == "Retain" and bucket["Condition"] == "CreateDataBucket"
    assert props["NotificationConfiguration"] == {
        "EventBridgeConfiguration": {"EventBridgeEnabled": True}
    }
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = {r["Id"]: r for r in props["LifecycleConfiguration"]["Rules"]}
    assert rules["AbortIncompleteMultipartUploads"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 1
    }
    assert rules["ExpirePredictionsAndReports"]["Prefix"] == "predictions/"
    assert rules["ExpirePredictionsAndReports"]["ExpirationInDays"] == 90
    assert rules["ExpireWork"]["Prefix"] == "work/"
    targets = {
        r["Properties"]["Targets"][0]["Arn"]["Fn::GetAtt"][0]: r["Properties"]
        for r in resources(template, "AWS::Events::Rule").values()
        if r["Properties"].get("EventPattern", {}).get("source") == ["aws.s3"]
    }
    upload = targets["UploadLambdaFunction"]
    assert upload["State"] == "ENABLED"
    detail = upload["EventPattern"]["detail"]
    assert detail == {
        "bucket": {"name": [BUCKET_SUB]},
        "object": {"key": [{"prefix": "incoming/"}]},
    }
    staged = targets["JobCompletedLambdaFunction"]["EventPattern"]["detail"]
    assert staged["object"]["key"] == [{"wildcard": "staging/*model.tar.gz"}]


def test_tls_only_bucket_policy(template: dict[str, Any]) -> None:
    policy = template["Resources"]["DataBucketPolicy"]
    assert policy["Properties"]["Bucket"] == BUCKET_SUB
    assert "Condition" not in policy  # also on a retained bucket
    [deny] = policy["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Action"] == "s3:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    subs = [r["Fn::Sub"] for r in deny["Resource"]]
    assert [s.rsplit(":::", 1)[1] for s in subs] == [
        BUCKET_SUB["Fn::Sub"],
        BUCKET_SUB["Fn::Sub"] + "/*",
    ]


def test_work_queue_redrive_and_event_source(template: dict[str, Any]) -> None:
    queue = template["Resources"]["WorkQueue"]["Properties"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["WorkDeadLetterQueue", "Arn"]},
        "maxReceiveCount": 5,
    }
    score = template["Resources"]["ScoreLambdaFunction"]["Properties"]
    assert queue["VisibilityTimeout"] == 6 * score["Timeout"] <= 1800  # about 6x, not 90 minutes
    [mapping] = resources(template, "AWS::Lambda::EventSourceMapping").values()
    props = mapping["Properties"]
    assert props["EventSourceArn"] == {"Fn::GetAtt": ["WorkQueue", "Arn"]}
    assert props["FunctionName"] == {"Fn::GetAtt": ["ScoreLambdaFunction", "Arn"]}
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # pollers never exceed the function's reserve (SQS would retry throttled messages into the DLQ)
    maximum = props["ScalingConfig"]["MaximumConcurrency"]
    assert 2 <= maximum <= score["ReservedConcurrentExecutions"]
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
    targets: dict[str, list[dict[str, Any]]] = {}
    for rule in rules.values():
        name = rule["Properties"]["Targets"][0]["Arn"]["Fn::GetAtt"][0]
        targets.setdefault(name, []).append(rule["Properties"])
    [schedule] = targets["RetrainScheduleLambdaFunction"]
    assert schedule["ScheduleExpression"] == "rate(1 day)" and schedule["State"] == "ENABLED"
    sagemaker = next(
        r["EventPattern"]
        for r in targets["JobCompletedLambdaFunction"]
        if r["EventPattern"]["source"] == ["aws.sagemaker"]
    )
    assert sagemaker["detail-type"] == ["SageMaker Training Job State Change"]
    assert sagemaker["detail"]["TrainingJobStatus"] == ["Completed", "Failed", "Stopped"]
    # alarms reach the retrain function only through the retrain topic, which only the
    # configured retraining alarms publish to: no rule matches every alarm of the stage
    assert "RetrainAlarmLambdaFunction" not in targets
    [subscription] = [
        s
        for s in resources(template, "AWS::SNS::Subscription").values()
        if s["Properties"]["Protocol"] == "lambda"
    ]
    assert subscription["Properties"]["TopicArn"] == {"Ref": "RetrainTopic"}
    assert subscription["Properties"]["Endpoint"] == {
        "Fn::GetAtt": ["RetrainAlarmLambdaFunction", "Arn"]
    }
    permissions = resources(template, "AWS::Lambda::Permission").values()
    assert any(p["Properties"]["Principal"] == "sns.amazonaws.com" for p in permissions)


def test_operational_alarms_page_people(template: dict[str, Any]) -> None:
    """Failed events, dead letters, errors, throttles: the ops topic with an email subscription
    (a deploy parameter); never the retrain topic, and the core's table calls them operational."""
    from skyscore.runtime.alarms import AlarmTable
    from skyscore.runtime.events import AlarmSignal

    [email] = [
        s
        for s in resources(template, "AWS::SNS::Subscription").values()
        if s["Properties"]["Protocol"] == "email"
    ]
    assert email["Condition"] == "HasAlarmEmail"
    assert email["Properties"] == {
        "TopicArn": {"Ref": "OpsTopic"},
        "Protocol": "email",
        "Endpoint": {"Ref": "AlarmEmail"},
    }
    assert template["Parameters"]["AlarmEmail"]["Default"] == ""
    for topic in ("OpsTopic", "RetrainTopic"):  # CloudWatch needs a key it may use
        key = template["Resources"][topic]["Properties"]["KmsMasterKeyId"]
        assert key == {"Ref": "AlarmTopicKey"}
    statements = template["Resources"]["AlarmTopicKey"]["Properties"]["KeyPolicy"]["Statement"]
    assert any(s["Principal"] == {"Service": "cloudwatch.amazonaws.com"} for s in statements)
    functions = resources(template, "AWS::Lambda::Function")
    variables = functions["RetrainAlarmLambdaFunction"]["Properties"]["Environment"]["Variables"]
    table = AlarmTable.parse(variables["SKYSCORE_RETRAIN_ALARMS"])
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    operational = {
        "FailedEventsAlarm",
        "DeadLetterAlarm",
        "FunctionErrorsAlarm",
        "FunctionThrottlesAlarm",
        "ApiServerErrorsAlarm",
    }
    assert operational < set(alarms)
    watched = {
        m["MetricStat"]["Metric"]["MetricName"]
        for name in ("FunctionErrorsAlarm", "FunctionThrottlesAlarm")
        for m in alarms[name]["Properties"]["Metrics"]
        if "MetricStat" in m
    }
    assert watched == {"Errors", "Throttles"}
    for name, alarm in alarms.items():
        props = alarm["Properties"]
        signal = AlarmSignal(
            name=props["AlarmName"],
            firing=True,
            model=None,
            changed_at="",
            reason="",
            description=props.get("AlarmDescription", ""),
        )
        if name in operational:
            assert props["AlarmActions"] == [{"Ref": "OpsTopic"}], name
            assert table.classify(signal) == "operational", name
        else:
            assert props["AlarmActions"] == [{"Ref": "RetrainTopic"}, {"Ref": "OpsTopic"}], name
            assert table.kinds[props["AlarmName"]] == table.classify(signal) != "operational"
    assert len(table.kinds) == len(alarms) - len(operational)


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
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    for name, metric in (("DriftAlarm", "max_psi"), ("PredictionDriftAlarm", "prediction_psi")):
        props = alarms[name]["Properties"]
        assert {"Ref": "RetrainTopic"} in props["AlarmActions"]
        [query] = props["Metrics"]
        expression = query["Expression"]
        # the whole namespace, whatever the dimension set (batches and HTTP windows differ)
        assert metric in emitted
        assert expression == f"SELECT MAX({metric}) FROM skyscore WHERE model = 'cancer'"
        assert props["Threshold"] == PSI_ALARM
        assert "model=cancer" in props["AlarmDescription"]
    errors = alarms["ErrorRateAlarm"]["Properties"]
    assert {"Ref": "RetrainTopic"} in errors["AlarmActions"]
    assert "alarm=error_rate" in errors["AlarmDescription"]
    watched = {
        m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"]
        for m in errors["Metrics"]
        if "MetricStat" in m
    }
    assert watched == {"HttpLambdaFunction", "UploadLambdaFunction", "ScoreLambdaFunction"}


def test_http_traffic_drift_reaches_the_drift_alarm_as_emf(
    template: dict[str, Any], cancer: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """HTTP-only deployments: a warm container's window of live traffic is written as EMF on
    stdout (CloudWatch Logs turns it into metrics) and the drift alarm's query selects it."""
    from aws_moto import LambdaContext, sample_event
    from functions.aws import common, http

    event = sample_event("http-api-predict.json")
    body = json.loads(event["body"])
    body["instances"] = body["instances"] * 40
    event["body"] = json.dumps(body)
    for _ in range(4):
        assert http.handler(event, LambdaContext())["statusCode"] == 200
    the_core = common.core()
    the_core._online_published -= 61  # a minute later
    capsys.readouterr()
    assert http.handler(event, LambdaContext())["statusCode"] == 200
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    [record] = [r for r in lines if "max_psi" in r and r.get("source") == "http"]
    [directive] = record["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "skyscore"
    assert {m["Name"] for m in directive["Metrics"]} >= {"max_psi", "prediction_psi"}
    assert record["model"] == "cancer" and "model" in directive["Dimensions"][0]
    query = template["Resources"]["DriftAlarm"]["Properties"]["Metrics"][0]["Expression"]
    namespace = query.split(" FROM ", 1)[1].split()[0]
    assert namespace == directive["Namespace"]
    assert f"model = '{record['model']}'" in query


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
    bucket = "arn:${AWS::Partition}:s3:::" + BUCKET_SUB["Fn::Sub"]

    def text(resource: Any) -> Any:
        return (
            resource["Fn::Sub"]
            if isinstance(resource, dict) and "Fn::Sub" in resource
            else resource
        )

    for name, role in roles.items():
        for statement in statements(role):
            actions = listify(statement["Action"])
            assert all("*" not in action for action in actions), (name, statement)
            for resource in map(text, listify(statement["Resource"])):
                if resource == "*":
                    assert set(actions) <= UNSCOPABLE, (name, statement)
                elif isinstance(resource, str) and ":s3:::" in resource:
                    assert resource == bucket or resource.startswith(bucket + "/"), resource
                    assert resource != bucket + "/*", (name, "a whole bucket")

    def s3_grants(role: str) -> dict[str, set[str]]:
        grants: dict[str, set[str]] = {}
        for statement in statements(roles[role]):
            for action in listify(statement["Action"]):
                if action.startswith("s3:"):
                    for resource in listify(statement["Resource"]):
                        grants.setdefault(action, set()).add(text(resource).removeprefix(bucket))
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
    # SageMaker streams the job's logs with the training role; it pulls from the deploy's repository
    training_logs = next(
        s for s in statements(roles["SageMakerTrainingRole"]) if s.get("Sid") == "TrainingLogs"
    )
    assert set(training_logs["Action"]) == {
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "logs:DescribeLogStreams",
    }
    pull = next(
        s for s in statements(roles["SageMakerTrainingRole"]) if s.get("Sid") == "PullTrainingImage"
    )
    assert pull["Resource"] == [{"Fn::GetAtt": ["TrainingImageRepository", "Arn"]}]
    assert not any(
        a.startswith("sqs:Rec")
        for s in statements(roles["ScoringRole"])
        for a in listify(s["Action"])
    )


def test_functions_config(template: dict[str, Any]) -> None:
    functions = resources(template, "AWS::Lambda::Function")
    assert len(functions) == len(FUNCTIONS)
    for name, function in functions.items():
        props = function["Properties"]
        assert props["Architectures"] == ["x86_64"]
        assert props["TracingConfig"] == {"Mode": "Active"}
        assert props["Environment"]["Variables"]["SKYSCORE_BUCKET"] == BUCKET
        assert props["ReservedConcurrentExecutions"] >= 1, name
        if name.removesuffix("LambdaFunction").lower() in {f.lower() for f in ZIP_FUNCTIONS}:
            assert props["Runtime"] == "python3.13" and "PackageType" not in props, name
        else:  # the scoring image (python3.13 base): pyarrow
            assert props["PackageType"] == "Image" and "Runtime" not in props, name
            assert props["Code"] == {"ImageUri": SCORING_IMAGE}
            [command] = props["ImageConfig"]["Command"]
            assert command.startswith("functions.aws.") and command.endswith(("handler", "event"))
    retrain = functions["RetrainScheduleLambdaFunction"]["Properties"]["Environment"]["Variables"]
    # CPU for scikit-learn, the GPU type only for a GPU estimator (skyscore.lifecycle.hardware)
    assert retrain["SKYSCORE_TRAINING_CPU_INSTANCE_TYPE"] == "ml.m5.large"
    assert retrain["SKYSCORE_TRAINING_GPU_INSTANCE_TYPE"] == "ml.g5.xlarge"
    assert retrain["SKYSCORE_SAGEMAKER_ROLE_ARN"] == {
        "Fn::GetAtt": ["SageMakerTrainingRole", "Arn"]
    }
    # the repository the deploy creates; the account id comes from CloudFormation
    image = retrain["SKYSCORE_TRAINING_IMAGE_URI"]["Fn::Sub"]
    assert image.startswith("${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}/")
    assert "${TrainingImageRepository}:" in image and "123456789012" not in image
    repository = template["Resources"]["TrainingImageRepository"]
    assert repository["Properties"]["RepositoryName"] == f"skyscore-{STAGE}-train"
    from skyscore.adapters.aws import SageMakerJobRunner
    from skyscore.ports import JobSpec

    runner = SageMakerJobRunner(
        "arn:aws:iam::1:role/r",
        "image",
        instance_type=retrain["SKYSCORE_TRAINING_CPU_INSTANCE_TYPE"],
        gpu_instance_type=retrain["SKYSCORE_TRAINING_GPU_INSTANCE_TYPE"],
    )

    def spec(estimator: str) -> JobSpec:
        return JobSpec("m", "s3://b/t/", "s3://b/s/", "y", estimator=estimator)

    assert runner.instance_type_for(spec("logreg")) == "ml.m5.large"
    assert runner.instance_type_for(spec("hgb")) == "ml.m5.large"
    assert runner.instance_type_for(spec("xgboost")) == "ml.g5.xlarge"


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
    assert "functions/aws/http.py" in names and "skyscore/batch/scorer.py" in names
    assert not any(
        name.startswith(("tests/", "node_modules/", ".venv/", "shared/")) for name in names
    )
    assert unzipped < UNZIPPED_LIMIT * HEADROOM, f"{unzipped / 2**20:.0f} MiB unzipped"
    needs = glibc_needed(tmp_path / "task")
    assert len(needs) >= 10, "the package holds no compiled libraries: nothing was checked"
    too_new = {path: version for path, version in needs.items() if version > LAMBDA_GLIBC}
    assert not too_new, (
        f"need a newer glibc than Lambda python3.13's (AL2023) {LAMBDA_GLIBC}: {too_new}"
    )
    print(
        f"package ({', '.join(ZIP_FUNCTIONS)}): {archive.stat().st_size / 2**20:.1f} MiB zipped,"
        f" {unzipped / 2**20:.1f} MiB unzipped, {unzipped / UNZIPPED_LIMIT:.0%} of the limit"
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
    # the package's onnxruntime against scikit-learn on every scored row
    import pandas as pd

    frame = pd.read_csv(data_dir / "breast_cancer.csv").drop(columns=["diagnosis", DEMO_ID])
    expected = demo_model.pipeline.predict_proba(frame)
    out = pd.read_csv(io.StringIO(answer["output"]))
    got = out[[f"probability_{c}" for c in demo_model.pipeline.classes_]].to_numpy()
    worst = float(abs(got - expected[out["row"].to_numpy() - 1]).max())
    assert worst <= PARITY, worst
    print(f"ONNX parity (package onnxruntime vs scikit-learn): max |diff| {worst:.2e}")
    assert answer["numpy"].startswith(str(tmp_path / "task"))
    assert answer["onnxruntime"].startswith(str(tmp_path / "task"))


@pytest.fixture
def emulator() -> Iterator[str]:
    """A moto server with nothing in it (moto keeps one state per process: reset it)."""
    with moto_server() as url:
        reset(url)
        yield url
        reset(url)


def deploy_environment(emulator: str) -> dict[str, str]:
    """osls reaches the emulator through the SDK's AWS_ENDPOINT_URL (an IP address, so S3 is
    addressed path-style)."""
    return {"AWS_ENDPOINT_URL": emulator}


def service_with(package: Path, where: Path) -> Path:
    """A service directory whose `.serverless/` is ``package``: osls's deploy reads the state
    file from there whatever --package says."""
    where.mkdir()
    shutil.copy(ROOT / "serverless.yml", where)  # osls wants the file itself, not a link
    for name in ("package.json", "node_modules", "functions", "shared", "infra"):
        (where / name).symlink_to(ROOT / name)
    shutil.copytree(package, where / ".serverless")
    return where


def assert_deployed(aws: dict[str, str]) -> None:
    lam = boto3.client("lambda", **aws)
    deployed = {f["FunctionName"]: f for f in lam.list_functions()["Functions"]}
    assert set(deployed) == {f"skyscore-{STAGE}-{name}" for name in FUNCTIONS}
    http = deployed[f"skyscore-{STAGE}-http"]
    assert http["Runtime"] == "python3.13" and http["Handler"] == "functions/aws/http.handler"
    assert ":role/skyscore-local-HttpRole" in http["Role"]
    env_vars = deployed[f"skyscore-{STAGE}-upload"]["Environment"]["Variables"]
    assert env_vars["SKYSCORE_WORK_QUEUE_URL"].endswith(f"/skyscore-{STAGE}-work")
    assert env_vars["SKYSCORE_BUCKET"] == BUCKET
    assert BUCKET in [b["Name"] for b in boto3.client("s3", **aws).list_buckets()["Buckets"]]


@pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning")
def test_deploy_remove_and_deploy_again_on_moto(
    packaged: Path, emulator: str, tmp_path: Path
) -> None:
    env = deploy_environment(emulator)
    aws = {
        "endpoint_url": emulator,
        "region_name": REGION,
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
    }
    first = service_with(packaged, tmp_path / "first")
    serverless("deploy", "--stage", STAGE, "--package", ".serverless", env=env, cwd=first)
    try:
        assert_deployed(aws)
        lam = boto3.client("lambda", **aws)
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
        assert redrive == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}
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
        assert sorted(t["TopicArn"].rsplit(":", 1)[1] for t in topics) == [
            f"skyscore-{STAGE}-ops",
            f"skyscore-{STAGE}-retrain",
        ]
        repositories = boto3.client("ecr", **aws).describe_repositories()["repositories"]
        assert [r["repositoryName"] for r in repositories] == [f"skyscore-{STAGE}-train"]
    finally:
        serverless("remove", "--stage", STAGE, env=env, cwd=first)
    assert boto3.client("lambda", **aws).list_functions()["Functions"] == []
    assert not boto3.client("sqs", **aws).list_queues(QueueNamePrefix="skyscore-").get("QueueUrls")
    stacks = boto3.client("cloudformation", **aws).list_stacks()["StackSummaries"]
    assert [s["StackStatus"] for s in stacks] == ["DELETE_COMPLETE"]
    # the data bucket is retained on purpose (DeletionPolicy: Retain) ...
    assert BUCKET in [b["Name"] for b in boto3.client("s3", **aws).list_buckets()["Buckets"]]
    # ... and a second deploy uses it: --param="createBucket=false" is the template parameter's
    # default (the packaged copy says so; packaging again would only take longer)
    again = service_with(packaged, tmp_path / "again")
    compiled = again / ".serverless" / "cloudformation-template-update-stack.json"
    body = json.loads(compiled.read_text())
    assert body["Parameters"]["CreateBucket"]["Default"] == "true"
    body["Parameters"]["CreateBucket"]["Default"] = "false"
    compiled.write_text(json.dumps(body))
    state_file = again / ".serverless" / "serverless-state.json"
    state = json.loads(state_file.read_text())
    state["service"]["provider"]["compiledCloudFormationTemplate"] = body
    state_file.write_text(json.dumps(state))
    serverless("deploy", "--stage", STAGE, "--package", ".serverless", env=env, cwd=again)
    try:
        assert_deployed(aws)
    finally:
        serverless("remove", "--stage", STAGE, env=env, cwd=again)


def test_documented_local_invocation(emulator: str, demo_model: TrainResult) -> None:
    """The command in serverless.yml's header: `serverless invoke local` with a sample event."""
    aws = {
        "endpoint_url": emulator,
        "region_name": "us-east-1",
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
    }
    s3 = boto3.client("s3", **aws)
    s3.create_bucket(Bucket=BUCKET)
    registry = ModelRegistry(S3BlobStore(BUCKET, client=s3))
    card = registry.register(demo_model.card, demo_model.onnx_bytes, name="cancer")
    registry.promote("cancer", card.version)
    output = serverless(
        "invoke",
        "local",
        "--stage",
        STAGE,
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
    """The check above can fail: the dev venv's onnxruntime needs glibc 2.27 or newer."""
    import onnxruntime

    needs = glibc_needed(Path(onnxruntime.__file__).parent)
    assert max(needs.values()) >= (2, 27), needs


@pytest.mark.parametrize(
    "key", ["incoming/a+b.csv", "incoming/100% sure.csv", "incoming/x%2By.csv"]
)
def test_eventbridge_and_notification_keys_decode_alike(key: str) -> None:
    """Uploads now arrive through EventBridge (the rules above); its object keys are URL-encoded
    like S3 notifications' (`+` for a space, `%2B` for a plus) and Powertools decodes them."""
    from urllib.parse import quote_plus

    from functions.aws.events import objects_created

    from aws_moto import reference_event

    encoded = quote_plus(key, safe="/")
    bridge = reference_event("s3-eventbridge-object-created.json")
    bridge["detail"]["object"]["key"] = encoded
    notification = reference_event("s3-object-created-put.json")
    notification["Records"][0]["s3"]["object"]["key"] = encoded
    [via_bridge] = objects_created(bridge)
    [via_notification] = objects_created(notification)
    assert via_bridge.name == via_notification.name == key
