"""The transport-neutral dataplane: every route and every error status, with real models."""

from __future__ import annotations

import csv
import itertools
import logging
import math
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skyscore.adapters.local import LocalBlobStore
from skyscore.errors import PROBLEM_CONTENT_TYPE, IntegrityError
from skyscore.model.predictor import Predictor
from skyscore.model.registry import ModelRegistry
from skyscore.model.schema import FLOAT32_MAX, Batch, InputSchema
from skyscore.serving.dataplane import (
    ROUTES,
    DataPlane,
    Headers,
    InstanceDecoder,
    RegistryModelProvider,
    Request,
    Response,
    StaticModelProvider,
    match,
)
from tiny_model import tiny_model

JSON = {"content-type": "application/json"}


def load_instances(predictor: Predictor, path: Path, n: int) -> list[dict[str, Any]]:
    """The first ``n`` rows of a training CSV as JSON instances (numbers as numbers)."""
    with path.open(newline="") as handle:
        rows = list(itertools.islice(csv.DictReader(handle), n))
    card = predictor.card
    out = []
    for row in rows:
        row.pop(card.target, None)
        record: dict[str, Any] = dict(row)
        for column in card.numeric_features:
            record[column] = float(row[column])
        out.append(record)
    return out


@pytest.fixture(scope="module")
def cancer_rows(demo_predictor: Predictor, data_dir: Path) -> list[dict[str, Any]]:
    return load_instances(demo_predictor, data_dir / "breast_cancer.csv", 20)


@pytest.fixture(scope="module")
def fraud_rows(hgb_predictor: Predictor, data_dir: Path) -> list[dict[str, Any]]:
    return load_instances(hgb_predictor, data_dir / "synthetic.csv", 20)


@pytest.fixture(scope="module")
def plane(demo_predictor: Predictor, hgb_predictor: Predictor) -> DataPlane:
    return DataPlane(
        StaticModelProvider([demo_predictor, hgb_predictor]),
        max_body_bytes=256 * 1024,
        max_instances=50,
    )


def call(
    plane: DataPlane,
    method: str,
    path: str,
    payload: Any = None,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    if body is None:
        body = b"" if payload is None else msgspec.json.encode(payload)
    if headers is None:
        headers = JSON if method in ("POST", "PUT") else {}
    return plane.handle(Request(method, path, headers, body))


def problem(response: Response, status: int) -> dict[str, Any]:
    """The problem body of an error response, checked for the RFC 9457 essentials."""
    assert response.status == status, response.body
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://skyscore.dev/problems/")
    assert body["title"] and body["detail"]
    assert "Traceback" not in response.body.decode()
    return body


# ------------------------------------------------------------------------------ /v1 predict
def test_predict_matches_the_predictor(
    plane: DataPlane, demo_predictor: Predictor, cancer_rows: list[dict[str, Any]]
) -> None:
    response = call(plane, "POST", "/v1/models/cancer/predict", {"instances": cancer_rows})
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["model"] == "cancer"
    assert body["version"] == demo_predictor.version
    expected = demo_predictor.predict_instances(cancer_rows)
    assert body["predictions"] == expected
    assert [p["id"] for p in body["predictions"]] == [r["patient_id"] for r in cancer_rows]
    assert set(body["predictions"][0]["probabilities"]) == {"benign", "malignant"}


def test_predict_int_classes_and_categoricals(
    plane: DataPlane, hgb_predictor: Predictor, fraud_rows: list[dict[str, Any]]
) -> None:
    response = call(plane, "POST", "/v1/models/fraud/predict", {"instances": fraud_rows})
    assert response.status == 200
    predictions = response.json()["predictions"]
    assert predictions == hgb_predictor.predict_instances(fraud_rows)
    assert all(p["label"] in (0, 1) for p in predictions)


def test_predict_nulls_are_missing_values(
    plane: DataPlane, hgb_predictor: Predictor, fraud_rows: list[dict[str, Any]]
) -> None:
    row = dict(fraud_rows[0], f00=None, region=None)
    response = call(plane, "POST", "/v1/models/fraud/predict", {"instances": [row]})
    assert response.status == 200
    assert response.json()["predictions"] == hgb_predictor.predict_instances([row])


def test_predict_id_column_override(plane: DataPlane, cancer_rows: list[dict[str, Any]]) -> None:
    rows = [dict(r, ref=f"r{i}") for i, r in enumerate(cancer_rows[:3])]
    response = call(
        plane, "POST", "/v1/models/cancer/predict", {"instances": rows, "id_column": "ref"}
    )
    assert [p["id"] for p in response.json()["predictions"]] == ["r0", "r1", "r2"]


def test_predict_empty_list(plane: DataPlane) -> None:
    response = call(plane, "POST", "/v1/models/cancer/predict", {"instances": []})
    assert response.status == 200
    assert response.json()["predictions"] == []


def test_content_type_with_parameters_is_json(
    plane: DataPlane, cancer_rows: list[dict[str, Any]]
) -> None:
    for content_type in (
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/x+json",
    ):
        response = call(
            plane,
            "POST",
            "/v1/models/cancer/predict",
            {"instances": cancer_rows[:1]},
            headers={"Content-Type": content_type},
        )
        assert response.status == 200, content_type


# ------------------------------------------------------------------------------ errors
def test_422_names_instance_and_field(plane: DataPlane, cancer_rows: list[dict[str, Any]]) -> None:
    rows = [cancer_rows[0], dict(cancer_rows[1], mean_radius="big"), cancer_rows[2]]
    body = problem(call(plane, "POST", "/v1/models/cancer/predict", {"instances": rows}), 422)
    assert body["row"] == 1
    assert body["field"] == "mean_radius"
    assert "instance 1" in body["detail"] and "mean_radius" in body["detail"]
    assert body["errors"] == [
        {"row": 1, "column": "mean_radius", "reason": body["errors"][0]["reason"]}
    ]


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"mean_radius": True}, "mean_radius", "boolean"),
        ({"mean_radius": 1e39}, "mean_radius", "float32"),
        ({"size_band": 1.5}, "size_band", "string category"),
        ({"size_band": ["a"]}, "size_band", "string category"),
    ],
)
def test_422_value_problems(
    plane: DataPlane,
    cancer_rows: list[dict[str, Any]],
    change: dict[str, Any],
    field: str,
    reason: str,
) -> None:
    row = dict(cancer_rows[0], **change)
    body = problem(call(plane, "POST", "/v1/models/cancer/predict", {"instances": [row]}), 422)
    assert body["field"] == field
    assert body["row"] == 0
    assert reason in body["detail"]


