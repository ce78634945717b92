"""Retraining on Azure: the timer and Azure Monitor's webhook (common alert schema) start Azure
ML command jobs through the REST API (the local fake checks the request shape and the bearer
token the managed-identity endpoint issued); the timer polls them; the candidate the job wrote
to its output folder is registered, gated and promoted or rejected, once.

The fake's jobs do not run: the test writes what the training entrypoint writes to the job's
output folder (``model.onnx``, ``card.json``) and moves the job's status, as Azure ML would."""

from __future__ import annotations

import copy
import json
import logging
import threading
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azfunc import DRIFT_RULE, ERROR_RULE, AzureApp, FunctionContext, call, reference_event
from azure.functions.timer import TimerRequest

from skyscore.model.card import card_to_json
from skyscore.model.registry import ModelRegistry
from skyscore.training.train import TrainResult


def tick(caplog: pytest.LogCaptureFixture, *, past_due: bool = False) -> list[dict[str, Any]]:
    """Fire the timer; the decisions it logged."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="skyscore.azure"):
        call("retrain_schedule", TimerRequest(past_due=past_due), FunctionContext())
    return [
        eval_decision(r.getMessage())
        for r in caplog.records
        if r.name == "skyscore.azure" and r.getMessage().startswith("retraining: ")
    ]


def eval_decision(message: str) -> dict[str, Any]:
    import ast

    decision: dict[str, Any] = ast.literal_eval(message.removeprefix("retraining: "))
    return decision


def alert(payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST an alert notification to the webhook, as the action group does."""
    req = func.HttpRequest(
        "POST",
        "https://skyscore-func.azurewebsites.net/hooks/azure-monitor?code=k",
        headers={"content-type": "application/json"},
        params={"code": "k"},
        body=json.dumps(payload).encode(),
    )
    response: func.HttpResponse = call("alerts", req, FunctionContext())
    return response.status_code, json.loads(response.get_body())


def fired(rule: str, alert_id: str = "a1", **essentials: Any) -> dict[str, Any]:
    """The reference common-schema payload, fired, for ``rule`` about the cancer model."""
    payload = copy.deepcopy(reference_event("monitor-common-alert-schema-metric-alert.json"))
    payload["data"]["essentials"].update(
        alertRule=rule,
        monitorCondition="Fired",
        alertId=f"/subscriptions/s/providers/Microsoft.AlertsManagement/alerts/{alert_id}",
        **essentials,
    )
    payload["data"]["customProperties"] = {"model": "cancer"}
    return payload


@pytest.fixture
def labelled(azure_app: AzureApp, data_dir: Path) -> None:
    """New labelled rows for the cancer model under training/cancer/."""
    azure_app.store.write_bytes(
        "training/cancer/2026-11.csv", (data_dir / "breast_cancer.csv").read_bytes()
    )


def play_azure_ml(
    azure_app: AzureApp, job: str, result: TrainResult, status: str = "Completed"
) -> str:
    """What a finished command job leaves behind: the entrypoint's files in its output folder
    (the datastore path of the job's ``model`` output), and its final status."""
    body = azure_app.ml.jobs[job]["properties"]
    output = body["outputs"]["model"]["uri"]
    prefix = output.removeprefix("azureml://datastores/skyscoredata/paths/")
    assert prefix.startswith("staging/cancer/") and prefix.endswith("/")
    azure_app.store.write_bytes(prefix + "model.onnx", result.onnx_bytes)
    azure_app.store.write_bytes(prefix + "card.json", card_to_json(result.card))
    azure_app.ml.set_status(job, status)
    return prefix


