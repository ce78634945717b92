"""A scan of the packaged CloudFormation for what must never ship, plus cfn-lint on it.

The scan fails on a wildcard action in an Allow statement, a public bucket, an unauthenticated
route, a queue without a redrive policy, a function without reserved concurrency, an alarm
without an action and a bucket without a TLS-only policy. Each rule is shown to fire on a copy
of the real template with one such fault put in: a scan that finds nothing proves nothing
unless it can find something.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_aws_serverless import package_once

Template = dict[str, Any]


@pytest.fixture(scope="module")
def template() -> Template:
    loaded: Template = json.loads(
        (package_once() / "cloudformation-template-update-stack.json").read_text()
    )
    return loaded


def _listify(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _of_type(template: Template, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, resource in template.get("Resources", {}).items():
        if resource.get("Type") == kind:
            yield name, resource.get("Properties", {})


def _refers(node: Any, name: str) -> bool:
    """Whether a value is (or contains) a Ref/GetAtt of the resource ``name``."""
    if isinstance(node, list):
        return any(_refers(item, name) for item in node)
    if isinstance(node, dict):
        if node.get("Ref") == name or _listify(node.get("Fn::GetAtt", [None]))[0] == name:
            return True
        return any(_refers(value, name) for value in node.values())
    return False


def _policy_documents(template: Template) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, props in _of_type(template, "AWS::IAM::Role"):
        for policy in props.get("Policies", []):
            yield name, policy["PolicyDocument"]
    for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for name, props in _of_type(template, kind):
            yield name, props["PolicyDocument"]
    for kind in ("AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy", "AWS::SNS::TopicPolicy"):
        for name, props in _of_type(template, kind):
            yield name, props["PolicyDocument"]
    for name, props in _of_type(template, "AWS::KMS::Key"):
        yield name, props["KeyPolicy"]


def _account_root(principal: Any) -> bool:
    """A key policy's administrator statement names the account root (KMS requires it)."""
    aws = principal.get("AWS") if isinstance(principal, dict) else None
    return isinstance(aws, dict) and ":root" in str(aws.get("Fn::Sub", ""))


def wildcard_actions(template: Template) -> list[str]:
    found = []
    for name, document in _policy_documents(template):
        for statement in _listify(document.get("Statement", [])):
            if statement.get("Effect") != "Allow":
                continue
            if _account_root(statement.get("Principal")):
                continue
            actions = _listify(statement.get("Action", []))
            if any("*" in str(action) for action in actions) or "NotAction" in statement:
                found.append(f"{name}: wildcard action {actions}")
    return found


def public_buckets(template: Template) -> list[str]:
    found = []
    for name, props in _of_type(template, "AWS::S3::Bucket"):
        block = props.get("PublicAccessBlockConfiguration", {})
        flags = (
            "BlockPublicAcls",
            "BlockPublicPolicy",
            "IgnorePublicAcls",
            "RestrictPublicBuckets",
        )
        if not all(block.get(flag) is True for flag in flags):
            found.append(f"{name}: public access not blocked")
        if str(props.get("AccessControl", "Private")).startswith(("Public", "AuthenticatedRead")):
            found.append(f"{name}: public ACL")
    for name, props in _of_type(template, "AWS::S3::BucketPolicy"):
        for statement in _listify(props["PolicyDocument"].get("Statement", [])):
            principal = statement.get("Principal")
            if statement.get("Effect") == "Allow" and principal in ("*", {"AWS": "*"}):
                found.append(f"{name}: allows everyone")
    return found


def unauthenticated_routes(template: Template) -> list[str]:
    found = []
    for name, props in _of_type(template, "AWS::ApiGatewayV2::Route"):
        if props.get("AuthorizationType", "NONE") == "NONE":
            found.append(f"{name}: route {props.get('RouteKey')} without authorisation")
    for name, props in _of_type(template, "AWS::ApiGateway::Method"):
        if props.get("AuthorizationType", "NONE") == "NONE":
            found.append(f"{name}: method without authorisation")
    for name, props in _of_type(template, "AWS::Lambda::Url"):
        if props.get("AuthType") != "AWS_IAM":
            found.append(f"{name}: function URL without IAM")
    for name, props in _of_type(template, "AWS::Lambda::Permission"):
        if props.get("Principal") == "*":
            found.append(f"{name}: anyone may invoke")
    return found


def queues_without_redrive(template: Template) -> list[str]:
    """Every queue redrives to a dead-letter queue, unless it is itself where failures end up
    (a dead-letter queue or an asynchronous invocation's failure destination)."""
    resources = template.get("Resources", {})
    terminal: set[str] = set()
    for name, _ in _of_type(template, "AWS::SQS::Queue"):
        others = {k: v for k, v in resources.items() if k != name}
        targets = [
            q.get("Properties", {}).get("RedrivePolicy", {}).get("deadLetterTargetArn")
            for q in others.values()
            if q.get("Type") == "AWS::SQS::Queue"
        ] + [
            c.get("Properties", {}).get("DestinationConfig", {}).get("OnFailure", {})
            for c in others.values()
            if c.get("Type") == "AWS::Lambda::EventInvokeConfig"
        ]
        if _refers(targets, name):
            terminal.add(name)
    return [
        f"{name}: queue without a redrive policy"
        for name, props in _of_type(template, "AWS::SQS::Queue")
        if name not in terminal and not props.get("RedrivePolicy", {}).get("deadLetterTargetArn")
    ]


