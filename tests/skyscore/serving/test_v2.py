"""Open Inference Protocol messages: decoding, tensor conversion, outputs, metadata."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skyscore.errors import BadRequest, InvalidInput, PayloadTooLarge
from skyscore.model.predictor import Predictor
from skyscore.serving import v2
from tiny_model import tiny_model


@pytest.fixture(scope="module")
def tiny() -> Predictor:
    """Numeric x1, x2 and categorical color; classes "no"/"yes"."""
    card, data = tiny_model(0.5)
    return Predictor(card, data)


@pytest.fixture(scope="module")
def numeric_only() -> Predictor:
    card, data = tiny_model(0.25, name="plain", categorical=False)
    return Predictor(card, data)


def request(*inputs: dict[str, Any], **extra: Any) -> v2.InferenceRequest:
    """Decode like the server does, so the tests exercise the real msgspec types."""
    return v2.request_decoder.decode(msgspec.json.encode({"inputs": list(inputs), **extra}))


def tensor(
    name: str, data: list[Any], datatype: str = "FP32", shape: list[int] | None = None
) -> dict[str, Any]:
    return {"name": name, "shape": shape or [len(data)], "datatype": datatype, "data": data}


def columns(x1: list[Any], x2: list[Any], color: list[Any]) -> list[dict[str, Any]]:
    return [tensor("x1", x1), tensor("x2", x2, "FP64"), tensor("color", color, "BYTES")]


def test_per_column_tensors(tiny: Predictor) -> None:
    numeric, categorical = v2.request_to_arrays(
        request(*columns([1, 2.5], [None, -1], ["red", None])), tiny
    )
    assert numeric.dtype == np.float32 and numeric.shape == (2, 2)
    assert numeric[0].tolist() == [1.0, pytest.approx(float("nan"), nan_ok=True)]
    assert numeric[1].tolist() == [2.5, -1.0]
    assert categorical.dtype == object
    assert categorical.tolist() == [["red"], [""]]


def test_matches_the_v1_schema(tiny: Predictor) -> None:
    rows = [{"x1": 1, "x2": None, "color": "red"}, {"x1": -3.25, "x2": 7, "color": None}]
    batch, errors = tiny.schema.records_to_batch(rows)
    assert not errors
    numeric, categorical = v2.request_to_arrays(
        request(*columns([1, -3.25], [None, 7], ["red", None])), tiny
    )
    assert np.array_equal(numeric, batch.numeric, equal_nan=True)
    assert categorical.tolist() == batch.categorical.tolist()


def test_two_tensor_form_flat_and_nested(tiny: Predictor) -> None:
    flat = request(
        tensor("numeric", [1, 2, 3, 4], shape=[2, 2]),
        tensor("categorical", ["red", "blue"], "BYTES", shape=[2, 1]),
    )
    nested = request(
        tensor("numeric", [[1, 2], [3, 4]], shape=[2, 2]),
        tensor("categorical", [["red"], ["blue"]], "BYTES", shape=[2, 1]),
    )
    for req in (flat, nested):
        numeric, categorical = v2.request_to_arrays(req, tiny)
        assert numeric.tolist() == [[1.0, 2.0], [3.0, 4.0]]
        assert categorical.tolist() == [["red"], ["blue"]]


def test_two_tensor_form_without_categoricals(numeric_only: Predictor) -> None:
    numeric, categorical = v2.request_to_arrays(
        request(tensor("numeric", [[1, 2]], shape=[1, 2])), numeric_only
    )
    assert numeric.shape == (1, 2) and categorical.shape == (1, 0)
    probabilities = numeric_only.predict_arrays(numeric, categorical)
    assert probabilities.shape == (1, 2)


@pytest.mark.parametrize(
    ("datatype", "data", "expected"),
    [
        ("INT64", [1, -2], [1.0, -2.0]),
        ("INT32", [[3], [4]], [3.0, 4.0]),
        ("INT8", [-128, 127], [-128.0, 127.0]),
        ("UINT8", [0, 255], [0.0, 255.0]),
        ("UINT64", [0, 2**64 - 1], [0.0, float(2**64 - 1)]),
        ("FP16", [0.5, None], [0.5, None]),
    ],
)
def test_numeric_datatypes(
    tiny: Predictor, datatype: str, data: list[Any], expected: list[Any]
) -> None:
    shape = [2, 1] if isinstance(data[0], list) else [2]
    req = request(
        tensor("x1", data, datatype, shape),
        tensor("x2", [0, 0], "INT64"),
        tensor("color", [1, 2], "INT64"),  # integer categories become strings, as in /v1
    )
    numeric, categorical = v2.request_to_arrays(req, tiny)
    got = [None if np.isnan(v) else v for v in numeric[:, 0].tolist()]
    assert got == expected
    assert categorical.tolist() == [["1"], ["2"]]


@pytest.mark.parametrize(
    ("x1", "datatype", "row", "reason"),
    [
        ([1.0, "a"], "FP32", 1, "expected a number, got string"),
        ([True, 1.0], "FP32", 0, "expected a number, got boolean"),
        ([1.0, 1e39], "FP64", 1, "float32"),
        ([float("inf"), 1], "FP64", 0, "non-finite"),
        ([1.0, [2.0]], "FP32", 1, "expected a number, got array"),
    ],
)
def test_bad_numeric_values_name_instance_and_column(
    tiny: Predictor, x1: list[Any], datatype: str, row: int, reason: str
) -> None:
    # built directly: JSON cannot carry inf, and this checks the converter itself
    req = v2.InferenceRequest(
        inputs=[
            v2.RequestInput(name="x1", shape=[2], datatype=datatype, data=x1),  # type: ignore[arg-type]
            v2.RequestInput(name="x2", shape=[2], datatype="FP32", data=[0, 0]),
            v2.RequestInput(name="color", shape=[2], datatype="BYTES", data=["a", "b"]),
        ]
    )
    with pytest.raises(InvalidInput) as caught:
        v2.request_to_arrays(req, tiny)
    assert caught.value.field == "x1"
    assert caught.value.row == row
    assert reason in caught.value.detail
    assert f"instance {row}" in caught.value.detail


@pytest.mark.parametrize(
    ("color", "datatype", "reason"),
    [
        (["red", 3], "BYTES", "expected a string"),
        ([1, "x"], "INT64", "expected an integer"),
    ],
)
def test_bad_categories(tiny: Predictor, color: list[Any], datatype: str, reason: str) -> None:
    req = request(tensor("x1", [0, 0]), tensor("x2", [0, 0]), tensor("color", color, datatype))
    with pytest.raises(InvalidInput) as caught:
        v2.request_to_arrays(req, tiny)
    assert caught.value.field == "color"
    assert reason in caught.value.detail


@pytest.mark.parametrize(
    ("column", "values", "datatype", "row", "reason"),
    [
        ("x1", [1, 300], "INT8", 1, "INT8 holds -128 to 127"),
        ("x1", [-1, 0], "UINT8", 0, "UINT8 holds 0 to 255"),
        ("x1", [2**63, 0], "INT64", 0, "INT64 holds"),
        ("x1", [2**200, 0], "UINT64", 0, "UINT64 holds"),
        ("x1", [0, 1.5], "INT32", 1, "not an integer"),
        ("x1", [1e5, 0], "FP16", 0, "FP16 holds"),
        ("x1", [True, False], "BOOL", 0, "BOOL cannot feed a numeric column"),
        ("x1", [1.0, 2.0], "BYTES", 0, "BYTES cannot feed a numeric column"),
        ("color", [1.5, 2.5], "FP32", 0, "FP32 cannot feed a categorical column"),
        ("color", [True, False], "BOOL", 0, "BOOL cannot feed a categorical column"),
        ("color", [1, 128], "INT8", 1, "INT8 holds -128 to 127"),
    ],
)
def test_a_tensor_that_breaks_its_own_datatype_is_400(
    tiny: Predictor, column: str, values: list[Any], datatype: str, row: int, reason: str
) -> None:
    """INT8 300, a negative UINT, a fraction in an integer tensor, or a datatype the column
    cannot take is a malformed request (400), not a value the model rejects (422)."""
    given = {"x1": [0, 0], "x2": [0, 0], "color": ["a", "b"]}
    kinds = {"x1": "FP32", "x2": "FP32", "color": "BYTES"}
    given[column], kinds[column] = values, datatype
    req = v2.InferenceRequest(
        inputs=[
            v2.RequestInput(name=name, shape=[2], datatype=kinds[name], data=data)  # type: ignore[arg-type]
            for name, data in given.items()
        ]
    )
    with pytest.raises(BadRequest) as caught:
        v2.request_to_arrays(req, tiny)
    assert not isinstance(caught.value, InvalidInput)
    assert (caught.value.field, caught.value.row) == (column, row)
    assert reason in caught.value.detail
    assert f"instance {row}" in caught.value.detail


def test_two_tensor_errors_name_the_column(tiny: Predictor) -> None:
    req = request(
        tensor("numeric", [[1, 2], [3, "x"]], shape=[2, 2]),
        tensor("categorical", [["a"], ["b"]], "BYTES", shape=[2, 1]),
    )
    with pytest.raises(InvalidInput) as caught:
        v2.request_to_arrays(req, tiny)
    assert (caught.value.row, caught.value.field) == (1, "x2")
    with pytest.raises(InvalidInput, match="missing input 'categorical'"):
        v2.request_to_arrays(request(tensor("numeric", [[1, 2]], shape=[1, 2])), tiny)
    with pytest.raises(BadRequest, match=r"shape \[N, 2\]"):
        v2.request_to_arrays(
            request(
                tensor("numeric", [1, 2, 3], shape=[1, 3]), tensor("categorical", ["a"], "BYTES")
            ),
            tiny,
        )


@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        ([], "no inputs"),
        ([tensor("x1", [1]), tensor("x1", [1])], "twice"),
        ([tensor("x1", [1, 2], shape=[3])], "needs 3 values"),
        ([tensor("x1", [1], shape=[-1])], "non-negative"),
        ([tensor("x1", [1, 2]), tensor("x2", [1])], "disagree"),
        (
            [
                tensor("x1", [1]),
                tensor("x2", [1]),
                tensor("color", ["a"], "BYTES"),
                tensor("z", [1]),
            ],
            "unknown input 'z'",
        ),
        ([tensor("x1", [1, 2], shape=[1, 2])], "[N] or [N, 1]"),
    ],
)
def test_malformed_requests(tiny: Predictor, inputs: list[dict[str, Any]], needle: str) -> None:
    with pytest.raises(BadRequest) as caught:
        v2.request_to_arrays(request(*inputs), tiny)
    assert needle in caught.value.detail


def test_missing_column_is_422(tiny: Predictor) -> None:
    with pytest.raises(InvalidInput) as caught:
        v2.request_to_arrays(request(tensor("x1", [1]), tensor("color", ["a"], "BYTES")), tiny)
    assert caught.value.field == "x2"


def test_instance_limit(tiny: Predictor) -> None:
    req = request(*columns([1, 2, 3], [1, 2, 3], ["a", "b", "c"]))
    with pytest.raises(PayloadTooLarge):
        v2.request_to_arrays(req, tiny, max_instances=2)
    assert v2.request_to_arrays(req, tiny, max_instances=3)[0].shape == (3, 2)


def test_envelope_validation() -> None:
    with pytest.raises(msgspec.ValidationError, match="inputs"):
        v2.request_decoder.decode(b'{"id": "a"}')
    with pytest.raises(msgspec.ValidationError, match="datatype"):
        v2.request_decoder.decode(
            b'{"inputs": [{"name": "a", "shape": [1], "datatype": "F32", "data": [1]}]}'
        )
    decoded = v2.request_decoder.decode(
        b'{"id": "r1", "parameters": {"p": 1}, "inputs": [], "outputs": [{"name": "label"}]}'
    )
    assert decoded.id == "r1" and decoded.outputs == [v2.RequestOutput(name="label")]


def test_outputs(tiny: Predictor) -> None:
    probabilities = np.array([[0.75, 0.25], [0.5, 0.5]], dtype=np.float32)
    outputs = v2.response_outputs(tiny, probabilities)
    label, probs = outputs
    assert (label.name, label.datatype, label.shape, label.data) == (
        "label",
        "BYTES",
        [2],
        ["no", "no"],
    )
    assert (probs.datatype, probs.shape, probs.data) == ("FP32", [2, 2], [0.75, 0.25, 0.5, 0.5])
    assert probs.parameters == {"classes": ["no", "yes"]}
    only = v2.response_outputs(tiny, probabilities, [v2.RequestOutput(name="probabilities")])
    assert [o.name for o in only] == ["probabilities"]
    with pytest.raises(BadRequest, match="unknown output"):
        v2.response_outputs(tiny, probabilities, [v2.RequestOutput(name="nope")])
    response = v2.InferenceResponse(model_name="tiny", model_version="1", outputs=outputs)
    encoded = msgspec.json.decode(msgspec.json.encode(response))
    assert "id" not in encoded and "parameters" not in encoded  # omitted, not null


def test_label_datatype() -> None:
    assert v2.label_datatype([0, 1]) == "INT64"
    assert v2.label_datatype(["a", "b"]) == "BYTES"
    assert v2.label_datatype([True, False]) == "BYTES"


def test_metadata(tiny: Predictor) -> None:
    meta = v2.model_metadata(tiny)
    assert meta.platform == "onnx" and meta.name == "tiny" and meta.versions == [tiny.version]
    assert [(t.name, t.datatype, t.shape) for t in meta.inputs] == [
        ("x1", "FP32", [-1]),
        ("x2", "FP32", [-1]),
        ("color", "BYTES", [-1]),
    ]
    assert [(t.name, t.datatype, t.shape) for t in meta.outputs] == [
        ("label", "BYTES", [-1]),
        ("probabilities", "FP32", [-1, 2]),
    ]
    assert meta.parameters is not None
    tensors = {t["name"]: t for t in meta.parameters["tensor_inputs"]}
    assert tensors["numeric"]["shape"] == [-1, 2]
    assert tensors["categorical"]["columns"] == ["color"]


FINITE = st.floats(min_value=-1e30, max_value=1e30, allow_nan=False) | st.none()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(FINITE, FINITE, st.sampled_from(["red", "blue", "", "other"]) | st.none()),
        min_size=1,
        max_size=5,
    )
)
def test_both_forms_equal_the_v1_batch(tiny: Predictor, rows: list[tuple[Any, Any, Any]]) -> None:
    records = [{"x1": a, "x2": b, "color": c} for a, b, c in rows]
    batch, errors = tiny.schema.records_to_batch(records)
    assert not errors
    per_column = request(*columns([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]))
    two = request(
        tensor("numeric", [[r[0], r[1]] for r in rows], shape=[len(rows), 2]),
        tensor("categorical", [r[2] for r in rows], "BYTES", shape=[len(rows), 1]),
    )
    for req in (per_column, two):
        numeric, categorical = v2.request_to_arrays(req, tiny)
        assert np.array_equal(numeric, batch.numeric, equal_nan=True)
        assert categorical.tolist() == batch.categorical.tolist()
