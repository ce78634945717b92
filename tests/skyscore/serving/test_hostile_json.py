"""Hostile JSON bodies never get a 5xx: deep nesting (thousands of levels) is a 400 problem on
every route that reads a body, wherever in the body the nesting sits; routes that read none
ignore it (or answer 405 to the wrong method)."""

from __future__ import annotations

import msgspec
import pytest

from skyscore.errors import PROBLEM_CONTENT_TYPE
from skyscore.model.predictor import Predictor
from skyscore.serving.dataplane import DataPlane, Request, StaticModelProvider
from skyscore.serving.routes import ROUTES
from tiny_model import tiny_model

DEPTHS = (1_000, 5_000, 20_000, 100_000)
JSON = {"content-type": "application/json"}


def deep_array(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def deep_object(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def hostile_bodies(depth: int) -> dict[str, bytes]:
    """The nesting as the whole body and inside each place a request carries values."""
    array, obj = deep_array(depth), deep_object(depth)
    return {
        "array": array,
        "object": obj,
        "instances": b'{"instances": ' + array + b"}",
        "instance": b'{"instances": [' + array + b"]}",
        "value": b'{"instances": [{"x1": ' + obj + b', "x2": 1, "color": "red"}]}',
        "id_column": b'{"instances": [{"x1": 1, "x2": 1, "color": "red"}], "id_column": '
        + array
        + b"}",
        "v2_data": b'{"inputs": [{"name": "x1", "shape": [1], "datatype": "FP32", "data": '
        + array
        + b"}]}",
        "v2_parameters": b'{"inputs": [], "parameters": ' + obj + b"}",
    }


@pytest.fixture(scope="module")
def plane() -> DataPlane:
    card, data = tiny_model()
    return DataPlane(StaticModelProvider([Predictor(card, data)]))


@pytest.mark.parametrize("depth", DEPTHS)
def test_deep_json_is_never_a_5xx_on_any_route(plane: DataPlane, depth: int) -> None:
    for route in ROUTES:
        path = route.path.replace("{name}", "tiny")
        for kind, body in hostile_bodies(depth).items():
            for method in sorted({route.method, "POST"}):
                response = plane.handle(Request(method, path, JSON, body))
                where = f"{method} {path} ({kind}, {depth} levels)"
                assert response.status < 500, (where, response.body[:300])
                if route.request is not None or method != route.method:
                    assert 400 <= response.status < 500, where
                    assert response.content_type == PROBLEM_CONTENT_TYPE, where


def test_deep_json_names_the_nesting(plane: DataPlane) -> None:
    for path in ("/v1/models/tiny/predict", "/v2/models/tiny/infer"):
        response = plane.handle(Request("POST", path, JSON, deep_object(100_000)))
        assert response.status == 400
        problem = msgspec.json.decode(response.body)
        assert "nested too deeply" in problem["detail"]


def test_unencodable_text_in_a_path_or_name_is_a_4xx(plane: DataPlane) -> None:
    """A lone surrogate (which no UTF-8 can carry) named back in the problem was a crash of
    ``handle`` itself, which must never raise."""
    for path in ("/v1/models/\ud800/predict", "/v2/models/\ud800/ready", "/\ud800"):
        response = plane.handle(Request("POST", path, JSON, b"{}"))
        assert 400 <= response.status < 500, path
        assert "\\ud800" in msgspec.json.decode(response.body)["detail"]
    unknown = b'{"inputs": [{"name": "\\ud800", "shape": [1], "datatype": "FP32", "data": [1]}]}'
    response = plane.handle(Request("POST", "/v2/models/tiny/infer", JSON, unknown))
    assert response.status == 400
