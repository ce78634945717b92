"""Secrets stay out of the logs (issue 18.7): an end-to-end run per cloud — an upload scored,
an HTTP prediction, a retraining trigger — with every log record captured at DEBUG (caplog)
and everything written to the process's stdout and stderr (capfd), and none of the
credentials appears anywhere in them.

The credentials are made distinctive, so a leak cannot hide: AWS's secret key and session
token are random values set in the environment (moto accepts any); Azure's storage account is
an Azurite account of this test's own with a random key (``AZURITE_ACCOUNTS``), and the Azure
ML fake's bearer token and managed-identity header are random too.
"""

from __future__ import annotations

import base64
import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from bench.load import demo_body
from hardening_kit import MODEL, aws_account, azure_account, azure_function, lambda_context, leaks

from skyscore.training.train import TrainResult

if TYPE_CHECKING:
    from azurite import AzureMLFake


def _captured(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> dict[str, str]:
    out, err = capfd.readouterr()
    records = "\n".join(
        f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''} {getattr(r, 'fields', '')}"
        for r in caplog.records
    )
    return {"log records": records + caplog.text, "stdout": out, "stderr": err}


def test_aws_end_to_end_logs_hold_no_credentials(
    moto_url: str,
    demo_model: TrainResult,
    data_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from aws_moto import reference_event, sample_event
    from functions.aws import http, retrain, upload

    values = {
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
        "AWS_SESSION_TOKEN": "IQoJb3JpZ2luX2VjE" + secrets.token_urlsafe(60),
    }
    caplog.set_level(logging.DEBUG)
    with aws_account(moto_url, tmp_path, demo_model, **values) as aws:
        table = (data_dir / "breast_cancer.csv").read_bytes()
        aws.s3.put_object(Bucket=aws.bucket, Key=f"training/{MODEL}/2026-11.csv", Body=table)
        event = aws.put(f"incoming/{MODEL}/clinic.csv", table)
        [result] = upload.handler(event, lambda_context())["results"]
        assert result["status"] == "scored"

        request = sample_event("http-api-predict.json")
        path = f"/v1/models/{MODEL}/predict"
        request["rawPath"] = request["requestContext"]["http"]["path"] = path
        request["requestContext"]["http"]["method"] = "POST"
        request["headers"] = {"content-type": "application/json"}
        request["body"] = demo_body().decode()
        response = http.handler(request, lambda_context())
        assert response["statusCode"] == 200, response

        started = retrain.scheduled(
            reference_event("eventbridge-scheduled-rule-event.json"), lambda_context()
        )
        assert [d["action"] for d in started["decisions"]] == ["started"], started
    texts = _captured(caplog, capfd)
    assert len(caplog.records) > 10  # it did log, at DEBUG too
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    assert leaks(texts, values) == []


def test_azure_end_to_end_logs_hold_no_credentials(
    demo_model: TrainResult,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import azure.functions as func
    from azure.functions.timer import TimerRequest

    from azurite import azureml_fake, azurite_process

    account = f"acct{secrets.token_hex(4)}"
    key = base64.b64encode(secrets.token_bytes(64)).decode()
    monkeypatch.setenv("AZURITE_ACCOUNTS", f"{account}:{key}")
    with azurite_process() as server, azureml_fake() as fake:
        monkeypatch.delenv("AZURITE_ACCOUNTS")
        ml = _distinctive(fake)
        connection = (
            f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
            f"BlobEndpoint=http://127.0.0.1:{server.blob_port}/{account};"
            f"QueueEndpoint=http://127.0.0.1:{server.queue_port}/{account};"
        )
        settings = {
            "SKYSCORE_RETRAIN_MODELS": MODEL,
            **ml.app_settings(),
        }
        caplog.set_level(logging.DEBUG)
        with azure_account(connection, demo_model, extra=settings) as azure:
            table = (data_dir / "breast_cancer.csv").read_bytes()
            azure.store.write_bytes(f"training/{MODEL}/2026-11.csv", table)
            blob = f"incoming/{MODEL}/clinic.csv"
            azure.store.write_bytes(blob, table)
            azure_function("upload_event")(azure.blob_event(blob))
            assert azure.store.exists(f"predictions/{MODEL}/clinic.predictions.csv.manifest.json")

            request = func.HttpRequest(
                "POST",
                f"http://localhost:7071/v1/models/{MODEL}/predict",
                headers={"content-type": "application/json"},
                body=demo_body(),
            )
            response = azure_function("http")(request)
            assert response.status_code == 200, response.get_body()

            context = type("Context", (), {"invocation_id": "timer-1"})()
            azure_function("retrain_schedule")(TimerRequest(past_due=False), context)
            assert ml.errors == [] and len(ml.jobs) == 1 and ml.tokens_issued >= 1
        values = {
            "storage account key": key,
            "Azure ML bearer token": ml.token,
            "managed identity header": ml.identity_header,
        }
        texts = _captured(caplog, capfd)
    assert len(caplog.records) > 10
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    assert leaks(texts, values) == []


def _distinctive(ml: AzureMLFake) -> Any:
    """The fake's token and identity header, random and long (they are already unique)."""
    ml.token = "eyJ0eXAiOiJKV1Qi." + secrets.token_urlsafe(48)
    ml.identity_header = secrets.token_urlsafe(24)
    return ml
