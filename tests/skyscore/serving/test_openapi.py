"""The OpenAPI document: well formed, complete, and true to what the dataplane answers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from skyscore.errors import PROBLEM_CONTENT_TYPE
from skyscore.model.predictor import Predictor
from skyscore.serving.dataplane import ROUTES, DataPlane, Request, Response, StaticModelProvider
from skyscore.serving.openapi import openapi_document, openapi_json

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


# ------------------------------------------------------------------------------ a tiny validator
class SchemaError(AssertionError):
    pass


def _resolve(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), ref
        node: Any = document
        for part in ref[2:].split("/"):
            node = node[part]
        schema = node
    return schema


_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def validate(value: Any, schema: dict[str, Any], document: dict[str, Any], at: str = "$") -> None:
    """The subset of JSON Schema 2020-12 that msgspec emits; raises SchemaError naming where."""
    schema = _resolve(schema, document)
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema["oneOf"]
        matches = 0
        for option in options:
            try:
                validate(value, option, document, at)
            except SchemaError:
                continue
            matches += 1
        if matches == 0 or ("oneOf" in schema and matches > 1):
            raise SchemaError(f"{at}: {value!r} matches {matches} of {options}")
    for option in schema.get("allOf", []):
        validate(value, option, document, at)
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_TYPES[k](value) for k in kinds):
            raise SchemaError(f"{at}: {value!r} is not of type {kinds}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(f"{at}: {value!r} not in {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        raise SchemaError(f"{at}: {value!r} != {schema['const']!r}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 1e18):
            raise SchemaError(f"{at}: length of {value!r}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise SchemaError(f"{at}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaError(f"{at}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaError(f"{at}: {value} > {schema['maximum']}")
    if isinstance(value, list):
        if "items" in schema:
            for i, item in enumerate(value):
                validate(item, schema["items"], document, f"{at}[{i}]")
        if len(value) < schema.get("minItems", 0):
            raise SchemaError(f"{at}: too few items")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                raise SchemaError(f"{at}: missing required {key!r}")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                validate(item, properties[key], document, f"{at}.{key}")
            elif extra is False:
                raise SchemaError(f"{at}: unexpected member {key!r}")
            elif isinstance(extra, dict):
                validate(item, extra, document, f"{at}.{key}")


def test_validator_catches_mistakes() -> None:
    document = openapi_document()
    schema = {"$ref": "#/components/schemas/PredictResponse"}
    validate({"predictions": [], "model": "m", "version": "1"}, schema, document)
    for bad in (
        {"predictions": [], "model": "m"},
        {
            "predictions": [{"label": "a", "probabilities": {"a": "high"}}],
            "model": "m",
            "version": "1",
        },
        {"predictions": {}, "model": "m", "version": "1"},
    ):
        with pytest.raises(SchemaError):
            validate(bad, schema, document)


# ------------------------------------------------------------------------------ the document
def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_document_is_openapi_3_1() -> None:
    document = msgspec.json.decode(openapi_json())
    assert document == openapi_document()
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] and document["info"]["version"]
    assert document["paths"]
    operation_ids = []
    for path, item in document["paths"].items():
        assert path.startswith("/")
        assert set(item) <= METHODS, item.keys()
        for operation in item.values():
            operation_ids.append(operation["operationId"])
            assert operation["summary"]
            params = re.findall(r"{([^}]+)}", path)
            declared = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            assert declared == params
            assert all(p["required"] for p in operation.get("parameters", []))
            for status, response in operation["responses"].items():
                assert re.fullmatch(r"[1-5]\d\d", status)
                assert response["description"]
                assert len(response["content"]) == 1
            statuses = set(operation["responses"])
            assert {"404", "405", "500"} <= statuses
            if "requestBody" in operation:
                assert {"400", "413", "415", "422"} <= statuses
                assert set(operation["requestBody"]["content"]) == {"application/json"}
    assert len(operation_ids) == len(set(operation_ids))
    schemas = document["components"]["schemas"]
    for ref in _refs(document):
        _resolve({"$ref": ref}, document)  # every reference resolves
        assert ref.split("/")[-1] in schemas


def test_document_lists_exactly_the_route_table() -> None:
    document = openapi_document()
    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert documented == {(route.method, route.path) for route in ROUTES}
    for route in ROUTES:
        assert document["paths"][route.path][route.method.lower()]["operationId"] == route.operation


def test_errors_on_v2_routes_document_the_error_member() -> None:
    document = openapi_document()
    for route in ROUTES:
        schema = document["paths"][route.path][route.method.lower()]["responses"]["404"]
        ref = schema["content"][PROBLEM_CONTENT_TYPE]["schema"]["$ref"]
        assert ref.endswith("/V2Problem" if route.path.startswith("/v2") else "/Problem")


# ------------------------------------------------------------------------------ truthfulness
@pytest.fixture(scope="module")
def plane(demo_predictor: Predictor, hgb_predictor: Predictor) -> DataPlane:
    return DataPlane(StaticModelProvider([demo_predictor, hgb_predictor]), max_instances=5)


def _instance(predictor: Predictor) -> dict[str, Any]:
    record: dict[str, Any] = {c: 0.5 for c in predictor.card.numeric_features}
    record |= {c: "x" for c in predictor.card.categorical_features}
    return record


def _exchanges(demo: Predictor, hgb: Predictor) -> list[tuple[str, str, Any, dict[str, str]]]:
    """(method, path, payload, headers): every route, with good and bad requests."""
    json_headers = {"content-type": "application/json"}
    row = _instance(demo)
    columns = [
        {"name": c, "shape": [1], "datatype": "FP32", "data": [0.5]}
        for c in demo.card.numeric_features
    ] + [{"name": "size_band", "shape": [1], "datatype": "BYTES", "data": ["x"]}]
    return [
        ("POST", "/v1/models/cancer/predict", {"instances": [row, row]}, json_headers),
        ("POST", "/v1/models/fraud/predict", {"instances": [_instance(hgb)]}, json_headers),
        ("POST", "/v1/models/cancer/predict", {"instances": [{"mean_radius": "x"}]}, json_headers),
        ("POST", "/v1/models/cancer/predict", {"rows": []}, json_headers),
        ("POST", "/v1/models/cancer/predict", {"instances": [row] * 6}, json_headers),
        ("POST", "/v1/models/cancer/predict", {"instances": [row]}, {"content-type": "text/csv"}),
        ("POST", "/v1/models/nope/predict", {"instances": [row]}, json_headers),
        ("GET", "/v1/models/cancer/predict", None, {}),
        ("GET", "/v1/models", None, {}),
        ("GET", "/v2", None, {}),
        ("GET", "/v2/health/live", None, {}),
        ("GET", "/v2/health/ready", None, {}),
        ("GET", "/v2/models/cancer", None, {}),
        ("GET", "/v2/models/fraud", None, {}),
        ("GET", "/v2/models/nope", None, {}),
        ("GET", "/v2/models/cancer/ready", None, {}),
        ("GET", "/v2/models/nope/ready", None, {}),
        ("POST", "/v2/models/cancer/infer", {"id": "1", "inputs": columns}, json_headers),
        ("POST", "/v2/models/cancer/infer", {"inputs": columns[:-1]}, json_headers),
        ("POST", "/v2/models/cancer/infer", {"inputs": "x"}, json_headers),
        ("PUT", "/v2/models/cancer/infer", None, json_headers),
        ("GET", "/openapi.json", None, {}),
        ("GET", "/v1/models/cancer/drift", None, {}),
        ("GET", "/v1/models/nope/drift", None, {}),
    ]


def test_every_response_matches_its_documented_schema(
    plane: DataPlane, demo_predictor: Predictor, hgb_predictor: Predictor
) -> None:
    document = openapi_document()
    seen: set[tuple[str, str, str]] = set()
    for method, path, payload, headers in _exchanges(demo_predictor, hgb_predictor):
        body = b"" if payload is None else msgspec.json.encode(payload)
        response: Response = plane.handle(Request(method, path, headers, body))
        template = next(
            r.path for r in ROUTES if re.fullmatch(re.sub(r"{[^}]+}", "[^/]+", r.path), path)
        )
        operations = document["paths"][template]
        operation = operations.get(method.lower()) or next(iter(operations.values()))
        documented = operation["responses"].get(str(response.status))
        assert documented is not None, (method, path, response.status, "undocumented status")
        ((media_type, media),) = documented["content"].items()
        assert response.headers["content-type"] == media_type, (method, path)
        validate(response.json(), media["schema"], document, f"{method} {path}")
        if "requestBody" in operation and response.status == 200:
            request_schema = operation["requestBody"]["content"]["application/json"]["schema"]
            validate(payload, request_schema, document, f"request {method} {path}")
        seen.add((template, method, str(response.status)))
    # every route was exercised, and so was every error status that a request body can cause
    assert {(t, m) for t, m, _ in seen} >= {(r.path, r.method) for r in ROUTES}
    assert {s for _, _, s in seen} >= {"200", "400", "404", "405", "413", "415", "422"}


class _Broken:
    def get(self, name: str) -> Predictor:
        raise RuntimeError("boom")

    def names(self) -> list[str]:
        return []

    def ready(self) -> bool:
        return False


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v2/health/ready", 503),
        ("GET", "/v2/models/m/ready", 503),
        ("GET", "/v2/models/m", 500),
        ("POST", "/v1/models/m/predict", 500),
    ],
)
def test_failures_match_their_documented_schema(method: str, path: str, status: int) -> None:
    document = openapi_document()
    plane = DataPlane(_Broken())
    headers = {"content-type": "application/json"}
    response = plane.handle(Request(method, path, headers, b'{"instances": []}'))
    assert response.status == status
    template = re.sub(r"/models/m(/|$)", r"/models/{name}\1", path)
    documented = document["paths"][template][method.lower()]["responses"][str(status)]
    schema = documented["content"][PROBLEM_CONTENT_TYPE]["schema"]
    validate(response.json(), schema, document, path)
