"""The Azure reference payloads are verbatim public files (each copy hashes to the git blob that
SOURCES.md records), and the app accepts every one of them through its real trigger type."""

from __future__ import annotations

import hashlib
import json
import logging
import re

import azure.functions as func
import pytest
from azfunc import REFERENCE_EVENTS, AzureApp, FunctionContext, call, reference_event
from azure.functions.timer import TimerRequest

from skyscore.model.registry import ModelRegistry


def git_blob(data: bytes) -> str:
    """``git hash-object`` of a file's bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def test_copies_are_verbatim() -> None:
    sources = (REFERENCE_EVENTS.parent / "SOURCES.md").read_text()
    recorded = dict(
        re.findall(r"^\| (azure/[\w.-]+\.json) \|.*\| ([0-9a-f]{40}) \|$", sources, re.M)
    )
    copies = sorted(REFERENCE_EVENTS.glob("*.json"))
    assert len(copies) == len(recorded) == 3
    for path in copies:
        assert git_blob(path.read_bytes()) == recorded[f"azure/{path.name}"], path.name


def test_event_grid_array(
    azure_app: AzureApp, cancer: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="skyscore.azure")
    for raw in reference_event("eventgrid-storage-blob-created.json"):
        call(
            "upload_event",
            func.EventGridEvent(
                id=raw["id"],
                data=raw["data"],
                topic=raw["topic"],
                subject=raw["subject"],
                event_type=raw["eventType"],
                event_time=None,
                data_version=raw["dataVersion"],
            ),
        )
    assert any("'status': 'ignored'" in r.getMessage() for r in caplog.records)  # another account


def test_timer_info(
    azure_app: AzureApp, cancer: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """The TimerInfo JSON the host sends, as the worker turns it into a TimerRequest."""
    info = reference_event("functions-timer-trigger-timerinfo.json")
    timer = TimerRequest(
        past_due=info["IsPastDue"],
        schedule_status=info["ScheduleStatus"],
        schedule=info["Schedule"],
    )
    caplog.set_level(logging.INFO, logger="skyscore.azure")
    call("retrain_schedule", timer, FunctionContext())
    decisions = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("retraining: ")
    ]
    assert decisions and "'action': 'skipped'" in decisions[0]  # no labelled rows yet
    assert azure_app.ml.jobs == {}


def test_monitor_alert(azure_app: AzureApp, cancer: ModelRegistry) -> None:
    payload = (REFERENCE_EVENTS / "monitor-common-alert-schema-metric-alert.json").read_bytes()
    req = func.HttpRequest(
        "POST", "https://x/hooks/azure-monitor", headers={}, params={}, body=payload
    )
    response = call("alerts", req, FunctionContext())
    assert response.status_code == 200
    assert json.loads(response.get_body())["firing"] is False
