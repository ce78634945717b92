"""Open Inference Protocol (KServe V2) messages and their conversion to the model's tensors.

The messages are small ``msgspec`` structs: decoding a request *is* validating its envelope, and
the same types generate the OpenAPI schemas, so the documentation cannot drift from the code.

A request carries either one tensor per model column (``name`` = the column, shape ``[N]`` or
``[N, 1]``) or the two model tensors ``numeric`` (FP32 ``[N, k]``) and ``categorical`` (BYTES
``[N, m]``). Values are checked with the same rules as ``/v1`` instances (finite numbers within
float32, string or integer categories, ``null`` = missing), so both protocols accept and reject
the same inputs. Imports only numpy, msgspec and the core: this is on the inference path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import msgspec
import numpy as np

from skyscore.errors import BadRequest, InvalidInput, PayloadTooLarge
from skyscore.model.schema import FLOAT32_MAX, MISSING_CATEGORY, json_type, numeric_problem

if TYPE_CHECKING:
    from skyscore.model.predictor import Predictor

Datatype = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]

NUMERIC_TENSOR = "numeric"
CATEGORICAL_TENSOR = "categorical"
LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"
OUTPUT_NAMES = (LABEL_OUTPUT, PROBABILITIES_OUTPUT)
PLATFORM = "onnx"

_INTEGER_RANGES = {
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
}
_INTEGER_TYPES = frozenset(_INTEGER_RANGES)
_FP16_MAX = 65504.0
_FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})
# BOOL feeds no column: true/false is not a measurement, and taking it as 1/0 hid client bugs
_NUMERIC_TYPES = _INTEGER_TYPES | _FLOAT_TYPES
_CATEGORY_TYPES = _INTEGER_TYPES | {"BYTES"}
_NUMBER = frozenset({int, float})
_INT = frozenset({int})


class RequestInput(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One input tensor; ``data`` is row-major, flat or nested as ``shape`` says."""

    name: str
    shape: list[int]
    datatype: Datatype
    data: list[Any]
    parameters: dict[str, Any] | None = None