def test_422_missing_column_and_non_object(
    plane: DataPlane, cancer_rows: list[dict[str, Any]]
) -> None:
    row = dict(cancer_rows[0])
    del row["worst_area"]
    body = problem(
        call(plane, "POST", "/v1/models/cancer/predict", {"instances": [cancer_rows[0], row]}),
        422,
    )
    assert (body["row"], body["field"]) == (1, "worst_area")
    assert "missing column" in body["detail"]
    body = problem(call(plane, "POST", "/v1/models/cancer/predict", {"instances": [[1, 2]]}), 422)
    assert body["row"] == 0
    assert "JSON object" in body["detail"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "instances"),
        (b'{"rows": []}', "instances"),
        (b'{"instances": {"a": 1}}', "instances"),
        (b'{"instances": [], "id_column": 3}', "id_column"),
    ],
)
def test_400_bad_envelope(plane: DataPlane, body: bytes, needle: str) -> None:
    detail = problem(call(plane, "POST", "/v1/models/cancer/predict", body=body), 400)["detail"]
    assert needle in detail


def test_404_unknown_route_and_model(plane: DataPlane, cancer_rows: list[dict[str, Any]]) -> None:
    for path in ("/", "/v1", "/v1/models/cancer", "/v1/models/cancer/predict/extra", "/v3/x"):
        problem(call(plane, "GET", path), 404)
    body = problem(
        call(plane, "POST", "/v1/models/nope/predict", {"instances": cancer_rows[:1]}), 404
    )
    assert "nope" in body["detail"]
    assert body["instance"] == "/v1/models/nope/predict"
    assert body["type"].endswith("/model-not-found")


def test_405_lists_allowed_methods(plane: DataPlane) -> None:
    response = call(plane, "GET", "/v1/models/cancer/predict")
    assert problem(response, 405)["allow"] == ["POST"]
    assert response.headers["allow"] == "POST"
    response = call(plane, "DELETE", "/v2/health/live")
    body = problem(response, 405)
    assert response.headers["allow"] == "GET, HEAD"
    assert body["error"] == body["detail"]  # a V2 route


