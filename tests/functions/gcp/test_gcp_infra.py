"""infra/gcp's wiring between the Terraform and the functions (settings the backend requires,
entry points, triggers, dead letters, the policies the core classifies, least-privilege roles),
read offline; ``terraform fmt`` and checkov run over every module in
tests/infra/test_terraform.py."""

from __future__ import annotations

import re

from gcpfunc import ROOT

from terraform import blocks, module_text

INFRA = ROOT / "infra" / "gcp"
TF = {path.name: path.read_text() for path in sorted(INFRA.glob("*.tf"))}
ALL = module_text(INFRA)


def resources(kind: str) -> dict[str, str]:
    return blocks(ALL, kind)


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
