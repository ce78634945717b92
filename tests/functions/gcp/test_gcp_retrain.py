"""Retraining on Google Cloud: Cloud Scheduler's tick (HTTP) and Cloud Monitoring incidents
(version 1.2, through the Pub/Sub notification channel) start Vertex AI custom jobs over REST;
the local fake checks the documented request shape and the bearer token that the metadata
server issued to google-auth in the function's process; the tick polls ``JOB_STATE_*``; the
candidate the job wrote is registered, gated and promoted or rejected, once.

The fake's jobs do not run: the test writes what the training entrypoint writes to the job's
output folder and moves the job's state, as Vertex AI would."""

from __future__ import annotations

import ast
import copy
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from gcpfunc import (
    DRIFT_POLICY,
    ERROR_POLICY,
    FunctionServer,
    GcpApp,
    published,
    reference_event,
    vertex_fake,
)

from skyscore.model.card import card_to_json
from skyscore.model.registry import ModelRegistry
from skyscore.training.train import TrainResult

SCHEDULER = {
    "User-Agent": "Google-Cloud-Scheduler",
    "X-CloudScheduler": "true",
    "X-CloudScheduler-JobName": "skyscore-retrain",
}


def tick(server: FunctionServer, at: str = "2026-12-01T00:00:00Z") -> list[dict[str, Any]]:
    """Cloud Scheduler's POST; the decisions the function answered."""
    answer = server.request("POST", "/", b"", {**SCHEDULER, "X-CloudScheduler-ScheduleTime": at})
    assert answer.status == 200, answer.body[:500]
    decisions: list[dict[str, Any]] = answer.json()["decisions"]
    return decisions


def incident(policy: str, state: str = "open", incident_id: str = "0.abc") -> dict[str, Any]:
    """The reference incident (version 1.2) for ``policy`` about the cancer model."""
    payload = copy.deepcopy(reference_event("monitoring-alert-incident-v1.2.json"))
    payload["incident"].update(policy_name=policy, state=state, incident_id=incident_id)
    payload["incident"]["metric"]["labels"] = {"model": "cancer"}
    return payload