def test_413_body_and_instance_limits(plane: DataPlane, cancer_rows: list[dict[str, Any]]) -> None:
    big = b'{"instances": [' + b" " * (256 * 1024) + b"]}"
    body = problem(call(plane, "POST", "/v1/models/cancer/predict", body=big), 413)
    assert body["max_body_bytes"] == 256 * 1024
    many = {"instances": cancer_rows[:1] * 51}
    body = problem(call(plane, "POST", "/v1/models/cancer/predict", many), 413)
    assert body["max_instances"] == 50
    assert "51" in body["detail"]


def test_default_limits_are_lambdas(demo_predictor: Predictor) -> None:
    plane = DataPlane(StaticModelProvider([demo_predictor]))
    assert plane.max_body_bytes == 6 * 1024 * 1024
    assert plane.max_instances == 10_000


@pytest.mark.parametrize(
    "headers", [{}, {"content-type": "text/plain"}, {"Content-Type": "text/csv"}]
)
def test_415_not_json(
    plane: DataPlane, cancer_rows: list[dict[str, Any]], headers: dict[str, str]
) -> None:
    response = call(
        plane, "POST", "/v1/models/cancer/predict", {"instances": cancer_rows[:1]}, headers=headers
    )
    assert "application/json" in problem(response, 415)["detail"]


class Exploding:
    """A provider whose models fail in unexpected ways."""

    def get(self, name: str) -> Predictor:
        if name == "corrupt":
            raise IntegrityError("model.onnx has the wrong checksum")
        raise RuntimeError("secret internal state /etc/passwd")

    def names(self) -> list[str]:
        return ["boom", "corrupt"]

    def ready(self) -> bool:
        raise RuntimeError("secret internal state")


def test_500_without_a_stack_trace(caplog: pytest.LogCaptureFixture) -> None:
    plane = DataPlane(Exploding())
    with caplog.at_level(logging.ERROR, logger="skyscore.serving.dataplane"):
        response = call(plane, "POST", "/v1/models/boom/predict", {"instances": []})
        v2_response = call(plane, "GET", "/v2/health/ready")
    body = problem(response, 500)
    assert "secret" not in response.body.decode()
    assert body["detail"] == "An unexpected error occurred; it has been logged."
    assert problem(v2_response, 500)["error"] == body["detail"]
    assert "secret internal state" in caplog.text  # the log keeps the details
    assert any(record.exc_info for record in caplog.records)


def test_typed_model_errors_keep_their_status() -> None:
    plane = DataPlane(Exploding())
    body = problem(call(plane, "POST", "/v1/models/corrupt/predict", {"instances": []}), 500)
    assert "checksum" in body["detail"]
    models = call(plane, "GET", "/v1/models").json()["models"]
    assert models == [
        {"name": "boom", "version": None, "ready": False, "detail": models[0]["detail"]},
        {
            "name": "corrupt",
            "version": None,
            "ready": False,
            "detail": "model.onnx has the wrong checksum",
        },
    ]
    assert "secret" not in models[0]["detail"]
    body = problem(call(plane, "GET", "/v2/models/corrupt/ready"), 503)
    assert "checksum" in body["error"]
    problem(call(plane, "GET", "/v2/models/boom/ready"), 503)


# ------------------------------------------------------------------------------ other routes
def test_health_and_listing(plane: DataPlane, demo_predictor: Predictor) -> None:
    assert call(plane, "GET", "/v2/health/live").json() == {"live": True}
    assert call(plane, "GET", "/v2/health/ready").json() == {"ready": True}
    assert call(plane, "GET", "/v2/models/cancer/ready").json() == {"name": "cancer", "ready": True}
    problem(call(plane, "GET", "/v2/models/nope/ready"), 404)
    listing = call(plane, "GET", "/v1/models").json()
    assert {"name": "cancer", "version": demo_predictor.version, "ready": True} in listing["models"]
    server = call(plane, "GET", "/v2").json()
    assert server["name"] == "skyscore" and server["extensions"] == []


def test_not_ready_without_models() -> None:
    plane = DataPlane(StaticModelProvider([]))
    body = problem(call(plane, "GET", "/v2/health/ready"), 503)
    assert body["error"] == body["detail"]
    assert call(plane, "GET", "/v2/health/live").status == 200


def test_head_is_get_without_changing_the_answer(plane: DataPlane) -> None:
    head = call(plane, "HEAD", "/v2/health/live")
    assert head.status == 200
    assert head.body == call(plane, "GET", "/v2/health/live").body  # the transport drops it


