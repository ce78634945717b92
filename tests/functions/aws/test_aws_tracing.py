"""X-Ray tracing: the upload and retraining handlers are traced, the HTTP handler never loads the
X-Ray SDK (its cold start stays short).

Every other test runs with tracing off (``POWERTOOLS_TRACE_DISABLED=true``, see ``conftest.py``).
Here, one child process runs the handlers as the Lambda runtime would with active tracing: a
trace header in the environment and a UDP socket of ours as the X-Ray daemon, so the test
reads the very documents the SDK sends.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from typing import Any

from aws_moto import ROOT, Aws, sample_event
from skyscore.model.registry import ModelRegistry

IMPORTS = textwrap.dedent(
    """
    import json, sys
    loaded = lambda: any(name.split(".")[0] == "aws_xray_sdk" for name in sys.modules)
    from functions.aws import http  # noqa: F401
    after_http = loaded()
    from functions.aws import upload  # noqa: F401
    print(json.dumps({"http": after_http, "upload": loaded()}))
    """
)


def child_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    env.update(extra)
    return env


def test_the_http_handler_does_not_import_the_xray_sdk() -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS],
        cwd=ROOT,
        env=child_env(SKYSCORE_BUCKET="unused", POWERTOOLS_TRACE_DISABLED="true"),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    # the second import shows the check sees the SDK when it is loaded
    assert loaded == {"http": False, "upload": True}


TRACED = textwrap.dedent(
    """
    import json, sys
    from functions.aws import retrain, upload

    class Context:
        function_name = "skyscore-test"
        function_version = "$LATEST"
        memory_limit_in_mb = 1769
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:skyscore-test"
        aws_request_id = "traced-request"
        log_group_name = "/aws/lambda/skyscore-test"
        log_stream_name = "test"

        def get_remaining_time_in_millis(self):
            return 900_000

    event = json.loads(sys.argv[1])
    print(json.dumps({"upload": upload.handler(event, Context()),
                      "scheduled": retrain.scheduled({"id": "tick"}, Context())}))
    """
)
TRACE_ID = "1-5759e988-bd862e3fe1be46a994272793"


def received(daemon: socket.socket) -> list[dict[str, Any]]:
    """Every segment document the SDK sent (``header\\ndocument`` per datagram)."""
    documents = []
    daemon.settimeout(1.0)
    while True:
        try:
            data = daemon.recv(1 << 16)
        except TimeoutError:
            return documents
        header, _, body = data.partition(b"\n")
        assert json.loads(header) == {"format": "json", "version": 1}
        documents.append(json.loads(body))


def test_upload_and_retraining_handlers_are_traced(aws: Aws, cancer: ModelRegistry) -> None:
    key = "incoming/cancer/traced.jsonl"
    body = json.loads(sample_event("sqs-work.json")["Records"][0]["body"])["instances"][0]
    aws.s3.put_object(Bucket=aws.bucket, Key=key, Body=(json.dumps(body) + "\n").encode())
    event = sample_event("s3-object-created.json")
    event["Records"][0]["s3"]["bucket"]["name"] = aws.bucket
    event["Records"][0]["s3"]["object"].update(key=key, eTag=None)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as daemon:
        daemon.bind(("127.0.0.1", 0))
        port = daemon.getsockname()[1]
        env = child_env(
            LAMBDA_TASK_ROOT=str(ROOT),  # what makes Powertools and the SDK trace "in Lambda"
            AWS_LAMBDA_FUNCTION_NAME="skyscore-test",
            _X_AMZN_TRACE_ID=f"Root={TRACE_ID};Parent=53995c3f42cd8ad8;Sampled=1",
            AWS_XRAY_DAEMON_ADDRESS=f"127.0.0.1:{port}",
        )
        env.pop("POWERTOOLS_TRACE_DISABLED")
        result = subprocess.run(
            [sys.executable, "-c", TRACED, json.dumps(event)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        documents = received(daemon)
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert [r["status"] for r in answer["upload"]["results"]] == ["scored"]
    assert [d["action"] for d in answer["scheduled"]["decisions"]] == ["skipped"]
    assert {d["trace_id"] for d in documents} == {TRACE_ID}
    by_name: dict[str, list[dict[str, Any]]] = {}
    for document in documents:  # Powertools names method subsegments "## module.function"
        by_name.setdefault(document["name"].rpartition(".")[2], []).append(document)
    [upload_handler] = by_name["## handler"]
    assert upload_handler["annotations"]["Service"] == "skyscore"
    [scored] = by_name["score"]
    assert scored["annotations"] == {"status": "scored"}
    assert "metadata" not in scored  # no manifest in the trace
    [scheduled] = by_name["## scheduled"]
    # botocore is patched: the core's S3 and SageMaker calls appear under the traced calls
    calls = [d for d in documents if d.get("namespace") == "aws"]
    under_upload = {d["aws"]["operation"] for d in calls if d["parent_id"] == scored["id"]}
    assert {"HeadObject", "GetObject", "PutObject"} <= under_upload, under_upload
    under_tick = {d["aws"]["operation"] for d in calls if d["parent_id"] == scheduled["id"]}
    assert "ListObjectsV2" in under_tick and "ListTrainingJobs" in under_tick, under_tick
