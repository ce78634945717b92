"""The HTTP function on a running functions-framework server (real sockets), served from the
registry in fake-gcs-server: byte-identical answers to the local dataplane, the Open Inference
Protocol, and a problem for every malformed body."""

from __future__ import annotations

import json

from gcpfunc import GcpApp

from demo_table import local, predict_body
from skyscore.model.predictor import Predictor
from skyscore.model.registry import ModelRegistry
from skyscore.training.train import TrainResult

JSON = {"content-type": "application/json"}


def test_predictions_are_byte_identical_to_the_local_dataplane(
    gcp_app: GcpApp, cancer: ModelRegistry, demo_predictor: Predictor
) -> None:
    server = gcp_app.server("http")
    body = predict_body()
    answer = server.request("POST", "/v1/models/cancer/predict", body, JSON)
    assert answer.status == 200, answer.body[:500]
    assert answer.headers["content-type"] == "application/json"
    expected = local(demo_predictor, "POST", "/v1/models/cancer/predict", body, **JSON)
    got, want = answer.json(), expected.json()
    # byte for byte, but for the version: the registry numbers versions, the static one not
    static = json.dumps(want["version"]).encode()
    assert answer.body == expected.body.replace(b'"version":' + static, b'"version":"1"')
    assert got["predictions"][0]["id"] == "P0000"


def test_open_inference_protocol_and_meta_routes(gcp_app: GcpApp, cancer: ModelRegistry) -> None:
    server = gcp_app.server("http")
    assert server.request("GET", "/v2/health/live").json() == {"live": True}
    assert server.request("GET", "/v2/health/ready").status == 200
    meta = server.request("GET", "/v2/models/cancer")
    assert meta.status == 200 and meta.json()["name"] == "cancer"
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
    infer = server.request(
        "POST", "/v2/models/cancer/infer", json.dumps({"inputs": inputs}).encode(), JSON
    )
    assert infer.status == 200, infer.body[:400]
    assert infer.json()["model_name"] == "cancer"
    spec = server.request("GET", "/openapi.json")
    assert spec.status == 200 and "/v1/models/{name}/predict" in spec.json()["paths"]
    assert server.request("GET", "/v1/models").status == 200
    drift = server.request("GET", "/v1/models/cancer/drift?window=5")
    assert drift.status == 200, drift.body[:300]


def test_bad_input_is_a_problem_never_a_stack_trace(gcp_app: GcpApp, cancer: ModelRegistry) -> None:
    from skyscore.adapters.gcp import MAX_BODY_BYTES

    server = gcp_app.server("http")
    bad = json.dumps({"instances": [{"mean_radius": "large"}]}).encode()
    deep = b"[" * 5000 + b"]" * 5000
    cases = [
        ("POST", "/v1/models/cancer/predict", bad, JSON, 422),
        ("POST", "/v1/models/cancer/predict", b"{not json", JSON, 400),
        ("POST", "/v1/models/cancer/predict", deep, JSON, 400),
        ("POST", "/v2/models/cancer/infer", deep, JSON, 400),
        ("POST", "/v1/models/cancer/predict", bad, {"content-type": "text/csv"}, 415),
        ("POST", "/v1/models/nope/predict", bad, JSON, 404),
        ("DELETE", "/v1/models/cancer/predict", b"", {}, 405),
        ("GET", "/no/such/route", b"", {}, 404),
        # no Flask route matches a path with a newline: Flask's own 404, as a problem too
        ("GET", "/v1/models/a%0Ab/drift", b"", {}, 404),
        ("POST", "/v1/models/cancer/predict", b" " * (MAX_BODY_BYTES + 1), JSON, 413),
    ]
    for method, path, body, headers, status in cases:
        answer = server.request(method, path, body, headers)
        assert answer.status == status, (method, path, answer.body[:300])
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["status"] == status
        assert b"Traceback" not in answer.body
    v2 = server.request("POST", "/v2/models/cancer/infer", deep, JSON).json()
    assert "error" in v2  # Open Inference Protocol problems carry "error"
    assert "Traceback" not in server.log()


def test_not_ready_without_models_then_a_promotion_is_followed(
    gcp_app: GcpApp, demo_model: TrainResult
) -> None:
    server = gcp_app.server("http")
    ready = server.request("GET", "/v2/health/ready")
    assert ready.status == 503 and ready.json()["status"] == 503
    registry = gcp_app.registry()
    card = registry.register(demo_model.card, demo_model.onnx_bytes, name="cancer")
    registry.promote("cancer", card.version)
    answer = server.request("POST", "/v1/models/cancer/predict", predict_body(1), JSON)
    assert answer.status == 200 and answer.json()["version"] == card.version
    second = registry.register(demo_model.card, demo_model.onnx_bytes, name="cancer")
    registry.promote("cancer", second.version)
    answer = server.request("POST", "/v1/models/cancer/predict", predict_body(1), JSON)
    assert answer.json()["version"] == second.version  # the warm instance follows the alias


def test_request_conversion() -> None:
    import flask
    from functions.gcp.main import http_request

    app = flask.Flask("t")
    with app.test_request_context(
        "/v1/models/cancer/drift?window=5", headers={"Host": "fn-abc.a.run.app"}
    ):
        converted = http_request(flask.request)
    assert converted.path == "/v1/models/cancer/drift"
    assert converted.query == {"window": "5"}
    assert converted.headers.get("HOST") == "fn-abc.a.run.app"