def test_openapi_route(plane: DataPlane) -> None:
    response = call(plane, "GET", "/openapi.json")
    assert response.status == 200
    assert response.json()["openapi"] == "3.1.0"


def test_model_metadata(plane: DataPlane, hgb_predictor: Predictor) -> None:
    body = call(plane, "GET", "/v2/models/fraud").json()
    assert body["name"] == "fraud"
    assert body["versions"] == [hgb_predictor.version]
    assert body["platform"] == "onnx"
    names = [t["name"] for t in body["inputs"]]
    assert names == hgb_predictor.card.numeric_features + hgb_predictor.card.categorical_features
    assert {t["datatype"] for t in body["inputs"]} == {"FP32", "BYTES"}
    outputs = {t["name"]: t for t in body["outputs"]}
    assert outputs["label"]["datatype"] == "INT64"
    assert outputs["probabilities"]["shape"] == [-1, 2]
    problem(call(plane, "GET", "/v2/models/nope"), 404)


# ------------------------------------------------------------------------------ /v2 infer
def column_request(
    predictor: Predictor, rows: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    card = predictor.card
    inputs = [
        {"name": c, "shape": [len(rows)], "datatype": "FP64", "data": [r[c] for r in rows]}
        for c in card.numeric_features
    ] + [
        {"name": c, "shape": [len(rows), 1], "datatype": "BYTES", "data": [[r[c]] for r in rows]}
        for c in card.categorical_features
    ]
    return {"inputs": inputs, **extra}


def tensor_request(predictor: Predictor, rows: list[dict[str, Any]]) -> dict[str, Any]:
    card = predictor.card
    inputs = [
        {
            "name": "numeric",
            "shape": [len(rows), len(card.numeric_features)],
            "datatype": "FP32",
            "data": [[r[c] for c in card.numeric_features] for r in rows],
        }
    ]
    if card.categorical_features:
        inputs.append(
            {
                "name": "categorical",
                "shape": [len(rows), len(card.categorical_features)],
                "datatype": "BYTES",
                "data": [r[c] for r in rows for c in card.categorical_features],  # flat
            }
        )
    return {"inputs": inputs}


@pytest.mark.parametrize("model", ["cancer", "fraud"])
def test_v2_infer_forms_agree_with_predict(
    plane: DataPlane,
    model: str,
    demo_predictor: Predictor,
    hgb_predictor: Predictor,
    cancer_rows: list[dict[str, Any]],
    fraud_rows: list[dict[str, Any]],
) -> None:
    predictor, rows = (
        (demo_predictor, cancer_rows) if model == "cancer" else (hgb_predictor, fraud_rows)
    )
    v1 = call(plane, "POST", f"/v1/models/{model}/predict", {"instances": rows}).json()
    names = predictor.class_names
    expected = [[p["probabilities"][c] for c in names] for p in v1["predictions"]]
    labels = [p["label"] for p in v1["predictions"]]
    for payload in (column_request(predictor, rows, id="req-7"), tensor_request(predictor, rows)):
        response = call(plane, "POST", f"/v2/models/{model}/infer", payload)
        assert response.status == 200, response.body
        body = response.json()
        assert body["model_name"] == model
        assert body["model_version"] == predictor.version
        outputs = {o["name"]: o for o in body["outputs"]}
        probabilities = outputs["probabilities"]
        assert probabilities["datatype"] == "FP32"
        assert probabilities["shape"] == [len(rows), len(names)]
        assert probabilities["parameters"]["classes"] == names
        got = np.asarray(probabilities["data"]).reshape(len(rows), len(names)).tolist()
        assert got == expected  # bit-identical: the same float32 tensors reach ONNX
        assert outputs["label"]["data"] == labels
        assert outputs["label"]["datatype"] == ("BYTES" if model == "cancer" else "INT64")
    assert body.get("id") is None
    echoed = call(
        plane, "POST", f"/v2/models/{model}/infer", column_request(predictor, rows, id="x")
    )
    assert echoed.json()["id"] == "x"


def test_v2_requested_outputs(
    plane: DataPlane, demo_predictor: Predictor, cancer_rows: list[dict[str, Any]]
) -> None:
    payload = column_request(demo_predictor, cancer_rows[:2], outputs=[{"name": "label"}])
    body = call(plane, "POST", "/v2/models/cancer/infer", payload).json()
    assert [o["name"] for o in body["outputs"]] == ["label"]
    payload["outputs"] = [{"name": "logits"}]
    assert (
        "logits" in problem(call(plane, "POST", "/v2/models/cancer/infer", payload), 400)["error"]
    )


def test_v2_null_is_missing_like_v1(
    plane: DataPlane, hgb_predictor: Predictor, fraud_rows: list[dict[str, Any]]
) -> None:
    rows = [dict(fraud_rows[0], f03=None, tier=None), fraud_rows[1]]
    v1 = call(plane, "POST", "/v1/models/fraud/predict", {"instances": rows}).json()
    v2 = call(plane, "POST", "/v2/models/fraud/infer", column_request(hgb_predictor, rows)).json()
    probabilities = next(o for o in v2["outputs"] if o["name"] == "probabilities")["data"]
    assert probabilities[:2] == [v1["predictions"][0]["probabilities"][c] for c in ("0", "1")]


def test_v2_errors(
    plane: DataPlane, demo_predictor: Predictor, cancer_rows: list[dict[str, Any]]
) -> None:
    url = "/v2/models/cancer/infer"
    good = column_request(demo_predictor, cancer_rows[:3])

    def with_input(name: str, **changes: Any) -> dict[str, Any]:
        inputs = [dict(t, **changes) if t["name"] == name else t for t in good["inputs"]]
        return {"inputs": inputs}

    body = problem(call(plane, "POST", url, with_input("mean_area", data=[1.0, "x", 2.0])), 422)
    assert (body["row"], body["field"]) == (1, "mean_area")
    assert body["error"] == body["detail"]
    assert "instance 1" in body["detail"]
    # a datatype the column cannot take, or a value the datatype cannot hold: malformed (400)
    body = problem(call(plane, "POST", url, with_input("mean_area", datatype="BYTES")), 400)
    assert body["field"] == "mean_area"
    body = problem(call(plane, "POST", url, with_input("mean_area", datatype="BOOL")), 400)
    assert body["field"] == "mean_area"
    int8 = with_input("mean_area", datatype="INT8", data=[1, 300, 2])
    body = problem(call(plane, "POST", url, int8), 400)
    assert (body["row"], body["field"]) == (1, "mean_area") and "INT8" in body["detail"]
    body = problem(call(plane, "POST", url, with_input("size_band", data=[["a"], [2], ["b"]])), 422)
    assert (body["row"], body["field"]) == (1, "size_band")
    body = problem(call(plane, "POST", url, with_input("mean_area", shape=[4])), 400)
    assert "instances" in body["detail"] or "values" in body["detail"]
    body = problem(call(plane, "POST", url, with_input("mean_area", shape=[3, 2])), 400)
    assert "[N] or [N, 1]" in body["detail"]
    missing = {"inputs": [t for t in good["inputs"] if t["name"] != "worst_area"]}
    assert problem(call(plane, "POST", url, missing), 422)["field"] == "worst_area"
    typo = {
        "inputs": [
            *good["inputs"],
            {"name": "mean_radiuss", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]},
        ]
    }
    assert "mean_radiuss" in problem(call(plane, "POST", url, typo), 400)["detail"]
    bad_type = with_input("mean_area", datatype="FLOAT")
    assert problem(call(plane, "POST", url, bad_type), 400)["error"]
    problem(call(plane, "POST", url, {"inputs": []}), 400)
    problem(call(plane, "POST", url, body=b"[]"), 400)
    problem(
        call(plane, "POST", url, good, headers={"content-type": "application/octet-stream"}), 415
    )
    problem(call(plane, "POST", "/v2/models/nope/infer", good), 404)
    many = column_request(demo_predictor, cancer_rows[:1] * 51)
    assert problem(call(plane, "POST", url, many), 413)["max_instances"] == 50


