"""The HTTP API as data: its messages, the route table and the router built from it.

Everything here is transport-neutral and depends on nothing else in :mod:`skyscore.serving`
but the Open Inference Protocol messages (:mod:`.v2`): the dataplane binds each route's
``operation`` to a handler (:data:`skyscore.serving.dataplane.HANDLERS`) and the OpenAPI
document (:mod:`.openapi`) is generated from the same table, so neither needs the other and
the documentation cannot drift from what is served.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from skyscore.serving import v2

__all__ = [
    "ANY_ERROR",
    "BODY_ERRORS",
    "JSON_CONTENT_TYPE",
    "MATCHES",
    "ROUTES",
    "ModelList",
    "ModelSummary",
    "PredictRequest",
    "PredictResponse",
    "Prediction",
    "Problem",
    "Route",
    "RowErrorItem",
    "V2Problem",
    "match",
    "package_version",
]

JSON_CONTENT_TYPE = "application/json"


# ------------------------------------------------------------------------------ /v1 messages
class PredictRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``POST /v1/models/{name}/predict`` body: each instance maps column names to values."""

    instances: list[Any]
    id_column: str | None = None


class Prediction(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One prediction: the id (when the model or request names an id column), label, probabilities."""

    label: str | int
    probabilities: dict[str, float]
    id: Any | None = None


class PredictResponse(msgspec.Struct, kw_only=True):
    """``POST /v1/models/{name}/predict`` answer, predictions in instance order."""

    predictions: list[Prediction]
    model: str
    version: str


class ModelSummary(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A model and the version its serving alias points at (``ready`` false: ``detail`` says why)."""

    name: str
    version: str | None
    ready: bool
    detail: str | None = None


class ModelList(msgspec.Struct, kw_only=True):
    """``GET /v1/models``."""

    models: list[ModelSummary]


class RowErrorItem(msgspec.Struct, kw_only=True):
    """One rejected instance in a 422 problem's ``errors`` list."""

    row: int
    column: str | None
    reason: str


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """RFC 9457 problem details; 422s also name the instance (``row``) and ``field``."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    field: str | None = None
    row: int | None = None
    errors: list[RowErrorItem] | None = None


class V2Problem(Problem, kw_only=True):
    """A problem that also carries the Open Inference Protocol's ``error`` member."""

    error: str


# ------------------------------------------------------------------------------ routes
ANY_ERROR = (404, 405, 500)
BODY_ERRORS = (400, 413, 415, 422)


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: what the router matches and what OpenAPI documents. The dataplane binds
    ``operation`` to its handler in an explicit table (checked against this one at import)."""

    method: str
    path: str  # template; ``{name}`` segments are parameters
    operation: str  # OpenAPI operationId, and the key of its handler in the dataplane
    summary: str
    response: Any  # the msgspec type of the success body
    request: Any = None  # the msgspec type of the JSON body, None for no body
    status: int = 200
    errors: tuple[int, ...] = ANY_ERROR
    tag: str = "v1"

    @property
    def v2(self) -> bool:
        """Open Inference Protocol routes add the ``error`` member to problems."""
        return self.path.startswith("/v2")


ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/v1/models/{name}/predict",
        "predict",
        "Predict labels and class probabilities for JSON instances",
        PredictResponse,
        PredictRequest,
        errors=(*ANY_ERROR, *BODY_ERRORS),
    ),
    Route(
        "GET",
        "/v1/models/{name}/drift",
        "drift",
        "Drift of recent HTTP traffic against the model card's baseline (rolling window)",
        dict[str, Any],
    ),
    Route("GET", "/v1/models", "list_models", "List models and their serving versions", ModelList),
    Route("GET", "/v2", "server_metadata", "Server metadata", v2.ServerMetadata, tag="v2"),
    Route("GET", "/v2/health/live", "live", "Liveness", v2.LiveResponse, tag="v2"),
    Route(
        "GET",
        "/v2/health/ready",
        "ready",
        "Readiness: 200 when at least one model loads",
        v2.ReadyResponse,
        errors=(*ANY_ERROR, 503),
        tag="v2",
    ),
    Route(
        "GET", "/v2/models/{name}", "model_metadata", "Model metadata", v2.ModelMetadata, tag="v2"
    ),
    Route(
        "GET",
        "/v2/models/{name}/ready",
        "model_ready",
        "Model readiness",
        v2.ModelReadyResponse,
        errors=(*ANY_ERROR, 503),
        tag="v2",
    ),
    Route(
        "POST",
        "/v2/models/{name}/infer",
        "infer",
        "Open Inference Protocol inference",
        v2.InferenceResponse,
        v2.InferenceRequest,
        errors=(*ANY_ERROR, *BODY_ERRORS),
        tag="v2",
    ),
    Route("GET", "/openapi.json", "openapi", "This OpenAPI document", dict[str, Any], tag="meta"),
)


class _Node:
    """A routing trie node: literal children, one parameter child, routes by method."""

    __slots__ = ("children", "methods", "param")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.methods: dict[str, Route] = {}


def _build_trie(routes: Iterable[Route]) -> _Node:
    root = _Node()
    for route in routes:
        node = root
        for segment in route.path.strip("/").split("/"):
            if segment.startswith("{") and segment.endswith("}"):
                if node.param is None:
                    node.param = _Node()
                node = node.param
            else:
                node = node.children.setdefault(segment, _Node())
        if route.method in node.methods:
            raise ValueError(f"duplicate route {route.method} {route.path}")
        node.methods[route.method] = route
    return root


_TRIE = _build_trie(ROUTES)


MATCHES: dict[str, tuple[dict[str, Route], list[str]]] = {}
MATCHES_MAX = 4096  # distinct routed paths remembered (model names are few)


def match(path: str) -> tuple[dict[str, Route], list[str]] | None:
    """The routes (by method) at ``path`` and its parameter values, or ``None``.

    Successful matches are remembered (a serving process sees a handful of distinct paths);
    callers must not modify the result.
    """
    found = MATCHES.get(path)
    if found is not None:
        return found
    found = _walk(path)
    if found is not None:
        if len(MATCHES) >= MATCHES_MAX:
            MATCHES.clear()
        MATCHES[path] = found
    return found


def _walk(path: str) -> tuple[dict[str, Route], list[str]] | None:
    node: _Node | None = _TRIE
    params: list[str] = []
    for segment in path.strip("/").split("/"):
        assert node is not None
        child = node.children.get(segment)
        if child is None:
            child = node.param
            if child is None or not segment:
                return None
            if "%" in segment:
                from urllib.parse import unquote

                params.append(unquote(segment))
            else:
                params.append(segment)
        node = child
    if node is None or not node.methods:
        return None
    return node.methods, params


_VERSION: list[str] = []


def package_version() -> str:
    """The installed skyscore version (read once; importlib.metadata is slow)."""
    if not _VERSION:
        from importlib.metadata import PackageNotFoundError, version

        try:
            _VERSION.append(version("skyscore"))
        except PackageNotFoundError:
            _VERSION.append("0+unknown")
    return _VERSION[0]
