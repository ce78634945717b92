"""infra/gcp, checked offline: ``terraform fmt -check``, checkov with no failed check and a
reason for every skip, and the wiring between the Terraform and the functions (settings the
backend requires, entry points, triggers, dead letters, the policies the core classifies,
least-privilege roles). Providers cannot be downloaded here, so ``terraform validate``/``plan``
are not run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from gcpfunc import ROOT

INFRA = ROOT / "infra" / "gcp"
TF = {path.name: path.read_text() for path in sorted(INFRA.glob("*.tf"))}
ALL = "\n".join(TF.values())


def _tool(name: str, *candidates: Path) -> str:
    found = os.environ.get(f"SKYSCORE_{name.upper()}") or shutil.which(name)
    for candidate in candidates:
        if not found and candidate.exists():
            found = str(candidate)
    if not found:
        reason = (
            f"{name} is not installed (looked on PATH and in {', '.join(map(str, candidates))})"
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def resources(kind: str) -> dict[str, str]:
    """Each top-level ``resource "<kind>" "<name>" { ... }`` block's text by name."""
    out = {}
    for match in re.finditer(rf'^resource "{kind}" "(\w+)" {{\n(.*?)^}}', ALL, re.M | re.S):
        out[match.group(1)] = match.group(2)
    return out


def test_terraform_fmt() -> None:
    terraform = _tool("terraform")
    answer = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(INFRA)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert answer.returncode == 0, answer.stdout + answer.stderr


def test_checkov_passes_with_a_reason_for_every_skip() -> None:
    checkov = _tool(
        "checkov",
        ROOT / ".venv" / "bin" / "checkov",
        ROOT / ".venv" / "tools" / "checkov" / "bin" / "checkov",
    )
    answer = subprocess.run(
        [
            checkov,
            *("-d", str(INFRA), "--framework", "terraform", "--output", "json"),
            *("--quiet", "--skip-download", "--soft-fail"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    report = json.loads(answer.stdout[answer.stdout.index("{") :])
    summary = report["summary"]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range']})"
        for c in report["results"]["failed_checks"]
    ]
    assert failed == [] and summary["failed"] == 0
    assert summary["passed"] >= 40 and summary["resource_count"] >= 40
    skips = re.findall(r"#checkov:skip=([A-Z0-9_]+)(?::(.*))?", ALL)
    assert skips and all(reason and len(reason.strip()) > 20 for _, reason in skips), skips
    assert summary["skipped"] == len(skips)


def test_functions_are_2nd_gen_python_313_entry_points_of_main() -> None:
    from functions.gcp import main

    functions = resources("google_cloudfunctions2_function")
    assert set(functions) == {"http", "upload", "work", "alerts", "retrain_schedule"}
    for name, body in functions.items():
        assert 'runtime     = "python313"' in body
        assert f'entry_point = "{name}"' in body and callable(getattr(main, name))
        assert "google_service_account.functions.email" in body
        assert "environment_variables            = local.environment" in body or (
            "environment_variables          = local.environment" in body
        )
        if name != "http":  # only the prediction API is reachable from outside the project
            assert '"ALLOW_INTERNAL_ONLY"' in body
    upload = functions["upload"]
    assert f'event_type            = "{main.STORAGE_FINALIZED}"' in upload
    assert 'retry_policy          = "RETRY_POLICY_RETRY"' in upload
    source = (ROOT / "functions" / "gcp" / "package.py").read_text()
    assert '"build" / "gcp.zip"' in source and "../../build/gcp.zip" in TF["variables.tf"]


def test_settings_name_what_the_backend_reads() -> None:
    block = ALL.split("environment = {")[1].split("\n  }\n")[0]
    settings = set(re.findall(r"^\s+(\w+)\s+=", block, re.M))
    source = (ROOT / "shared" / "skyscore" / "adapters" / "gcp.py").read_text()
    required = set(re.findall(r'settings\.require\("(\w+)"\)', source))
    assert required and required <= settings, required - settings
    assert {"SKYSCORE_GCP_PROJECT", "SKYSCORE_TOPIC", "SKYSCORE_DEAD_LETTER_TOPIC"} <= settings
    assert re.search(r'SKYSCORE_RETRAIN_ALARMS\s+=\s+"\$\{local.drift_policy\}=drift,', block)


def test_pubsub_pushes_with_oidc_and_dead_letters() -> None:
    subscriptions = resources("google_pubsub_subscription")
    for name in ("work", "alerts"):
        body = subscriptions[name]
        assert f"google_cloudfunctions2_function.{name}.service_config[0].uri" in body
        assert "oidc_token" in body and "google_service_account.invoker.email" in body
        assert "dead_letter_topic     = google_pubsub_topic.dead_letter.id" in body
    assert "ack_deadline_seconds = 600" in subscriptions["work"]  # beyond the function's 540 s
    topics = resources("google_pubsub_topic")
    assert set(topics) == {"work", "alerts", "dead_letter"}
    assert all("kms_key_name = var.kms_key" in body for body in topics.values())


def test_alerts_reach_the_function_and_are_classified_by_name() -> None:
    [channel] = resources("google_monitoring_notification_channel").values()
    assert 'type         = "pubsub"' in channel and "google_pubsub_topic.alerts.id" in channel
    policies = resources("google_monitoring_alert_policy")
    assert set(policies) == {"drift", "error_rate", "dead_letters"}
    for name in ("drift", "error_rate"):
        assert "google_monitoring_notification_channel.retrain.id" in policies[name]
    assert "notification_channels" not in policies["dead_letters"].split("documentation")[0]
    # the log-based metrics read the records CloudLoggingMetrics writes, by model
    [metric] = resources("google_logging_metric").values()
    assert 'model = "EXTRACT(jsonPayload.model)"' in metric
    assert 'jsonPayload.type=\\"metric\\" AND jsonPayload.namespace=\\"skyscore\\"' in ALL


def test_roles_are_least_privilege() -> None:
    roles = re.findall(r'role\s+= "(roles/[^"]+)"', ALL)
    assert not {"roles/owner", "roles/editor", "roles/storage.admin", "roles/pubsub.admin"} & set(
        roles
    )
    bucket_roles = resources("google_storage_bucket_iam_member")
    assert set(bucket_roles) == {"functions_data", "training_read", "training_write"}
    assert '"roles/storage.objectUser"' in bucket_roles["functions_data"]
    assert '"roles/storage.objectViewer"' in bucket_roles["training_read"]
    # the training account writes under staging/ only (the registry is the functions')
    assert "staging/" in bucket_roles["training_write"].split("expression")[1]
    project_roles = re.findall(
        r'resource "google_project_iam_member" "\w+" \{.*?role\s+= "([^"]+)"', ALL, re.S
    )
    assert sorted(project_roles) == [
        "roles/aiplatform.user",
        "roles/eventarc.eventReceiver",
        "roles/logging.logWriter",
        "roles/pubsub.publisher",
    ]
    act_as = resources("google_service_account_iam_member")["functions_act_as_training"]
    assert "google_service_account.training.name" in act_as  # only the training account