def test_v2_id_column_tensor_is_accepted(
    plane: DataPlane, demo_predictor: Predictor, cancer_rows: list[dict[str, Any]]
) -> None:
    payload = column_request(demo_predictor, cancer_rows[:2])
    payload["inputs"].append(
        {"name": "patient_id", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}
    )
    assert call(plane, "POST", "/v2/models/cancer/infer", payload).status == 200


# ------------------------------------------------------------------------------ plumbing
def test_headers_are_case_insensitive() -> None:
    headers = Headers({"Content-Type": "application/json", "X-Trace": "1"})
    assert headers["content-type"] == headers["CONTENT-TYPE"] == "application/json"
    assert "x-trace" in headers and "nope" not in headers
    assert headers.get("X-TRACE") == "1" and headers.get("missing") is None
    assert len(headers) == 2 and sorted(headers) == ["content-type", "x-trace"]
    assert Headers([("A", "1")])["a"] == "1"


def test_request_normalises_method_path_and_query() -> None:
    request = Request("post", "/v1/models/a/predict?debug=1&x=y", {"Content-Type": "x"}, b"{}")
    assert request.method == "POST"
    assert request.path == "/v1/models/a/predict"
    assert request.query == {"debug": "1", "x": "y"}
    assert request.headers["content-type"] == "x"