def test_timer_starts_a_job_polls_it_and_promotes_once(
    azure_app: AzureApp,
    cancer: ModelRegistry,
    labelled: None,
    demo_model: TrainResult,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ml = azure_app.ml
    [decision] = tick(caplog)
    assert decision["action"] == "started", decision
    job = decision["job_id"]
    assert ml.errors == [] and ml.tokens_issued >= 1  # the managed identity's token
    [put] = [r for r in ml.requests if r["method"] == "PUT"]
    assert put["headers"]["authorization"] == f"Bearer {ml.token}"
    props = put["body"]["properties"]
    assert props["jobType"] == "Command"
    assert props["computeId"] == f"{ml.workspace_id}/computes/cpu-cluster"  # logreg: no GPU
    assert props["environmentId"] == "azureml:skyscore-train:1"
    assert (
        props["inputs"]["data"]["uri"] == "azureml://datastores/skyscoredata/paths/training/cancer/"
    )
    assert (
        "--target diagnosis --name cancer --estimator logreg --id-column patient_id"
        in (props["command"])
    )

    # Running: the next tick judges nothing and starts nothing (one job in flight)
    ml.set_status(job, "Running")
    azure_app.store.write_bytes(
        "training/cancer/2026-12.csv", azure_app.store.read_bytes("training/cancer/2026-11.csv")
    )
    [waiting] = tick(caplog)
    assert waiting["action"] == "skipped" and job in waiting["reason"]
    assert len(ml.jobs) == 1

    prefix = play_azure_ml(azure_app, job, demo_model)
    decisions = tick(caplog, past_due=True)
    assert decisions[0]["action"] == "promoted", decisions
    assert decisions[0]["job_id"] == job
    assert cancer.alias_target("cancer") == "2"
    assert azure_app.store.exists(prefix + "card.json")
    # judged once: later ticks do not register it again, and the cool-down holds
    later = tick(caplog)
    assert [d["action"] for d in later] == ["skipped"] and "cooling down" in later[0]["reason"]
    assert cancer.list_versions("cancer") == ["1", "2"]
    assert len(ml.jobs) == 1 and ml.errors == []


def test_worse_candidate_is_rejected(
    azure_app: AzureApp,
    cancer: ModelRegistry,
    labelled: None,
    worse_model: TrainResult,
    caplog: pytest.LogCaptureFixture,
) -> None:
    [decision] = tick(caplog)
    play_azure_ml(azure_app, decision["job_id"], worse_model)
    verdict = tick(caplog)[0]
    assert verdict["action"] == "rejected", verdict
    assert "no_worse_than_current" in verdict["reason"]
    assert cancer.alias_target("cancer") == "1"


def test_failed_and_canceled_jobs_end_cleanly(
    azure_app: AzureApp, cancer: ModelRegistry, labelled: None, caplog: pytest.LogCaptureFixture
) -> None:
    [decision] = tick(caplog)
    azure_app.ml.set_status(decision["job_id"], "Failed")
    verdict = tick(caplog)[0]
    assert verdict["action"] == "failed" and "failed" in verdict["reason"]
    assert cancer.list_versions("cancer") == ["1"]


def test_fired_drift_alert_starts_one_job_however_often_it_arrives(
    azure_app: AzureApp, cancer: ModelRegistry, labelled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKYSCORE_RETRAIN_COOLDOWN_SECONDS", "0")
    answers: list[tuple[int, dict[str, Any]]] = []
    retries: list[str] = []

    def deliver(i: int) -> None:  # two alert instances at once, and webhook retries
        status, body = alert(fired(DRIFT_RULE, alert_id=f"a{i % 2}"))
        if status == 503:  # a retry overlapping its own first copy: Busy, retried by the webhook
            assert body["type"].endswith("/busy"), body
            retries.append(f"a{i % 2}")
        else:
            answers.append((status, body))

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    answers += [alert(fired(DRIFT_RULE, alert_id=alert_id)) for alert_id in retries]
    assert len(answers) == 4 and all(status == 200 for status, _ in answers), answers
    actions = sorted(body["decision"]["action"] for _, body in answers)
    assert actions.count("started") == 1, answers
    assert len(azure_app.ml.jobs) == 1 and azure_app.ml.errors == []


def test_resolved_unconfigured_and_malformed_alerts(
    azure_app: AzureApp, cancer: ModelRegistry, labelled: None
) -> None:
    # the verbatim reference payload: a resolved alert of an unconfigured rule
    status, body = alert(reference_event("monitor-common-alert-schema-metric-alert.json"))
    assert (status, body) == (200, {"alert": "WCUS-R2-Gen2", "firing": False, "decision": None})
    # fired, but not configured as a retrain trigger: operational, it pages people
    status, body = alert(fired("poison-messages"))
    assert (status, body["decision"]) == (200, None)
    # a configured rule that resolves starts nothing either
    resolved = fired(DRIFT_RULE)
    resolved["data"]["essentials"]["monitorCondition"] = "Resolved"
    assert alert(resolved)[1]["decision"] is None
    assert azure_app.ml.jobs == {}
    # not the common alert schema, not JSON, hostile JSON: 400 problems
    for payload in ({"schemaId": "AzureMonitorMetricAlert", "data": {}}, {"data": None}):
        status, problem = alert(payload)
        assert status == 400 and problem["status"] == 400
    for raw in (b"{nope", b"[" * 5000 + b"]" * 5000):
        req = func.HttpRequest(
            "POST", "https://x/hooks/azure-monitor", headers={}, params={}, body=raw
        )
        response: func.HttpResponse = call("alerts", req, FunctionContext())
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"


def test_error_rate_alert_rolls_back(
    azure_app: AzureApp, cancer: ModelRegistry, demo_model: TrainResult
) -> None:
    card = cancer.register(demo_model.card, demo_model.onnx_bytes, name="cancer")
    cancer.promote("cancer", card.version)
    status, body = alert(fired(ERROR_RULE, alert_id="e1"))
    assert status == 200 and body["decision"]["action"] == "rolled_back", body
    assert cancer.alias_target("cancer") == "1"
    again = alert(fired(ERROR_RULE, alert_id="e1"))[1]  # the action group's retry
    assert again["decision"]["action"] == "skipped"
    assert cancer.alias_target("cancer") == "1"


def test_model_from_the_alerts_dimension(azure_app: AzureApp) -> None:
    from functions.azure.function_app import alarm_signal

    payload = fired(DRIFT_RULE)
    payload["data"]["customProperties"] = None
    payload["data"]["alertContext"]["condition"]["allOf"][0]["dimensions"] = [
        {"name": "model", "value": "fraud"}
    ]
    signal = alarm_signal(payload)
    assert (signal.name, signal.firing, signal.model) == (DRIFT_RULE, True, "fraud")
    assert signal.event_id.endswith("/alerts/a1:Fired")
    reference = alarm_signal(reference_event("monitor-common-alert-schema-metric-alert.json"))
    assert (reference.firing, reference.model, reference.changed_at) == (
        False,
        None,
        "2019-03-22T14:03:16.2246313Z",
    )
