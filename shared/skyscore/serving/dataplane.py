"""The transport-neutral HTTP dataplane: one ``handle(Request) -> Response`` for every front end.

AWS Lambda, Azure Functions, Cloud Functions and the local server each turn their native event
into a :class:`Request` and their native reply from a :class:`Response`; routing, limits,
validation and error rendering live here, once, so every deployment answers the same way.

The layering runs one way, as in MLServer's ``rest/endpoints.py``: :mod:`.routes` describes the
API (messages, route table, router), :mod:`.openapi` documents it, and this module binds each
route's ``operation`` to a handler in :data:`HANDLERS`, an explicit table checked against the
route table at import. Every failure is a :class:`~skyscore.errors.SkyscoreError` raised by a
handler and rendered in one place, :meth:`DataPlane.error_response`.

Models come from a :class:`ModelProvider` (``get(name)``, ``names()``, ``ready()``), so the
dataplane knows nothing of registries or blob stores; :class:`RegistryModelProvider` adapts a
:class:`~skyscore.model.registry.ModelRegistry`. This is the hot path: msgspec for JSON, a routing
trie built once at import, and no per-request regular expressions.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import msgspec
import numpy as np

from skyscore.errors import (
    PROBLEM_CONTENT_TYPE,
    BadRequest,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    SkyscoreError,
    UnsupportedMediaType,
    internal_problem,
    problem_body,
)
from skyscore.model.schema import FLOAT32_MAX, MISSING_CATEGORY, Batch, InputSchema
from skyscore.monitoring.online import OnlineDrift
from skyscore.serving import v2
from skyscore.serving.openapi import openapi_json
from skyscore.serving.routes import (
    JSON_CONTENT_TYPE,
    ROUTES,
    ModelList,
    ModelSummary,
    Prediction,
    PredictRequest,
    PredictResponse,
    Problem,
    Route,
    RowErrorItem,
    V2Problem,
    match,
    package_version,
)
from skyscore.serving.routes import MATCHES as _MATCHES

if TYPE_CHECKING:
    from skyscore.model.predictor import Predictor
    from skyscore.model.registry import ModelRegistry

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_INSTANCES",
    "HANDLERS",
    "JSON_CONTENT_TYPE",
    "ROUTES",
    "DataPlane",
    "Headers",
    "InstanceDecoder",
    "ModelList",
    "ModelProvider",
    "ModelSummary",
    "PredictRequest",
    "PredictResponse",
    "Prediction",
    "Problem",
    "RegistryModelProvider",
    "Request",
    "Response",
    "Route",
    "RowErrorItem",
    "StaticModelProvider",
    "V2Problem",
    "match",
    "package_version",
]

DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024  # AWS Lambda's synchronous payload limit
DEFAULT_MAX_INSTANCES = 10_000

_log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ request/response
class Headers(Mapping[str, str]):
    """Case-insensitive, read-only header mapping (keys are stored lower-cased)."""

    __slots__ = ("_data",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        # An exact type test first: an ABC isinstance check (or building ``dict | Mapping``)
        # costs more than the rest of this method, on every request.
        pairs = items.items() if type(items) is dict or isinstance(items, Mapping) else items
        self._data = {k.lower(): v for k, v in pairs}

    def __getitem__(self, key: str) -> str:
        return self._data[key.lower()]

    def get(self, key: str, default: Any = None) -> Any:
        """``Mapping.get`` without the ``KeyError`` round trip (hot path)."""
        return self._data.get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Headers({self._data!r})"


class Request:
    """An HTTP request as every transport can build it: method, path, headers, raw body, query.

    ``headers`` may be any mapping (it is wrapped in case-insensitive :class:`Headers`); a
    ``?query`` left on ``path`` is split off into ``query``. A plain ``__slots__`` class: it is
    built once per request on the hot path, so a plain ``dict`` of headers is kept as given
    (not copied) and wrapped only if something asks for :attr:`headers`.
    """

    __slots__ = ("_given", "_headers", "body", "method", "path", "query")

    def __init__(
        self,
        method: str,
        path: str,
        headers: Headers | Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        query: Mapping[str, str] | None = None,
    ) -> None:
        self.method = method.upper()
        self._given: dict[str, str] | None = None
        self._headers: Headers | None = None
        if type(headers) is dict:
            self._given = headers
        else:
            self._headers = headers if type(headers) is Headers else Headers(headers)
        self.body = body
        self.query: Mapping[str, str] = {} if query is None else query
        if "?" in path:  # tolerate adapters that pass the raw request target
            from urllib.parse import parse_qsl

            path, _, raw = path.partition("?")
            if not self.query:
                self.query = dict(parse_qsl(raw))
        self.path = path

    @property
    def headers(self) -> Headers:
        """The headers, case-insensitive."""
        headers = self._headers
        if headers is None:
            headers = self._headers = Headers(self._given or ())
        return headers

    def header(self, name: str) -> str | None:
        """One header's value by its lower-case ``name``. Looks in the transport's own dict
        first (ASGI, WSGI servers and API Gateway HTTP APIs send lower-case names), so most
        requests never build the case-insensitive mapping: on the single-row path that was
        about 2 µs, of cold caches after the previous request's ONNX run."""
        given = self._given
        if given is not None:
            value = given.get(name)
            if value is not None:
                return value
        found: str | None = self.headers.get(name)
        return found

    def __repr__(self) -> str:
        return f"Request({self.method!r}, {self.path!r}, {len(self.body)} bytes)"