def test_request_header_reads_any_form_of_headers() -> None:
    """``header`` finds a name however the transport spelled it; a lower-case dict is read as
    it is, without building the case-insensitive mapping."""
    lower = Request("POST", "/", {"content-type": "a"})
    assert lower.header("content-type") == "a" and lower._headers is None
    assert lower.headers["Content-Type"] == "a"
    for headers in (
        {"Content-Type": "a"},
        Headers({"CONTENT-TYPE": "a"}),
        [("Content-Type", "a")],
        (("content-type", "a"),),
    ):
        request = Request("POST", "/", headers)
        assert request.header("content-type") == "a", headers
        assert request.headers.get("content-type") == "a"
    empty = Request("GET", "/")
    assert empty.header("content-type") is None and len(empty.headers) == 0


def test_router_matches_the_route_table() -> None:
    for route in ROUTES:
        path = route.path.replace("{name}", "my-model.v2")
        found = match(path)
        assert found is not None, route.path
        routes, params = found
        assert routes[route.method] is route
        assert params == (["my-model.v2"] if "{name}" in route.path else [])
    assert match("/v2/models/a%2Db/ready") == (match("/v2/models/x/ready")[0], ["a-b"])  # type: ignore[index]
    assert match("/v2/models//ready") is None
    assert match("/v1/models/a/predict/") is not None  # a trailing slash is tolerated


def test_registry_provider(tmp_path: Path) -> None:
    registry = ModelRegistry(LocalBlobStore(tmp_path), refresh_seconds=0)
    provider = RegistryModelProvider(registry)
    plane = DataPlane(provider)
    assert not provider.ready()
    problem(call(plane, "GET", "/v2/health/ready"), 503)
    card, data = tiny_model()
    registered = registry.register(card, data)
    assert provider.names() == ["tiny"]
    assert not provider.ready()  # registered, not promoted
    listing = call(plane, "GET", "/v1/models").json()["models"]
    assert listing[0]["ready"] is False and "production" in listing[0]["detail"]
    registry.promote("tiny", registered.version)
    assert provider.ready()
    instance = {"x1": 0.5, "x2": -1.0, "color": "red"}
    body = call(plane, "POST", "/v1/models/tiny/predict", {"instances": [instance]}).json()
    assert body["version"] == registered.version
    problem(call(plane, "POST", "/v1/models/not%20a%20name/predict", {"instances": []}), 404)
    problem(call(plane, "GET", "/v2/models/..%2F..%2Fetc"), 404)


# ------------------------------------------------------------------------------ typed instances
SCHEMA = InputSchema(["x1", "x2"], ["color"], id_column="id")
VALUES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.just(FLOAT32_MAX * 1.5),
    st.none(),
    st.booleans(),
    st.text(max_size=3),
    st.lists(st.integers(), max_size=1),
)
RECORDS = st.lists(
    st.dictionaries(st.sampled_from(["x1", "x2", "color", "id", "extra"]), VALUES, max_size=5)
    | st.fixed_dictionaries({"x1": VALUES, "x2": VALUES, "color": VALUES, "id": VALUES}),
    min_size=1,
    max_size=4,
)


def body_of(records: Any, **extra: Any) -> bytes:
    return msgspec.json.encode({"instances": records, **extra})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(RECORDS)
def test_instance_decoder_agrees_with_the_schema(records: list[dict[str, Any]]) -> None:
    """The typed decoder builds exactly the canonical batch, or declines."""
    decoder = InstanceDecoder.for_schema(SCHEMA)
    assert decoder is not None
    fast = decoder.decode(body_of(records))
    canonical, errors = SCHEMA.records_to_batch(records, first_row=0)
    if errors:
        assert fast is None
        return
    if fast is None:  # declining is always allowed (e.g. integer categories)
        return
    assert np.array_equal(fast.rows, canonical.rows)
    assert fast.numeric.dtype == canonical.numeric.dtype == np.float32
    assert np.array_equal(fast.numeric, canonical.numeric, equal_nan=True)
    assert fast.categorical.shape == canonical.categorical.shape
    assert fast.categorical.tolist() == canonical.categorical.tolist()
    assert fast.ids == canonical.ids