class RequestOutput(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An output the client asks for (``label`` or ``probabilities``); default: both."""

    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``POST /v2/models/{name}/infer`` body."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One output tensor, data flat in row-major order."""

    name: str
    shape: list[int]
    datatype: Datatype
    data: list[Any]
    parameters: dict[str, Any] | None = None


class InferenceResponse(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``POST /v2/models/{name}/infer`` answer."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class MetadataTensor(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A tensor in model metadata; ``-1`` marks a variable dimension."""

    name: str
    datatype: Datatype
    shape: list[int]
    parameters: dict[str, Any] | None = None


class ModelMetadata(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``GET /v2/models/{name}``: per-column inputs; ``parameters`` describes the 2-tensor form."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    parameters: dict[str, Any] | None = None


class ServerMetadata(msgspec.Struct, kw_only=True):
    """``GET /v2``."""

    name: str
    version: str
    extensions: list[str]


class LiveResponse(msgspec.Struct, kw_only=True):
    """``GET /v2/health/live``."""

    live: bool


class ReadyResponse(msgspec.Struct, kw_only=True):
    """``GET /v2/health/ready``."""

    ready: bool


class ModelReadyResponse(msgspec.Struct, kw_only=True):
    """``GET /v2/models/{name}/ready``."""

    name: str
    ready: bool


request_decoder = msgspec.json.Decoder(InferenceRequest)


# --------------------------------------------------------------------------------- metadata
def label_datatype(classes: Sequence[str | int]) -> Datatype:
    """INT64 when every class is an integer, else BYTES."""
    if classes and all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return "INT64"
    return "BYTES"


def model_metadata(predictor: Predictor) -> ModelMetadata:
    """The model's V2 metadata, derived from its card."""
    card = predictor.card
    numeric = card.numeric_features
    categorical = card.categorical_features
    inputs = [MetadataTensor(name=c, datatype="FP32", shape=[-1]) for c in numeric]
    inputs += [MetadataTensor(name=c, datatype="BYTES", shape=[-1]) for c in categorical]
    n_classes = len(predictor.class_names)
    outputs = [
        MetadataTensor(name=LABEL_OUTPUT, datatype=label_datatype(predictor.classes), shape=[-1]),
        MetadataTensor(
            name=PROBABILITIES_OUTPUT,
            datatype="FP32",
            shape=[-1, n_classes],
            parameters={"classes": list(predictor.class_names)},
        ),
    ]
    tensors: list[dict[str, Any]] = []
    if numeric:
        tensors.append(
            {
                "name": NUMERIC_TENSOR,
                "datatype": "FP32",
                "shape": [-1, len(numeric)],
                "columns": numeric,
            }
        )
    if categorical:
        tensors.append(
            {
                "name": CATEGORICAL_TENSOR,
                "datatype": "BYTES",
                "shape": [-1, len(categorical)],
                "columns": categorical,
            }
        )
    return ModelMetadata(
        name=predictor.name,
        versions=[predictor.version],
        platform=PLATFORM,
        inputs=inputs,
        outputs=outputs,
        parameters={
            "id_column": card.id_column,
            "classes": list(predictor.class_names),
            "tensor_inputs": tensors,
        },
    )


# --------------------------------------------------------------------------------- decoding
def _rows(tensor: RequestInput) -> int:
    """N (the first dimension), checking the shape is a real shape."""
    shape = tensor.shape
    if not shape or any(not isinstance(d, int) or d < 0 for d in shape):
        raise BadRequest(
            f"input {tensor.name!r}: shape {shape} is not a list of non-negative sizes",
            field=tensor.name,
        )
    return shape[0]


def _flatten(tensor: RequestInput) -> list[Any]:
    """Row-major flat data, checked against the shape (nested data is allowed by the spec)."""
    data = tensor.data
    if data and isinstance(data[0], list):
        flat: list[Any] = []
        stack: list[Any] = [data]
        # iterative flatten of well-nested lists; depth is the rank, so this stays cheap
        while stack:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(reversed(item))
            else:
                flat.append(item)
        data = flat
    expected = math.prod(tensor.shape)
    if len(data) != expected:
        raise BadRequest(
            f"input {tensor.name!r}: shape {tensor.shape} needs {expected} values, "
            f"data has {len(data)}",
            field=tensor.name,
        )
    return data


def _numeric_values(values: list[Any], datatype: str, where: _Where) -> np.ndarray:
    """float32 values of a numeric column (or block); ``null`` becomes NaN (missing).

    A datatype no numeric column takes, or a value the tensor's own datatype cannot hold (INT8
    300, a negative UINT, a fraction in an integer tensor, FP16 beyond 65504), is a malformed
    request (400); a value the model cannot take (a string, beyond float32) is a 422, as in
    ``/v1``.
    """
    if datatype not in _NUMERIC_TYPES:
        where.malformed(
            0, f"datatype {datatype} cannot feed a numeric column; use FP32, FP64 or INT*"
        )
    types = set(map(type, values))
    if types <= _NUMBER:  # the common case, checked in bulk
        _check_datatype_range(values, types, datatype, where)
        try:
            array = np.array(values, dtype=np.float64)
        except OverflowError:  # an integer beyond float64: the slow path names it
            pass
        else:
            bad = ~(np.abs(array) <= FLOAT32_MAX)  # also true for inf and NaN
            if datatype == "FP16":
                bad |= np.abs(array) > _FP16_MAX
            if bad.any():
                index = int(np.flatnonzero(bad)[0])
                if datatype == "FP16" and math.isfinite(values[index]):
                    where.malformed(index, f"FP16 holds at most ±65504, got {values[index]!r}")
                where.fail(index, numeric_problem(values[index]) or "bad number")
            return array.astype(np.float32)
    # slow path: nulls, mixed or wrong types; name the first bad element
    out = np.empty(len(values), dtype=np.float32)
    for index, value in enumerate(values):
        if value is None:
            out[index] = math.nan
            continue
        reason = numeric_problem(value)
        if reason:
            where.fail(index, reason)
        _check_datatype_value(index, value, datatype, where)
        out[index] = value
    return out


def _check_datatype_range(
    values: list[Any], types: set[type], datatype: str, where: _Where
) -> None:
    """400 for the first number the declared integer datatype cannot hold. Exact (Python
    integers, not float64, at the INT64/UINT64 edges) and in C for all-integer data."""
    limits = _INTEGER_RANGES.get(datatype)
    if limits is None or not values:
        return
    low, high = limits
    if types <= _INT and low <= min(values) and max(values) <= high:
        return
    for index, value in enumerate(values):
        _check_datatype_value(index, value, datatype, where)


def _check_datatype_value(index: int, value: Any, datatype: str, where: _Where) -> None:
    """400 when one number is not a value of ``datatype`` (integer types and FP16)."""
    limits = _INTEGER_RANGES.get(datatype)
    if limits is not None:
        if isinstance(value, float) and not value.is_integer():
            where.malformed(index, f"{value!r} is not an integer, but the tensor is {datatype}")
        low, high = limits
        if not low <= value <= high:
            where.malformed(index, f"{datatype} holds {low} to {high}, got {value!r}")
    elif datatype == "FP16" and abs(value) > _FP16_MAX:
        where.malformed(index, f"FP16 holds at most ±65504, got {value!r}")


def _category_values(values: list[Any], datatype: str, where: _Where) -> list[str]:
    """Strings of a categorical column (or block); ``null`` becomes the missing category."""
    if datatype not in _CATEGORY_TYPES:
        where.malformed(
            0, f"datatype {datatype} cannot feed a categorical column; use BYTES or INT*"
        )
    want_str = datatype == "BYTES"
    out: list[str] = []
    for index, value in enumerate(values):
        if value is None:
            out.append(MISSING_CATEGORY)
        elif want_str and isinstance(value, str):
            out.append(value)
        elif not want_str and isinstance(value, int) and not isinstance(value, bool):
            _check_datatype_value(index, value, datatype, where)
            out.append(str(value))
        else:
            expected = "a string" if want_str else "an integer"
            where.fail(index, f"expected {expected} ({datatype}), got {json_type(value)}")
    return out


class _Where:
    """Names the bad element in error messages: input tensor, instance index and column."""

    __slots__ = ("columns", "name", "width")

    def __init__(self, name: str, columns: Sequence[str] | None = None) -> None:
        self.name = name
        self.columns = columns
        self.width = len(columns) if columns else 1

    def fail(self, flat_index: int, reason: str) -> NoReturn:
        """422: a value the model cannot take."""
        raise self._error(InvalidInput, flat_index, reason)

    def malformed(self, flat_index: int, reason: str) -> NoReturn:
        """400: the tensor contradicts its own datatype (or has one no such column takes)."""
        raise self._error(BadRequest, flat_index, reason)

    def _error(self, kind: type[BadRequest | InvalidInput], flat_index: int, reason: str) -> Any:
        row, col = divmod(flat_index, self.width)
        column = self.columns[col] if self.columns else self.name
        place = self.name if column == self.name else f"{self.name} ({column})"
        return kind(f"instance {row}: {place}: {reason}", field=column, row=row)


def request_to_arrays(
    request: InferenceRequest, predictor: Predictor, *, max_instances: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(numeric float32 [N, k], categorical object [N, m]) for the predictor, validated.

    Raises ``BadRequest`` for malformed tensors (shape/data mismatch, unknown or duplicate
    names), ``InvalidInput`` naming instance and column for values the model cannot take, and
    ``PayloadTooLarge`` when N exceeds ``max_instances``.
    """
    card = predictor.card
    numeric_cols = card.numeric_features
    categorical_cols = card.categorical_features
    by_name: dict[str, RequestInput] = {}
    for tensor in request.inputs:
        if tensor.name in by_name:
            raise BadRequest(f"input {tensor.name!r} appears twice", field=tensor.name)
        by_name[tensor.name] = tensor
    if not by_name:
        raise BadRequest("the request has no inputs", field="inputs")
    rows = {name: _rows(t) for name, t in by_name.items()}
    n = next(iter(rows.values()))
    for name, count in rows.items():
        if count != n:
            raise BadRequest(
                f"inputs disagree on the number of instances: {name!r} has {count}, "
                f"{next(iter(rows))!r} has {n}",
                field=name,
            )
    if max_instances is not None and n > max_instances:
        raise PayloadTooLarge(
            f"{n:,} instances is more than the limit of {max_instances:,}; split the request",
            extra={"max_instances": max_instances},
        )
    columns = set(numeric_cols) | set(categorical_cols)
    two_tensor = (
        not (by_name.keys() & columns)
        and by_name.keys() <= {NUMERIC_TENSOR, CATEGORICAL_TENSOR}
        and NUMERIC_TENSOR not in columns
        and CATEGORICAL_TENSOR not in columns
    )
    if two_tensor:
        return _two_tensor_arrays(by_name, n, numeric_cols, categorical_cols)
    return _column_arrays(by_name, n, numeric_cols, categorical_cols, card.id_column)


def _two_tensor_arrays(
    by_name: dict[str, RequestInput],
    n: int,
    numeric_cols: list[str],
    categorical_cols: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    blocks: list[np.ndarray] = []
    for name, cols in ((NUMERIC_TENSOR, numeric_cols), (CATEGORICAL_TENSOR, categorical_cols)):
        k = len(cols)
        tensor = by_name.get(name)
        if tensor is None:
            if k:
                raise InvalidInput(
                    f"missing input {name!r} (shape [N, {k}]: {', '.join(cols)})", field=name
                )
            blocks.append(np.empty((n, 0), dtype=np.float32 if name == NUMERIC_TENSOR else object))
            continue
        shape = tensor.shape
        if len(shape) != 2 or shape[1] != k:
            raise BadRequest(
                f"input {name!r} must have shape [N, {k}] (columns {', '.join(cols)}), got {shape}",
                field=name,
            )
        flat = _flatten(tensor)
        where = _Where(name, cols)
        if name == NUMERIC_TENSOR:
            blocks.append(_numeric_values(flat, tensor.datatype, where).reshape(n, k))
        else:
            strings = _category_values(flat, tensor.datatype, where)
            block = np.empty(n * k, dtype=object)
            block[:] = strings
            blocks.append(block.reshape(n, k))
    return blocks[0], blocks[1]


def _column_arrays(
    by_name: dict[str, RequestInput],
    n: int,
    numeric_cols: list[str],
    categorical_cols: list[str],
    id_column: str | None,
) -> tuple[np.ndarray, np.ndarray]:
    known = {*numeric_cols, *categorical_cols}
    for name in by_name:
        if name not in known and name != id_column:
            raise BadRequest(
                f"unknown input {name!r}: send one tensor per model column "
                f"({', '.join([*numeric_cols, *categorical_cols])}) or the two tensors "
                f"{NUMERIC_TENSOR!r} and {CATEGORICAL_TENSOR!r}",
                field=name,
            )
    numeric = np.empty((n, len(numeric_cols)), dtype=np.float32)
    categorical = np.empty((n, len(categorical_cols)), dtype=object)
    for j, column in enumerate(numeric_cols):
        tensor = _column(by_name, column)
        numeric[:, j] = _numeric_values(_flatten(tensor), tensor.datatype, _Where(column))
    for j, column in enumerate(categorical_cols):
        tensor = _column(by_name, column)
        categorical[:, j] = _category_values(_flatten(tensor), tensor.datatype, _Where(column))
    return numeric, categorical


def _column(by_name: dict[str, RequestInput], column: str) -> RequestInput:
    tensor = by_name.get(column)
    if tensor is None:
        raise InvalidInput(f"missing input {column!r}", field=column)
    shape = tensor.shape
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise BadRequest(
            f"input {column!r} must have shape [N] or [N, 1], got {shape}", field=column
        )
    return tensor


# --------------------------------------------------------------------------------- encoding
def response_outputs(
    predictor: Predictor,
    probabilities: np.ndarray,
    requested: list[RequestOutput] | None = None,
) -> list[ResponseOutput]:
    """``label`` and ``probabilities`` tensors (or just the requested ones)."""
    wanted: Sequence[str] = OUTPUT_NAMES
    if requested:
        wanted = [o.name for o in requested]
        for name in wanted:
            if name not in OUTPUT_NAMES:
                raise BadRequest(
                    f"unknown output {name!r}; this model has {', '.join(OUTPUT_NAMES)}",
                    field="outputs",
                )
    n, n_classes = probabilities.shape
    outputs: list[ResponseOutput] = []
    for name in wanted:
        if name == LABEL_OUTPUT:
            classes = predictor.classes
            indices = predictor.label_indices(probabilities).tolist()
            outputs.append(
                ResponseOutput(
                    name=LABEL_OUTPUT,
                    shape=[n],
                    datatype=label_datatype(classes),
                    data=[classes[i] for i in indices],
                )
            )
        else:
            outputs.append(
                ResponseOutput(
                    name=PROBABILITIES_OUTPUT,
                    shape=[n, n_classes],
                    datatype="FP32",
                    data=probabilities.ravel().tolist(),
                    parameters={"classes": list(predictor.class_names)},
                )
            )
    return outputs
