"""The OpenAPI 3.1 document of the HTTP API, generated from the dataplane's route table.

Paths come from :data:`skyscore.serving.routes.ROUTES` (the table the router is built from) and
schemas from the same msgspec types that decode requests, via
``msgspec.json.schema_components``; so the document describes exactly what the server does.
Built on first request and cached: nothing here runs on a cold start.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from skyscore.errors import PROBLEM_CONTENT_TYPE
from skyscore.serving.routes import (
    JSON_CONTENT_TYPE,
    ROUTES,
    Problem,
    Route,
    V2Problem,
    package_version,
)

OPENAPI_VERSION = "3.1.0"
REF_TEMPLATE = "#/components/schemas/{name}"

_STATUS_TEXT = {
    200: "OK",
    400: "Bad request: not JSON, or the wrong envelope",
    404: "Unknown route or model",
    405: "Method not allowed on this route",
    413: "Body over the size limit, or too many instances",
    415: "Content-Type is not application/json",
    422: "Input does not match the model's schema (names the instance and field)",
    500: "Unexpected error (logged; no stack trace is returned)",
    503: "Not ready",
}

_DESCRIPTION = """\
Predictions from scikit-learn models served as ONNX. The same routes are served by the local
runtime (`skyscore serve`) and on AWS, Azure and GCP.

`/v2/...` is the Open Inference Protocol (KServe V2). Inference inputs are either one tensor
per model column (shape `[N]` or `[N, 1]`; FP32/FP64/INT* for numeric columns, BYTES or INT*
for categorical ones) or the two model tensors `numeric` (FP32 `[N, k]`) and `categorical`
(BYTES `[N, m]`); `GET /v2/models/{name}` lists both. Outputs are `label` and `probabilities`
(FP32 `[N, n_classes]`, class order in its `parameters.classes`).

Errors are RFC 9457 problem details (`application/problem+json`); on `/v2` routes they also
carry the protocol's `error` member.
"""


def _operation(route: Route, schemas: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    problem = schemas[V2Problem if route.v2 else Problem]
    operation: dict[str, Any] = {
        "operationId": route.operation,
        "summary": route.summary,
        "tags": [route.tag],
    }
    names = [s[1:-1] for s in route.path.split("/") if s.startswith("{") and s.endswith("}")]
    if names:
        operation["parameters"] = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
        ]
    if route.request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {JSON_CONTENT_TYPE: {"schema": schemas[route.request]}},
        }
    responses: dict[str, Any] = {
        str(route.status): {
            "description": _STATUS_TEXT.get(route.status, "OK"),
            "content": {JSON_CONTENT_TYPE: {"schema": schemas[route.response]}},
        }
    }
    for status in sorted(route.errors):
        responses[str(status)] = {
            "description": _STATUS_TEXT[status],
            "content": {PROBLEM_CONTENT_TYPE: {"schema": problem}},
        }
    operation["responses"] = responses
    return operation


def openapi_document(routes: tuple[Route, ...] = ROUTES) -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh dict) for ``routes``."""
    types: list[Any] = []
    for route in routes:
        for kind in (route.request, route.response):
            if kind is not None and kind not in types:
                types.append(kind)
    types += [Problem, V2Problem]
    refs, components = msgspec.json.schema_components(types, ref_template=REF_TEMPLATE)
    schemas = dict(zip(types, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "skyscore prediction API",
            "version": package_version(),
            "description": _DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "v1", "description": "skyscore's JSON prediction API"},
            {"name": "v2", "description": "Open Inference Protocol (KServe V2)"},
            {"name": "meta", "description": "API description"},
        ],
        "paths": paths,
        "components": {"schemas": components},
    }


@functools.cache
def openapi_json() -> bytes:
    """The document as JSON bytes, built once per process."""
    return msgspec.json.encode(openapi_document())