def test_instance_decoder_takes_the_common_cases() -> None:
    decoder = InstanceDecoder.for_schema(SCHEMA)
    assert decoder is not None
    rows = [{"x1": 1, "x2": 2.5, "color": "red", "id": 7}, {"x1": None, "x2": 0.0, "color": None}]
    batch = decoder.decode(body_of(rows))
    assert batch is not None
    assert batch.numeric.tolist()[0] == [1.0, 2.5]
    assert math.isnan(batch.numeric[1, 0])
    assert batch.categorical.tolist() == [["red"], [""]]
    assert batch.ids == [7, None]
    assert decoder.decode(body_of(rows, id_column="id")) is not None
    # one instance takes its own path (packed float32): the same batch as the general path
    for row in rows:
        one = decoder.decode(body_of([row]))
        general = decoder.decode(body_of([row, row]))
        assert one is not None and general is not None
        assert one.numeric.shape == (1, 2) and one.numeric.dtype == np.float32
        assert np.array_equal(one.numeric, general.numeric[:1], equal_nan=True)
        assert one.categorical.tolist() == general.categorical.tolist()[:1]
        assert one.ids == general.ids[:1] and one.rows.tolist() == [0]
    one = decoder.decode(body_of([{"x1": 0.1, "x2": -3e38, "color": "red"}]))
    assert one is not None and one.numeric.tolist() == [[np.float32(0.1), np.float32(-3e38)]]
    for numeric, categorical in ((["x1"], []), ([], ["color"])):
        narrow = InstanceDecoder.for_schema(InputSchema(numeric, categorical))
        assert narrow is not None
        single = narrow.decode(body_of([{"x1": 2, "color": "red"}]))
        assert single is not None
        assert single.numeric.shape == (1, len(numeric))
        assert single.categorical.shape == (1, len(categorical))
    # the canonical path decides these
    assert decoder.decode(body_of([{"x1": 1, "x2": 2, "color": 3}])) is None
    assert decoder.decode(body_of([{"x1": 1, "color": "red"}])) is None  # missing x2
    assert decoder.decode(body_of([{"x1": 1e39, "x2": 2, "color": "red"}])) is None
    assert decoder.decode(body_of([{"x1": True, "x2": 2, "color": "red"}])) is None
    assert decoder.decode(body_of(rows, id_column="other")) is None
    assert decoder.decode(body_of([])) is None
    assert decoder.decode(b'{"instances": [1]}') is None
    assert decoder.decode(b"not json") is None
    # column names need not be identifiers
    spaced = InstanceDecoder.for_schema(InputSchema(["mean radius"], ["a-b"]))
    assert spaced is not None
    named = spaced.decode(body_of([{"mean radius": 3, "a-b": "x"}]))
    assert named is not None and named.numeric.tolist() == [[3.0]] and named.ids is None
    assert InstanceDecoder.for_schema(InputSchema(["x1"], [], strict=True)) is None
    assert InstanceDecoder.for_schema(InputSchema(["x1"], [], id_column="x1")) is None


def test_online_drift_window_follows_http_traffic(hgb_predictor: Predictor) -> None:
    """Requests feed a rolling window; shifted traffic shows as drift at /v1/models/{name}/drift."""
    from skyscore.monitoring.online import OnlineDrift
    from skyscore.serving.dataplane import DataPlane, Request, StaticModelProvider
    from skyscore.training.datasets import synthetic_arrays

    plane = DataPlane(
        StaticModelProvider([hgb_predictor]), online_drift=OnlineDrift(flush_every=8, window=100)
    )
    card = hgb_predictor.card

    def send(shift: float, count: int, seed: int) -> None:
        numeric, categorical, _ = synthetic_arrays(count, seed=seed, shift=shift)
        for i in range(count):
            instance = dict(zip(card.numeric_features, numeric[i].tolist(), strict=True))
            instance.update(zip(card.categorical_features, categorical[i].tolist(), strict=True))
            body = msgspec.json.encode({"instances": [instance]})
            headers = {"content-type": "application/json"}
            assert (
                plane.handle(Request("POST", "/v1/models/fraud/predict", headers, body)).status
                == 200
            )

    def drift() -> dict[str, Any]:
        response = plane.handle(Request("GET", "/v1/models/fraud/drift"))
        assert response.status == 200
        result: dict[str, Any] = response.json()
        return result

    send(0.0, 300, 1)
    quiet = drift()
    assert quiet["rows"] == 300 and quiet["status"] != "drift"
    send(2.0, 300, 2)
    shifted = drift()
    assert shifted["rows"] == 600 and shifted["status"] == "drift"