def alert(server: FunctionServer, payload: Any) -> list[dict[str, Any] | None]:
    """The notification channel's message, as Eventarc delivers it; the decisions logged."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    answer = server.post_event(published(raw))
    assert answer.status == 200, answer.body[:300]
    out: list[dict[str, Any] | None] = []
    for line in server.new_lines():
        _, sep, rest = line.partition("skyscore.gcp alert ")
        if sep and "): " in rest:  # "alert <policy> (<state>): <decision>"
            out.append(ast.literal_eval(rest.split("): ", 1)[1]))
    return out


@pytest.fixture
def labelled(gcp_app: GcpApp, data_dir: Path) -> None:
    gcp_app.store.write_bytes(
        "training/cancer/2026-11.csv", (data_dir / "breast_cancer.csv").read_bytes()
    )


def play_vertex(gcp_app: GcpApp, job: str, result: TrainResult, state: str) -> str:
    """What a finished custom job leaves behind: the entrypoint's files in its output folder
    (the ``--output-dir`` under the /gcs mount), and its final state."""
    body = gcp_app.vertex.jobs[job]
    args = body["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"]
    output = args[args.index("--output-dir") + 1]
    base = body["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"]
    assert output == "/gcs/" + base.removeprefix("gs://")
    prefix = base.removeprefix(f"gs://{gcp_app.bucket}/")
    assert prefix.startswith("staging/cancer/") and prefix.endswith("/")
    gcp_app.store.write_bytes(prefix + "model.onnx", result.onnx_bytes)
    gcp_app.store.write_bytes(prefix + "card.json", card_to_json(result.card))
    gcp_app.vertex.set_state(job, state)
    return prefix


def test_schedule_starts_a_custom_job_polls_it_and_promotes_once(
    gcp_app: GcpApp, cancer: ModelRegistry, labelled: None, demo_model: TrainResult
) -> None:
    vertex, server = gcp_app.vertex, gcp_app.server("retrain_schedule")
    [decision] = tick(server)
    assert decision["action"] == "started", decision
    job = decision["job_id"]
    assert vertex.errors == [] and vertex.tokens_issued >= 1  # the metadata server's token
    [create] = vertex.created()
    assert create["headers"]["authorization"] == f"Bearer {vertex.token}"
    assert create["path"] == f"/v1/{vertex.parent}/customJobs"
    body = create["body"]
    assert body["displayName"] == "skyscore retrain cancer"
    assert body["labels"] == {"skyscore-model": "cancer"}
    [pool] = body["jobSpec"]["workerPoolSpecs"]
    assert pool["machineSpec"] == {"machineType": "n1-standard-4"}  # logreg: no accelerator
    container = pool["containerSpec"]
    assert container["imageUri"] == gcp_app.env["SKYSCORE_VERTEX_IMAGE"]
    assert container["command"] == ["python", "-m", "skyscore.training.train"]
    assert container["args"][:9] == [
        f"/gcs/{gcp_app.bucket}/training/cancer/",
        *("--target", "diagnosis", "--name", "cancer", "--estimator", "logreg"),
        *("--id-column", "patient_id"),
    ]
    assert body["jobSpec"]["serviceAccount"] == gcp_app.env["SKYSCORE_VERTEX_SERVICE_ACCOUNT"]
    assert body["jobSpec"]["scheduling"] == {"timeout": "14400s"}

    # running: the next tick judges nothing and starts nothing (one job in flight)
    vertex.set_state(job, "JOB_STATE_RUNNING")
    gcp_app.store.write_bytes(
        "training/cancer/2026-12.csv", gcp_app.store.read_bytes("training/cancer/2026-11.csv")
    )
    [waiting] = tick(server, "2026-12-01T00:15:00Z")
    assert waiting["action"] == "skipped" and job in waiting["reason"]
    assert len(vertex.jobs) == 1

    play_vertex(gcp_app, job, demo_model, "JOB_STATE_SUCCEEDED")
    decisions = tick(server, "2026-12-01T00:30:00Z")
    assert decisions[0]["action"] == "promoted" and decisions[0]["job_id"] == job, decisions
    assert cancer.alias_target("cancer") == "2"
    later = tick(server, "2026-12-01T00:45:00Z")
    assert [d["action"] for d in later] == ["skipped"] and "cooling down" in later[0]["reason"]
    assert cancer.list_versions("cancer") == ["1", "2"]
    assert len(vertex.jobs) == 1 and vertex.errors == []
    assert "skyscore.gcp retraining: {" in server.log()  # each decision is logged too


def test_worse_candidate_is_rejected_and_failed_jobs_end_cleanly(
    gcp_app: GcpApp, cancer: ModelRegistry, labelled: None, worse_model: TrainResult
) -> None:
    server = gcp_app.server("retrain_schedule")
    [decision] = tick(server)
    play_vertex(gcp_app, decision["job_id"], worse_model, "JOB_STATE_SUCCEEDED")
    verdict = tick(server, "2026-12-01T00:15:00Z")[0]
    assert verdict["action"] == "rejected", verdict
    assert "no_worse_than_current" in verdict["reason"]
    assert cancer.alias_target("cancer") == "1"


def test_a_failed_job_ends_cleanly(gcp_app: GcpApp, cancer: ModelRegistry, labelled: None) -> None:
    server = gcp_app.server("retrain_schedule")
    [decision] = tick(server)
    gcp_app.vertex.set_state(decision["job_id"], "JOB_STATE_FAILED")
    verdict = tick(server, "2026-12-01T00:15:00Z")[0]
    assert verdict["action"] == "failed" and "failed" in verdict["reason"]
    assert cancer.list_versions("cancer") == ["1"]


def test_open_drift_incident_starts_one_job_however_often_it_arrives(
    gcp_app: GcpApp, cancer: ModelRegistry, labelled: None
) -> None:
    gcp_app.env["SKYSCORE_RETRAIN_COOLDOWN_SECONDS"] = "0"
    server = gcp_app.server("alerts")
    answers: list[list[dict[str, Any] | None]] = []

    def deliver(i: int) -> None:  # two incidents at once, and Pub/Sub redeliveries
        answers.append(alert(server, incident(DRIFT_POLICY, incident_id=f"0.i{i % 2}")))

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    decisions = [d for batch in answers for d in batch] + alert(server, incident(DRIFT_POLICY))
    actions = [d["action"] for d in decisions if d is not None]
    assert actions.count("started") == 1, decisions
    assert len(gcp_app.vertex.jobs) == 1 and gcp_app.vertex.errors == []


def test_closed_unconfigured_and_malformed_incidents(
    gcp_app: GcpApp, cancer: ModelRegistry, labelled: None
) -> None:
    server = gcp_app.server("alerts")
    # the verbatim reference: a closed incident of an unconfigured policy
    assert alert(server, reference_event("monitoring-alert-incident-v1.2.json")) == [None]
    assert alert(server, incident("dead-letters")) == [None]  # open, but operational
    assert alert(server, incident(DRIFT_POLICY, state="closed")) == [None]
    assert gcp_app.vertex.jobs == {}
    # not an incident, not JSON, hostile JSON: acknowledged (a retry cannot help), no decision
    for raw in (b'{"version": "1.1"}', b"{nope", b"[" * 5000 + b"]" * 5000):
        assert alert(server, raw) == []
    assert "Traceback" not in server.log()


def test_error_rate_incident_rolls_back(
    gcp_app: GcpApp, cancer: ModelRegistry, demo_model: TrainResult
) -> None:
    card = cancer.register(demo_model.card, demo_model.onnx_bytes, name="cancer")
    cancer.promote("cancer", card.version)
    server = gcp_app.server("alerts")
    [decision] = alert(server, incident(ERROR_POLICY, incident_id="0.e1"))
    assert decision is not None and decision["action"] == "rolled_back", decision
    assert cancer.alias_target("cancer") == "1"
    [again] = alert(server, incident(ERROR_POLICY, incident_id="0.e1"))  # redelivered
    assert again is not None and again["action"] == "skipped"
    assert cancer.alias_target("cancer") == "1"


def test_incident_conversion() -> None:
    from functions.gcp.main import alarm_signal

    signal = alarm_signal(reference_event("monitoring-alert-incident-v1.2.json"))
    assert (signal.name, signal.firing, signal.model, signal.changed_at) == (
        "wdzc Alert Policy",
        False,
        None,
        "1621359336",
    )
    assert signal.event_id == "0.m2d61b3s6d5d:closed"
    payload = incident(DRIFT_POLICY)
    payload["incident"]["metric"]["labels"] = {}
    payload["incident"]["documentation"] = {"content": "model=fraud alarm=drift"}
    opened = alarm_signal(payload)
    assert (opened.firing, opened.model, opened.description) == (
        True,
        None,
        "model=fraud alarm=drift",
    )


def test_gpu_only_for_an_estimator_that_uses_one() -> None:
    from skyscore.adapters.gcp import VertexJobRunner
    from skyscore.ports import JobSpec

    with vertex_fake() as fake:
        runner = VertexJobRunner(fake.project, fake.region, image_uri="img", endpoint=fake.url)
        for estimator, spec in (
            (
                "xgboost",
                {
                    "machineType": "n1-standard-8",
                    "acceleratorType": "NVIDIA_TESLA_T4",
                    "acceleratorCount": 1,
                },
            ),
            ("hgb", {"machineType": "n1-standard-4"}),
        ):
            body = runner.job_body(
                JobSpec("m", "gs://b/training/m/", "gs://b/staging/m/1/", "y", estimator)
            )
            assert body["jobSpec"]["workerPoolSpecs"][0]["machineSpec"] == spec
            assert fake.check_custom_job(body) == []
