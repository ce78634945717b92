"""moto in server mode for the AWS tests: real boto3 over HTTP, pointed at it by AWS_ENDPOINT_URL.

The product code has no test hooks: boto3 reads ``AWS_ENDPOINT_URL`` itself. moto must be
installed (it is in the ``dev`` extra); a missing moto fails the tests, it never skips them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moto.server import ThreadedMotoServer

REGION = "us-east-1"
ACCOUNT = "123456789012"
REFERENCE_EVENTS = Path(__file__).resolve().parent / "reference-events" / "aws"
SAMPLE_EVENTS = Path(__file__).resolve().parents[1] / "events" / "aws"
ROOT = Path(__file__).resolve().parents[1]
# the work queue's redrive policy in the handler tests
MAX_RECEIVES = 2


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on a free port of 127.0.0.1; yields its URL."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def reset(url: str) -> None:
    """Forget every resource (between tests)."""
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def environment(url: str, tmp: Path) -> dict[str, str]:
    """Dummy credentials and the endpoint; no shared config file can leak real settings in."""
    empty = tmp / "aws-config"
    empty.write_text("")
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_SESSION_TOKEN": "test",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": str(empty),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "skyscore",
        "POWERTOOLS_SERVICE_NAME": "skyscore",
    }


def reference_event(name: str) -> dict[str, Any]:
    """A verbatim public payload from ``shared/reference-events/aws``."""
    loaded: dict[str, Any] = json.loads((REFERENCE_EVENTS / name).read_text())
    return loaded


def sample_event(name: str) -> dict[str, Any]:
    """One of the project's sample events in ``events/aws``."""
    loaded: dict[str, Any] = json.loads((SAMPLE_EVENTS / name).read_text())
    return loaded


@dataclass
class Aws:
    """Clients and names of one test's emulated account."""

    url: str
    s3: Any
    sqs: Any
    bucket: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    store: Any  # S3BlobStore

    def registry(self) -> Any:
        """A registry over the bucket, re-reading aliases on every call (as after 5 s)."""
        from skyscore.model.registry import ModelRegistry

        return ModelRegistry(self.store, refresh_seconds=0)


@dataclass
class LambdaContext:
    """What the Lambda runtime passes as ``context`` (the fields Powertools reads)."""

    function_name: str = "skyscore-test"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 1769
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:skyscore-test"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/skyscore-test"
    log_stream_name: str = "test"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The Lambda SQS event for messages received with boto3 (what the event source mapping
    builds from the same ReceiveMessage answer)."""
    records = []
    for message in messages:
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": dict(message.get("Attributes", {})),
                "messageAttributes": {
                    name: {
                        "stringValue": value.get("StringValue"),
                        "dataType": value.get("DataType", "String"),
                    }
                    for name, value in message.get("MessageAttributes", {}).items()
                },
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
        )
    return {"Records": records}


def sns_event(envelope: dict[str, Any], subscription_arn: str) -> dict[str, Any]:
    """The Lambda SNS event for an SNS envelope delivered to an SQS subscriber (same fields;
    Lambda spells two URL keys differently)."""
    sns = dict(envelope)
    sns["SigningCertUrl"] = sns.pop("SigningCertURL", "")
    sns["UnsubscribeUrl"] = sns.pop("UnsubscribeURL", "")
    sns.setdefault("MessageAttributes", {})
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": subscription_arn,
                "Sns": sns,
            }
        ]
    }


def drain(sqs: Any, url: str, *, wait: float = 0.0, visibility: int = 30) -> list[dict[str, Any]]:
    """Every message now visible in a queue (received, not deleted)."""
    out: list[dict[str, Any]] = []
    while True:
        answer = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=int(wait),
            VisibilityTimeout=visibility,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        batch = answer.get("Messages", [])
        if not batch:
            return out
        out.extend(batch)


def set_environment(values: dict[str, str]) -> dict[str, str | None]:
    """Set variables; returns the previous values for :func:`restore_environment`."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    return previous


def restore_environment(previous: dict[str, str | None]) -> None:
    """Undo :func:`set_environment`."""
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
