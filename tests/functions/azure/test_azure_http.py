"""The HTTP function with real ``func.HttpRequest`` objects, served from the registry in Azurite:
byte-identical answers to the local dataplane, the Open Inference Protocol, problems for every
malformed body, and the alert webhook's route kept apart from the catch-all."""

from __future__ import annotations

import json

import azure.functions as func
from azfunc import AzureApp, call

from demo_table import local, predict_body
from skyscore.model.predictor import Predictor
from skyscore.model.registry import ModelRegistry
from skyscore.training.train import TrainResult

HOST = "https://skyscore-func.azurewebsites.net"


def request(
    method: str,
    path: str,
    body: bytes | str = b"",
    params: dict[str, str] | None = None,
    **headers: str,
) -> func.HttpRequest:
    """What the host builds: the full URL (routePrefix "" keeps the path), the ``{*path}`` route
    parameter, the query (with the function key the caller sent)."""
    query = {"code": "function-key", **(params or {})}
    return func.HttpRequest(
        method,
        f"{HOST}{path}?" + "&".join(f"{k}={v}" for k, v in query.items()),
        headers={"host": "skyscore-func.azurewebsites.net", **headers},
        params=query,
        route_params={"path": path.lstrip("/")},
        body=body.encode() if isinstance(body, str) else body,
    )


def http(req: func.HttpRequest) -> func.HttpResponse:
    response: func.HttpResponse = call("http", req)
    return response


def test_predictions_are_byte_identical_to_the_local_dataplane(
    cancer: ModelRegistry, demo_predictor: Predictor, demo_model: TrainResult
) -> None:
    body = predict_body()
    response = http(
        request("POST", "/v1/models/cancer/predict", body, **{"content-type": "application/json"})
    )
    assert response.status_code == 200, response.get_body()[:500]
    assert response.mimetype == "application/json"
    assert response.headers["content-type"] == "application/json"
    expected = local(
        demo_predictor,
        "POST",
        "/v1/models/cancer/predict",
        body,
        **{"content-type": "application/json"},
    )
    assert json.loads(response.get_body())["predictions"] == expected.json()["predictions"]
    got, want = json.loads(response.get_body()), expected.json()
    (
        got.pop("version"),
        want.pop("version"),
    )  # the registry numbers versions; the static one does not
    assert got == want
    assert json.loads(response.get_body())["predictions"][0]["id"] == "P0000"


def test_open_inference_protocol_and_meta_routes(
    cancer: ModelRegistry, demo_model: TrainResult
) -> None:
    live = http(request("GET", "/v2/health/live"))
    assert live.status_code == 200 and json.loads(live.get_body()) == {"live": True}
    ready = http(request("GET", "/v2/health/ready"))
    assert ready.status_code == 200
    meta = http(request("GET", "/v2/models/cancer"))
    assert meta.status_code == 200 and json.loads(meta.get_body())["name"] == "cancer"
    instance = json.loads(predict_body(1))["instances"][0]
    inputs = [
        {
            "name": k,
            "shape": [1],
            "datatype": "FP64" if isinstance(v, float) else "BYTES",
            "data": [v],
        }
        for k, v in instance.items()
        if k != "patient_id"
    ]
    infer = http(
        request(
            "POST",
            "/v2/models/cancer/infer",
            json.dumps({"inputs": inputs}),
            **{"content-type": "application/json"},
        )
    )
    assert infer.status_code == 200, infer.get_body()[:400]
    assert json.loads(infer.get_body())["model_name"] == "cancer"
    spec = http(request("GET", "/openapi.json"))
    assert spec.status_code == 200
    assert "/v1/models/{name}/predict" in json.loads(spec.get_body())["paths"]
    listing = http(request("GET", "/v1/models"))
    assert listing.status_code == 200


def test_bad_input_is_a_problem_never_a_stack_trace(cancer: ModelRegistry) -> None:
    bad = json.dumps({"instances": [{"mean_radius": "large"}]})
    deep = "[" * 5000 + "]" * 5000
    cases = [
        (
            request(
                "POST", "/v1/models/cancer/predict", bad, **{"content-type": "application/json"}
            ),
            422,
        ),
        (
            request(
                "POST",
                "/v1/models/cancer/predict",
                "{not json",
                **{"content-type": "application/json"},
            ),
            400,
        ),
        (
            request(
                "POST", "/v1/models/cancer/predict", deep, **{"content-type": "application/json"}
            ),
            400,
        ),
        (
            request(
                "POST", "/v2/models/cancer/infer", deep, **{"content-type": "application/json"}
            ),
            400,
        ),
        (request("POST", "/v1/models/cancer/predict", bad, **{"content-type": "text/csv"}), 415),
        (
            request("POST", "/v1/models/nope/predict", bad, **{"content-type": "application/json"}),
            404,
        ),
        (request("DELETE", "/v1/models/cancer/predict"), 405),
        (request("GET", "/no/such/route"), 404),
    ]
    for req, status in cases:
        response = http(req)
        assert response.status_code == status, (req.url[:80], response.get_body()[:300])
        assert response.headers["content-type"] == "application/problem+json"
        assert response.mimetype == "application/problem+json"
        problem = json.loads(response.get_body())
        assert problem["status"] == status
        assert b"Traceback" not in response.get_body()
    v2 = json.loads(http(cases[3][0]).get_body())
    assert "error" in v2  # Open Inference Protocol problems carry "error"


def test_body_over_the_limit_is_a_413_problem(cancer: ModelRegistry) -> None:
    from skyscore.adapters.azure import MAX_BODY_BYTES

    body = b'{"instances": [' + b" " * MAX_BODY_BYTES + b"]}"
    response = http(
        request("POST", "/v1/models/cancer/predict", body, **{"content-type": "application/json"})
    )
    assert response.status_code == 413
    assert json.loads(response.get_body())["status"] == 413


def test_not_ready_without_models(azure_app: AzureApp) -> None:
    ready = http(request("GET", "/v2/health/ready"))
    assert ready.status_code == 503
    assert json.loads(ready.get_body())["status"] == 503


def test_promotion_is_followed_by_a_warm_instance(
    cancer: ModelRegistry, demo_model: TrainResult
) -> None:
    req = request(
        "POST",
        "/v1/models/cancer/predict",
        predict_body(1),
        **{"content-type": "application/json"},
    )
    assert json.loads(http(req).get_body())["version"] == "1"
    card = cancer.register(demo_model.card, demo_model.onnx_bytes, name="cancer")
    cancer.promote("cancer", card.version)
    assert json.loads(http(req).get_body())["version"] == card.version


def test_the_function_key_is_not_a_query_parameter_of_the_dataplane(cancer: ModelRegistry) -> None:
    from functions.azure.function_app import http_request

    req = request("GET", "/v1/models/cancer/drift", params={"window": "5"})
    converted = http_request(req)
    assert converted.path == "/v1/models/cancer/drift"
    assert converted.query == {"window": "5"}
    assert converted.headers.get("HOST") == "skyscore-func.azurewebsites.net"