def test_online_drift_buffers_stay_bounded_by_rows(hgb_predictor: Predictor) -> None:
    """Large batch requests are counted once ``flush_rows`` rows wait, whatever the count of
    requests; every row reaches the window."""
    from skyscore.monitoring.online import OnlineDrift
    from skyscore.training.datasets import synthetic_arrays

    online = OnlineDrift(flush_every=1000, window=100, flush_rows=500)
    numeric, categorical, _ = synthetic_arrays(300, seed=3)
    probabilities = hgb_predictor.predict_arrays(numeric, categorical)
    online.observe(hgb_predictor, numeric, categorical, probabilities)
    assert [b.rows for b in online._buffers.values()] == [300]  # waiting
    online.observe(hgb_predictor, numeric, categorical, probabilities)
    assert not online._buffers  # 600 >= 500: counted
    online.observe(hgb_predictor, numeric[:10], categorical[:10], probabilities[:10])
    assert online.result(hgb_predictor)["rows"] == 610


def test_predictions_take_the_first_of_tied_classes_like_argmax() -> None:
    card, data = tiny_model(0.3, name="tiny")
    predictor = Predictor(card, data)
    probabilities = np.asarray([[0.5, 0.5], [0.25, 0.75], [0.75, 0.25]], dtype=np.float32)
    batch = Batch(np.arange(3), np.zeros((3, 2), np.float32), np.zeros((3, 1), object), None)
    labels = [p["label"] for p in predictor.format_predictions(batch, probabilities)]
    expected = [predictor.classes[i] for i in predictor.label_indices(probabilities).tolist()]
    assert labels == expected == [predictor.classes[0], predictor.classes[1], predictor.classes[0]]
    with_ids = Batch(batch.rows, batch.numeric, batch.categorical, ["a", None, 3])
    assert [list(p) for p in predictor.format_predictions(with_ids, probabilities)] == [
        ["id", "label", "probabilities"]
    ] * 3
    # one row (the single-instance path) formats as the first row of a batch does
    for ids in (None, ["a", None, 3]):
        many = Batch(batch.rows, batch.numeric, batch.categorical, ids)
        for i in range(3):
            one = Batch(
                batch.rows[i : i + 1], batch.numeric[i : i + 1], batch.categorical[i : i + 1]
            )
            one.ids = None if ids is None else ids[i : i + 1]
            assert predictor.format_predictions(one, probabilities[i : i + 1]) == [
                predictor.format_predictions(many, probabilities)[i]
            ]


def test_single_instances_share_read_only_category_rows() -> None:
    """One-instance requests reuse a cached (1, m) category array; long texts are not kept."""
    decoder = InstanceDecoder.for_schema(SCHEMA)
    assert decoder is not None
    first = decoder.decode(body_of([{"x1": 1, "x2": 2, "color": "red"}]))
    again = decoder.decode(body_of([{"x1": 3, "x2": 4, "color": "red"}]))
    missing = decoder.decode(body_of([{"x1": 3, "x2": 4, "color": None}]))
    assert first is not None and again is not None and missing is not None
    assert again.categorical is first.categorical and not first.categorical.flags.writeable
    assert missing.categorical.tolist() == [[""]] and not missing.categorical.flags.writeable
    assert first.numeric is not again.numeric and again.numeric.flags.writeable
    long = "x" * 300
    a = decoder.decode(body_of([{"x1": 1, "x2": 2, "color": long}]))
    b = decoder.decode(body_of([{"x1": 1, "x2": 2, "color": long}]))
    assert a is not None and b is not None
    assert a.categorical.tolist() == [[long]] and a.categorical is not b.categorical
    for i in range(5000):  # high cardinality: the cache starts over instead of growing
        decoder.decode(body_of([{"x1": 1, "x2": 2, "color": f"c{i}"}]))
    assert 0 < len(decoder._category_rows) <= 4096