def functions_without_reserved_concurrency(template: Template) -> list[str]:
    return [
        f"{name}: no reserved concurrency"
        for name, props in _of_type(template, "AWS::Lambda::Function")
        if not isinstance(props.get("ReservedConcurrentExecutions"), int)
        or props["ReservedConcurrentExecutions"] < 1
    ]


def alarms_without_action(template: Template) -> list[str]:
    return [
        f"{name}: alarm without an action"
        for name, props in _of_type(template, "AWS::CloudWatch::Alarm")
        if not props.get("AlarmActions") or props.get("ActionsEnabled") is False
    ]


def buckets_without_tls_policy(template: Template) -> list[str]:
    def tls_only(statement: dict[str, Any]) -> bool:
        condition = statement.get("Condition", {}).get("Bool", {})
        return (
            statement.get("Effect") == "Deny"
            and statement.get("Principal") == "*"
            and "s3:*" in _listify(statement.get("Action"))
            and str(condition.get("aws:SecureTransport")).lower() == "false"
            and len(_listify(statement.get("Resource"))) == 2  # the bucket and its objects
        )

    policies = [props for _, props in _of_type(template, "AWS::S3::BucketPolicy")]
    found = []
    for name, props in _of_type(template, "AWS::S3::Bucket"):
        covered = any(
            (_refers(policy["Bucket"], name) or policy["Bucket"] == props.get("BucketName"))
            and any(tls_only(s) for s in _listify(policy["PolicyDocument"]["Statement"]))
            for policy in policies
        )
        if not covered:
            found.append(f"{name}: no TLS-only bucket policy")
    return found


RULES: dict[str, Callable[[Template], list[str]]] = {
    "wildcard action": wildcard_actions,
    "public bucket": public_buckets,
    "unauthenticated route": unauthenticated_routes,
    "queue without redrive": queues_without_redrive,
    "function without reserved concurrency": functions_without_reserved_concurrency,
    "alarm without an action": alarms_without_action,
    "bucket without TLS-only policy": buckets_without_tls_policy,
}


def scan(template: Template) -> list[str]:
    """Every finding of every rule."""
    return [finding for rule in RULES.values() for finding in rule(template)]


def test_packaged_template_has_no_findings(template: Template) -> None:
    assert scan(template) == []


def test_packaged_template_passes_cfn_lint() -> None:
    """Every cfn-lint rule, none ignored (moto validates templates with cfn-lint too)."""
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run(
        [str(cfn_lint), str(package_once() / "cloudformation-template-update-stack.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _first(template: Template, kind: str) -> dict[str, Any]:
    return next(props for _, props in _of_type(template, kind))


def _wildcard(t: Template) -> None:
    statement = _first(t, "AWS::IAM::Role")["Policies"][0]["PolicyDocument"]["Statement"][-1]
    statement["Action"] = ["s3:*"]


def _public_bucket(t: Template) -> None:
    t["Resources"]["DataBucket"]["Properties"]["PublicAccessBlockConfiguration"][
        "RestrictPublicBuckets"
    ] = False


def _open_route(t: Template) -> None:
    _first(t, "AWS::ApiGatewayV2::Route")["AuthorizationType"] = "NONE"


def _no_redrive(t: Template) -> None:
    t["Resources"]["StrayQueue"] = {"Type": "AWS::SQS::Queue", "Properties": {}}


def _unreserved(t: Template) -> None:
    del t["Resources"]["ScoreLambdaFunction"]["Properties"]["ReservedConcurrentExecutions"]


def _silent_alarm(t: Template) -> None:
    del t["Resources"]["DeadLetterAlarm"]["Properties"]["AlarmActions"]


def _no_tls(t: Template) -> None:
    del t["Resources"]["DataBucketPolicy"]


@pytest.mark.parametrize(
    ("rule", "fault", "culprit"),
    [
        ("wildcard action", _wildcard, "Role"),
        ("public bucket", _public_bucket, "DataBucket"),
        ("unauthenticated route", _open_route, "HttpApiRoute"),
        ("queue without redrive", _no_redrive, "StrayQueue"),
        ("function without reserved concurrency", _unreserved, "ScoreLambdaFunction"),
        ("alarm without an action", _silent_alarm, "DeadLetterAlarm"),
        ("bucket without TLS-only policy", _no_tls, "DataBucket"),
    ],
)
def test_each_rule_finds_its_fault(
    template: Template, rule: str, fault: Callable[[Template], None], culprit: str
) -> None:
    broken = copy.deepcopy(template)
    fault(broken)
    findings = RULES[rule](broken)
    assert findings and all(culprit in finding for finding in findings), findings
    assert set(scan(broken)) == set(findings)  # the other rules still find nothing