@dataclass(slots=True)
class Response:
    """Status, headers (lower-case names) and body bytes; the transport adds framing."""

    status: int
    headers: dict[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str:
        """The body's media type."""
        return self.headers.get("content-type", "")

    def json(self) -> Any:
        """The body decoded (tests and adapters that need an object)."""
        return msgspec.json.decode(self.body)


# ------------------------------------------------------------------------------ models
class ModelProvider(Protocol):
    """Where the dataplane gets predictors; raise ``ModelNotFound`` for unknown names."""

    def get(self, name: str) -> Predictor:
        """The serving predictor of ``name``."""
        ...

    def names(self) -> list[str]:
        """Every model name that may be served."""
        ...

    def ready(self) -> bool:
        """True when at least one model loads."""
        ...


class StaticModelProvider:
    """Serves a fixed set of predictors (tests, functions packaged with their model)."""

    def __init__(self, predictors: Mapping[str, Predictor] | Iterable[Predictor]) -> None:
        self._predictors: dict[str, Predictor]
        if isinstance(predictors, Mapping):
            self._predictors = dict(predictors)
        else:
            self._predictors = {p.name: p for p in predictors}

    def get(self, name: str) -> Predictor:
        """The predictor called ``name``."""
        try:
            return self._predictors[name]
        except KeyError:
            raise ModelNotFound(f"no model named {name!r}") from None

    def names(self) -> list[str]:
        """Model names, sorted."""
        return sorted(self._predictors)

    def ready(self) -> bool:
        """True when there is at least one model."""
        return bool(self._predictors)


class RegistryModelProvider:
    """Serves each model's ``alias`` (default ``production``) from a model registry.

    The registry caches predictors and re-reads alias targets every few seconds, so a running
    server follows promotions and rollbacks; this adapter is the only place that knows it.
    """

    def __init__(self, registry: ModelRegistry, alias: str = "production") -> None:
        self.registry = registry
        self.alias = alias

    def get(self, name: str) -> Predictor:
        """The predictor the alias points at; an invalid name is just an unknown model."""
        try:
            return self.registry.get_predictor(name, self.alias)
        except BadRequest:
            raise ModelNotFound(f"no model named {name!r}") from None

    def names(self) -> list[str]:
        """Registered model names."""
        return self.registry.list_models()

    def ready(self) -> bool:
        """True when some model's alias resolves and its artifact loads."""
        for name in self.names():
            try:
                self.get(name)
            except SkyscoreError:
                continue
            except Exception:
                _log.warning("model %s failed to load", name, exc_info=True)
                continue
            return True
        return False


# ------------------------------------------------------------------------------ the dataplane
_predict_decoder = msgspec.json.Decoder(PredictRequest)
_encoder = msgspec.json.Encoder()


def _encode_fallback(obj: Any) -> Any:
    """Problem extras may hold numpy scalars or paths: render them, never fail on them."""
    tolist = getattr(obj, "tolist", None)
    return tolist() if callable(tolist) else str(obj)


_problem_encoder = msgspec.json.Encoder(enc_hook=_encode_fallback)


def _scrub(value: Any) -> Any:
    """``value`` with every string made encodable (lone surrogates as ``\\udXXX`` escapes):
    the problem that names a client's unencodable text must itself be JSON."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    if content_type == JSON_CONTENT_TYPE:
        return True
    media = content_type.partition(";")[0].strip().lower()
    return media == JSON_CONTENT_TYPE or (
        media.startswith("application/") and media.endswith("+json")
    )


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes, expected: str) -> Any:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"wrong request body: {exc}; expected {expected}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise _too_deep() from None


def _too_deep() -> BadRequest:
    """msgspec's C decoder raises ``RecursionError`` (not a ``DecodeError``) past about ten
    thousand levels of nesting: the client's doing, so a 400 rather than an unexpected 500."""
    return BadRequest("the body is nested too deeply to decode; no request needs that much nesting")


_FLOAT32 = Annotated[float, msgspec.Meta(ge=-FLOAT32_MAX, le=FLOAT32_MAX)] | None


class InstanceDecoder:
    """Decodes a predict body straight into a :class:`Batch` for one input schema, or declines.

    The canonical path builds a dict per instance and checks every value in Python (about
    0.4 µs each), which was most of a single-row request's overhead. Here a msgspec Struct
    with one field per column checks presence, types and the float32 range in C while it
    parses. Whatever it does not take (a missing or mistyped column, integer categories, a
    request naming another id column, a malformed body) returns ``None``, and the caller
    decodes generically: the canonical batch or the precise 400/422. ``test_dataplane``
    checks that both paths agree.
    """

    __slots__ = (
        "_categorical",
        "_category_rows",
        "_decoder",
        "_id_column",
        "_numeric",
        "_pack",
        "_shape",
    )

    def __init__(self, schema: InputSchema) -> None:
        columns = [*schema.numeric, *schema.categorical]
        types: list[Any] = [_FLOAT32] * len(schema.numeric) + [str | None] * len(schema.categorical)
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [
            (f"f{i}", kind) for i, kind in enumerate(types)
        ]
        if schema.id_column is not None:
            columns.append(schema.id_column)
            fields.append((f"f{len(fields)}", Any, None))
        # JSON names are the column names, whatever characters they hold
        rename = {f"f{i}": column for i, column in enumerate(columns)}
        row = msgspec.defstruct("Instance", fields, kw_only=True, rename=rename, gc=False)
        envelope = msgspec.defstruct(
            "Instances",
            [("instances", list[row]), ("id_column", str | None, None)],  # type: ignore[valid-type]
            kw_only=True,
        )
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(envelope)
        self._pack = struct.Struct(f"={len(schema.numeric)}f").pack
        self._shape = (1, len(schema.numeric))
        self._category_rows: dict[tuple[Any, ...], np.ndarray] = {}
        self._numeric = len(schema.numeric)
        self._categorical = len(schema.categorical)
        self._id_column = schema.id_column

    @classmethod
    def for_schema(cls, schema: InputSchema) -> InstanceDecoder | None:
        """The decoder, or ``None`` where the canonical path must judge every request: a strict
        schema (unknown columns are errors) or an id column that is also a feature."""
        if schema.strict or len({*schema.columns, schema.id_column}) <= len(schema.columns):
            return None
        return cls(schema)

    def decode(self, body: bytes) -> Batch | None:
        """The batch of a well-formed body, or ``None`` to take the canonical path."""
        try:
            envelope = self._decoder.decode(body)
        except msgspec.MsgspecError:
            return None
        except RecursionError:
            raise _too_deep() from None
        if envelope.id_column not in (None, self._id_column):
            return None
        instances = envelope.instances
        k, m = self._numeric, self._categorical
        if len(instances) == 1:
            # One instance (most requests). The numeric row is packed straight into float32
            # bytes, a third of the time numpy takes to discover a nested list's shape. The
            # categorical row comes from a cache of read-only arrays: categories repeat, and a
            # one-row object array costs ~1 µs however it is built.
            only = _astuple(instances[0])
            values = only[:k]
            try:
                numeric = np.ndarray(self._shape, _FLOAT32_DTYPE, bytearray(self._pack(*values)))
            except struct.error:  # a null (missing) value: numpy turns it into NaN
                numeric = np.array([values], dtype=np.float32)
            cells = only[k : k + m]
            categorical = self._category_rows.get(cells)
            if categorical is None:
                categorical = self._category_row(cells)
            return Batch(
                _ONE, numeric, categorical, None if self._id_column is None else [only[-1]]
            )
        rows = list(map(_astuple, instances))
        n = len(rows)
        if n == 0:
            return None
        numeric = np.array([row[:k] for row in rows], dtype=np.float32)  # null → NaN (missing)
        categories = [row[k : k + m] for row in rows]
        if m and any(None in row for row in categories):
            categories = [
                tuple(MISSING_CATEGORY if c is None else c for c in row) for row in categories
            ]
        categorical = np.array(categories, dtype=object)  # (n, m), also for m = 0
        ids = [row[-1] for row in rows] if self._id_column is not None else None
        return Batch(_positions(n), numeric, categorical, ids)

    def _category_row(self, categories: tuple[Any, ...]) -> np.ndarray:
        """The (1, m) array of one instance's categories (null → missing), read-only, and
        cached when its texts are short: the cache holds at most ~1 MiB of text whatever
        clients send."""
        cells = tuple(MISSING_CATEGORY if c is None else c for c in categories)
        array = np.array([cells], dtype=object)
        array.flags.writeable = False
        if sum(map(len, cells)) <= _CATEGORY_ROW_CHARS:
            if len(self._category_rows) >= _CATEGORY_ROWS_MAX:  # high cardinality: start over
                self._category_rows.clear()
            self._category_rows[categories] = array
        return array


_POSITIONS = [np.arange(n, dtype=np.int64) for n in range(65)]
for _array in _POSITIONS:
    _array.flags.writeable = False


_ONE = _POSITIONS[1]


def _positions(n: int) -> np.ndarray:
    """``arange(n)``, shared and read-only for small ``n``: after an ONNX run the CPU caches are
    cold and every numpy call on the request path costs microseconds, so the hot path makes
    as few as it can (here, none for a single row)."""
    return _POSITIONS[n] if n < len(_POSITIONS) else np.arange(n, dtype=np.int64)


_astuple = msgspec.structs.astuple
_FLOAT32_DTYPE = np.dtype(np.float32)
_CATEGORY_ROWS_MAX = 4096  # distinct category rows kept per decoder
_CATEGORY_ROW_CHARS = 256  # longer rows are built for each request, not kept
_UNSEEN: Any = object()  # a schema whose decoder is not built yet (``None`` means "no decoder")


Handler = Callable[..., "Response"]
"""A route's handler: ``(plane, request, *path parameters) -> Response``; it raises a
``SkyscoreError`` for every failure (the dataplane renders it)."""


class DataPlane:
    """Routes a :class:`Request` to its handler and renders every outcome as a :class:`Response`.

    ``max_body_bytes`` (default 6 MiB, Lambda's limit) and ``max_instances`` (default 10,000)
    bound each request; both give 413. Thread-safe: it holds no per-request state.
    """

    def __init__(
        self,
        provider: ModelProvider,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_instances: int = DEFAULT_MAX_INSTANCES,
        online_drift: OnlineDrift | None = None,
    ) -> None:
        self.provider = provider
        self.online_drift = online_drift if online_drift is not None else OnlineDrift()
        self.max_body_bytes = max_body_bytes
        self.max_instances = max_instances
        self._decoders: dict[InputSchema, InstanceDecoder | None] = {}

    def handle(self, request: Request) -> Response:
        """Answer one request; never raises, never puts a stack trace in the body.

        Routing is inline rather than a method of its own: on the single-row path every
        Python frame costs about a microsecond of cold caches after the last ONNX run.
        """
        try:
            path = request.path
            found = _MATCHES.get(path) or match(path)
            if found is None:
                raise NotFound(f"no route for {path}; see /openapi.json")
            routes, params = found
            method = request.method
            route = routes.get("GET" if method == "HEAD" else method)
            if route is None:
                allowed = sorted({*routes, *(["HEAD"] if "GET" in routes else [])})
                raise MethodNotAllowed(
                    f"{method} is not allowed on {path}; use {', '.join(allowed)}",
                    extra={"allow": allowed},
                )
            if route.request is not None:
                given = request._given  # Request.header without its frame
                content_type = given.get("content-type") if given is not None else None
                if content_type is None:
                    content_type = request.header("content-type")
                length = len(request.body)
                if length > self.max_body_bytes or content_type != JSON_CONTENT_TYPE:
                    self.check_body(length, content_type)  # the checks in full, off the fast path
            return HANDLERS[route.operation](self, request, *params)
        except SkyscoreError as error:
            return self.error_response(error, request.path)
        except Exception:
            _log.exception("unexpected error in %s %s", request.method, request.path)
            return self._internal_error(request.path)

    __call__ = handle

    def check_body(self, length: int, content_type: str | None) -> None:
        """413 over the size limit, 415 unless the body is JSON."""
        self.check_size(length)
        if not _is_json(content_type):
            raise UnsupportedMediaType(
                f"Content-Type must be {JSON_CONTENT_TYPE}, got {content_type or 'none'}",
                extra={"accept": JSON_CONTENT_TYPE},
            )

    def check_size(self, length: int) -> None:
        """413 when a body of ``length`` bytes is over the limit (transports: before reading)."""
        if length > self.max_body_bytes:
            raise PayloadTooLarge(
                f"the body is {length:,} bytes, more than the limit of {self.max_body_bytes:,}",
                extra={"max_body_bytes": self.max_body_bytes},
            )

    # -- rendering -----------------------------------------------------------------------------

    def error_response(self, error: SkyscoreError, path: str | None = None) -> Response:
        """The problem response for a typed error (V2 paths also get an ``error`` member)."""
        problem = problem_body(error, path)
        if path is not None and path.startswith("/v2"):
            problem["error"] = problem["detail"]
        headers = {"content-type": PROBLEM_CONTENT_TYPE}
        allow = error.extra.get("allow") if isinstance(error, MethodNotAllowed) else None
        if allow:
            headers["allow"] = ", ".join(allow)
        try:
            body = _problem_encoder.encode(problem)
        except UnicodeEncodeError:  # a lone surrogate the client put in a path or a name
            body = _problem_encoder.encode(_scrub(problem))
        except Exception:
            _log.exception("could not encode the problem for %s", _scrub(path))
            return self._internal_error(path)
        return Response(error.status, headers, body)

    def _internal_error(self, path: str | None) -> Response:
        problem = internal_problem(_scrub(path))
        if path is not None and path.startswith("/v2"):
            problem["error"] = problem["detail"]
        return Response(500, {"content-type": PROBLEM_CONTENT_TYPE}, _encoder.encode(problem))

    @staticmethod
    def _json(payload: Any, status: int = 200) -> Response:
        return Response(status, {"content-type": JSON_CONTENT_TYPE}, _encoder.encode(payload))

    # -- /v1 -----------------------------------------------------------------------------------

    def predict(self, request: Request, name: str) -> Response:
        predictor = self.provider.get(name)
        decoder = self._decoders.get(predictor.schema, _UNSEEN)
        if decoder is _UNSEEN:
            decoder = self._new_decoder(predictor.schema)
        batch = decoder.decode(request.body) if decoder is not None else None
        if batch is None:  # something to reject, or an unusual value: the canonical path
            batch = self._canonical_batch(predictor, request.body)
        elif batch.rows.shape[0] > self.max_instances:
            self._check_instances(len(batch))
        probabilities = predictor.predict_arrays(batch.numeric, batch.categorical)
        predictions = predictor.format_predictions(batch, probabilities)
        if predictions:
            self.online_drift.observe(predictor, batch.numeric, batch.categorical, probabilities)
        model, version = predictor.key
        return Response(
            200,
            {"content-type": JSON_CONTENT_TYPE},
            _encoder.encode({"predictions": predictions, "model": model, "version": version}),
        )

    def _new_decoder(self, schema: InputSchema) -> InstanceDecoder | None:
        """The schema's typed decoder, built on its first request and kept (schemas are
        immutable; ``None`` is kept too, for schemas that always take the canonical path)."""
        if len(self._decoders) >= 64:  # long-lived servers see a bounded number of versions
            self._decoders.clear()
        decoder = self._decoders[schema] = InstanceDecoder.for_schema(schema)
        return decoder

    def _canonical_batch(self, predictor: Predictor, body: bytes) -> Batch:
        """Every instance checked in Python: the batch, or the 400/413/422 naming what is wrong."""
        envelope: PredictRequest = _decode(_predict_decoder, body, '{"instances": [{...}, ...]}')
        self._check_instances(len(envelope.instances))
        return predictor.instances_batch(envelope.instances, id_column=envelope.id_column)

    def _check_instances(self, count: int) -> None:
        if count > self.max_instances:
            raise PayloadTooLarge(
                f"{count:,} instances is more than the limit of "
                f"{self.max_instances:,}; split the request",
                extra={"max_instances": self.max_instances},
            )

    def drift(self, request: Request, name: str) -> Response:
        return self._json(self.online_drift.result(self.provider.get(name)))

    def list_models(self, request: Request) -> Response:
        models: list[ModelSummary] = []
        for name in self.provider.names():
            try:
                predictor = self.provider.get(name)
            except SkyscoreError as error:
                models.append(
                    ModelSummary(name=name, version=None, ready=False, detail=error.detail)
                )
                continue
            except Exception:
                _log.exception("model %s failed to load", name)
                detail = "failed to load; see the server log"
                models.append(ModelSummary(name=name, version=None, ready=False, detail=detail))
                continue
            models.append(ModelSummary(name=name, version=predictor.version, ready=True))
        return self._json(ModelList(models=models))

    # -- /v2 -----------------------------------------------------------------------------------

    def server_metadata(self, request: Request) -> Response:
        return self._json(
            v2.ServerMetadata(name="skyscore", version=package_version(), extensions=[])
        )

    def live(self, request: Request) -> Response:
        return self._json(v2.LiveResponse(live=True))

    def ready(self, request: Request) -> Response:
        if not self.provider.ready():
            raise _NotReady("no model is ready: register and promote one")
        return self._json(v2.ReadyResponse(ready=True))

    def model_metadata(self, request: Request, name: str) -> Response:
        return self._json(v2.model_metadata(self.provider.get(name)))

    def model_ready(self, request: Request, name: str) -> Response:
        try:
            self.provider.get(name)
        except NotFound:
            raise
        except SkyscoreError as error:
            raise _NotReady(f"model {name!r} is not ready: {error.detail}") from None
        except Exception:
            _log.exception("model %s failed to load", name)
            raise _NotReady(f"model {name!r} failed to load; see the server log") from None
        return self._json(v2.ModelReadyResponse(name=name, ready=True))

    def infer(self, request: Request, name: str) -> Response:
        predictor = self.provider.get(name)
        inference: v2.InferenceRequest = _decode(
            v2.request_decoder, request.body, "an Open Inference Protocol request"
        )
        numeric, categorical = v2.request_to_arrays(
            inference, predictor, max_instances=self.max_instances
        )
        probabilities = predictor.predict_arrays(numeric, categorical)
        self.online_drift.observe(predictor, numeric, categorical, probabilities)
        response = v2.InferenceResponse(
            model_name=predictor.name,
            model_version=predictor.version,
            id=inference.id,
            outputs=v2.response_outputs(predictor, probabilities, inference.outputs),
        )
        return self._json(response)

    # -- meta ----------------------------------------------------------------------------------

    def openapi(self, request: Request) -> Response:
        return Response(200, {"content-type": JSON_CONTENT_TYPE}, openapi_json())


class _NotReady(SkyscoreError):
    """Nothing (or not this model) can serve yet."""

    status = 503
    slug = "not-ready"
    title = "Service unavailable"


# The route table's operations bound to their handlers: explicit, so reading it shows what serves
# each route (no lookup by name), and checked against ROUTES so neither can drift from the other.
HANDLERS: dict[str, Handler] = {
    "predict": DataPlane.predict,
    "drift": DataPlane.drift,
    "list_models": DataPlane.list_models,
    "server_metadata": DataPlane.server_metadata,
    "live": DataPlane.live,
    "ready": DataPlane.ready,
    "model_metadata": DataPlane.model_metadata,
    "model_ready": DataPlane.model_ready,
    "infer": DataPlane.infer,
    "openapi": DataPlane.openapi,
}
_UNBOUND = {route.operation for route in ROUTES} ^ HANDLERS.keys()
if _UNBOUND:
    raise RuntimeError(f"routes and handlers disagree on {sorted(_UNBOUND)}")
