"""The HTTP function: API Gateway HTTP API (2.0), function URLs and REST (1.0) events, served from
the S3 registry in moto, answer exactly as the core's dataplane does locally."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from aws_moto import Aws, LambdaContext, reference_event, sample_event
from skyscore.model.predictor import Predictor
from skyscore.model.registry import ModelRegistry
from skyscore.serving.dataplane import DataPlane, Request, StaticModelProvider
from skyscore.training.train import TrainResult


def call(event: dict[str, Any]) -> dict[str, Any]:
    from functions.aws import http

    response: dict[str, Any] = http.handler(event, LambdaContext())
    return response


def http_event(method: str, path: str, body: bytes | str = b"", **headers: str) -> dict[str, Any]:
    event = sample_event("http-api-predict.json")
    event["rawPath"] = path
    event["requestContext"]["http"]["method"] = method
    event["requestContext"]["http"]["path"] = path
    event["headers"] = {"host": "abc123.execute-api.us-east-1.amazonaws.com", **headers}
    raw = body.encode() if isinstance(body, str) else body
    event["body"] = base64.b64encode(raw).decode() if raw else None
    event["isBase64Encoded"] = bool(raw)
    return event


def test_sample_predict_event_matches_the_local_dataplane(
    cancer: ModelRegistry, demo_predictor: Predictor
) -> None:
    event = sample_event("http-api-predict.json")
    response = call(event)
    assert response["statusCode"] == 200, response
    assert response["headers"]["content-type"] == "application/json"
    local = DataPlane(StaticModelProvider({"cancer": demo_predictor})).handle(
        Request(
            "POST",
            "/v1/models/cancer/predict",
            {"content-type": "application/json"},
            event["body"].encode(),
        )
    )
    body = json.loads(response["body"])
    assert body["predictions"] == local.json()["predictions"]
    assert body["model"] == "cancer" and body["version"] == "1"
    assert body["predictions"][0]["id"] == "P0000"


def test_base64_body_and_v2_inference(cancer: ModelRegistry, demo_model: TrainResult) -> None:
    predict = sample_event("http-api-predict.json")
    instance = json.loads(predict["body"])["instances"][0]
    ok = call(
        http_event(
            "POST",
            "/v1/models/cancer/predict",
            predict["body"],
            **{"content-type": "application/json"},
        )
    )
    assert ok["statusCode"] == 200
    features = [f.name for f in demo_model.card.features]
    numeric = [n for n in features if isinstance(instance[n], float)]
    infer = {
        "inputs": [
            {
                "name": n,
                "shape": [1],
                "datatype": "FP32" if n in numeric else "BYTES",
                "data": [instance[n]],
            }
            for n in features
        ]
    }
    answer = call(
        http_event(
            "POST",
            "/v2/models/cancer/infer",
            json.dumps(infer),
            **{"content-type": "application/json"},
        )
    )
    assert answer["statusCode"] == 200, answer["body"]
    assert json.loads(answer["body"])["model_name"] == "cancer"


def test_bad_input_is_a_problem_never_a_stack_trace(cancer: ModelRegistry) -> None:
    bad = json.dumps({"instances": [{"mean_radius": "large"}]})
    cases = [
        (
            http_event(
                "POST", "/v1/models/cancer/predict", bad, **{"content-type": "application/json"}
            ),
            422,
        ),
        (
            http_event(
                "POST",
                "/v1/models/cancer/predict",
                "{not json",
                **{"content-type": "application/json"},
            ),
            400,
        ),
        (http_event("POST", "/v1/models/cancer/predict", bad, **{"content-type": "text/csv"}), 415),
        (
            http_event(
                "POST", "/v1/models/nope/predict", bad, **{"content-type": "application/json"}
            ),
            404,
        ),
        (http_event("DELETE", "/v1/models/cancer/predict"), 405),
        (http_event("GET", "/no/such/route"), 404),
    ]
    for event, status in cases:
        response = call(event)
        assert response["statusCode"] == status, (event["rawPath"], response)
        assert response["headers"]["content-type"] == "application/problem+json"
        problem = json.loads(response["body"])
        assert problem["status"] == status
        assert "Traceback" not in response["body"]
    unprocessable = json.loads(call(cases[0][0])["body"])
    assert unprocessable["row"] == 0  # instances are numbered from 0 over HTTP, as locally
    assert unprocessable["field"] == "mean_radius"


def test_health_openapi_and_function_url(cancer: ModelRegistry) -> None:
    ready = call(sample_event("function-url-ready.json"))
    assert ready["statusCode"] == 200 and json.loads(ready["body"]) == {"ready": True}
    spec = call(http_event("GET", "/openapi.json"))
    assert spec["statusCode"] == 200
    assert "/v1/models/{name}/predict" in json.loads(spec["body"])["paths"]


def test_not_ready_without_models(aws: Aws) -> None:
    ready = call(sample_event("function-url-ready.json"))
    assert ready["statusCode"] == 503
    assert json.loads(ready["body"])["status"] == 503


def test_reference_payloads_are_answered(cancer: ModelRegistry) -> None:
    """Verbatim public events (paths this service does not have) get problem answers."""
    v2 = call(reference_event("apigw-http-api-v2-proxy.json"))
    assert v2["statusCode"] == 404 and json.loads(v2["body"])["status"] == 404
    url = call(reference_event("lambda-function-url.json"))
    assert url["statusCode"] == 404
    rest = call(reference_event("apigw-rest-v1-proxy.json"))
    assert rest["statusCode"] == 404
    assert json.loads(rest["body"])["type"].endswith("/not-found")
    # the same REST event on a real route reaches the dataplane through the 1.0 resolver
    event = copy.deepcopy(reference_event("apigw-rest-v1-proxy.json"))
    event["path"] = event["requestContext"]["path"] = "/v2/health/live"
    live = call(event)
    assert live["statusCode"] == 200 and json.loads(live["body"]) == {"live": True}


def test_promotion_is_followed_without_a_new_container(
    cancer: ModelRegistry, demo_model: TrainResult
) -> None:
    event = sample_event("http-api-predict.json")
    assert json.loads(call(event)["body"])["version"] == "1"
    card = cancer.register(demo_model.card, demo_model.onnx_bytes, name="cancer")
    cancer.promote("cancer", card.version)
    assert json.loads(call(event)["body"])["version"] == card.version


def test_malformed_events_are_400_problems(cancer: ModelRegistry) -> None:
    """Invalid base64 (or junk inside it) and events that are not HTTP events: a 400 problem,
    never an exception out of the handler (issue 20, item 7)."""
    bad = http_event(
        "POST", "/v1/models/cancer/predict", "{}", **{"content-type": "application/json"}
    )
    bad["body"] = "abc"
    response = call(bad)
    assert response["statusCode"] == 400, response
    assert response["headers"]["content-type"] == "application/problem+json"
    assert "base64" in json.loads(response["body"])["detail"]
    junk = copy.deepcopy(bad)
    junk["body"] = base64.b64encode(b'{"instances": []}').decode()[:8] + "!!" + "AAAA"
    assert call(junk)["statusCode"] == 400
    missing = copy.deepcopy(bad)
    del missing["requestContext"]
    answer = call(missing)
    assert answer["statusCode"] == 400
    assert json.loads(answer["body"])["status"] == 400


def test_body_over_the_limit_is_our_413(cancer: ModelRegistry) -> None:
    """A body just over the AWS limit gets the core's 413 problem: the limit is set so that the
    event still fits in Lambda's 6 MB however the body is carried (base64, or JSON-escaped text
    at up to 6 bytes per byte), so our code answers, not the platform."""
    from skyscore.adapters.aws import MAX_BODY_BYTES

    assert MAX_BODY_BYTES * 6 + 64 * 1024 < 6_000_000
    worst = http_event("POST", "/v1/models/cancer/predict", b"", **{"content-type": "text/plain"})
    worst.update(body="\x01" * (MAX_BODY_BYTES + 1), isBase64Encoded=False)
    assert len(json.dumps(worst)) < 6_000_000  # the whole event as Lambda would receive it
    assert call(worst)["statusCode"] == 413
    body = b'{"instances": [' + b" " * MAX_BODY_BYTES + b"]}"
    response = call(
        http_event(
            "POST", "/v1/models/cancer/predict", body, **{"content-type": "application/json"}
        )
    )
    assert response["statusCode"] == 413, response["body"][:300]
    assert json.loads(response["body"])["status"] == 413
