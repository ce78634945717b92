"""Typed errors of the core.

Every failure a user can cause or observe has its own class. Each carries the HTTP status and a
stable problem ``type`` so that every transport (local HTTP, Lambda, Azure Functions, Cloud
Functions) renders it the same way, as an RFC 9457 problem body, in one place
(:func:`problem_body`). Handlers never format errors themselves.
"""

from __future__ import annotations

from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"


class SkyscoreError(Exception):
    """Base class: a failure with a status, a stable slug and a human-readable detail."""

    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        row: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.row = row
        self.extra = extra or {}

    @property
    def retryable(self) -> bool:
        """Whether delivering the same input again can help: a 5xx is ours or the platform's
        (raise it, so the trigger retries and finally dead-letters); a 4xx is the input's
        fault (report it once: a retry would fail the same way)."""
        return self.status >= 500

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        """The RFC 9457 problem object for this error."""
        body: dict[str, Any] = {
            "type": f"https://skyscore.dev/problems/{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance is not None:
            body["instance"] = instance
        if self.field is not None:
            body["field"] = self.field
        if self.row is not None:
            body["row"] = self.row
        body.update(self.extra)
        return body


class BadRequest(SkyscoreError):
    """The request is malformed: not JSON, wrong envelope, wrong shape."""

    status = 400
    slug = "bad-request"
    title = "Bad request"


class InvalidKey(BadRequest, ValueError):
    """A store key that could escape the store (``..``, an absolute path, a NUL byte): refused
    before anything is read. Also a ``ValueError``, which it is to a caller of the store."""

    slug = "invalid-key"
    title = "Invalid key"


class InvalidInput(SkyscoreError):
    """Well-formed request whose values do not match the model's input schema."""

    status = 422
    slug = "invalid-input"
    title = "Input does not match the model's schema"


class NotFound(SkyscoreError):
    """A route, model, version or object that does not exist."""

    status = 404
    slug = "not-found"
    title = "Not found"


class ModelNotFound(NotFound):
    """No such model, version or alias in the registry."""

    slug = "model-not-found"
    title = "Model not found"


class MethodNotAllowed(SkyscoreError):
    """The route exists but not for this HTTP method."""

    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"


class PayloadTooLarge(SkyscoreError):
    """The request body or instance count is above the configured limit."""

    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class UnsupportedMediaType(SkyscoreError):
    """The body is not in a content type the route accepts."""

    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class UnsupportedFormat(SkyscoreError):
    """A file whose extension names no supported format, or whose decoder is not installed."""

    status = 415
    slug = "unsupported-format"
    title = "Unsupported file format"


class FormatMismatch(SkyscoreError):
    """A file whose content is not what its extension says (e.g. binary data in ``.csv``)."""

    status = 415
    slug = "format-mismatch"
    title = "File content does not match its extension"


class IntegrityError(SkyscoreError):
    """A model artifact whose sha256 does not match its model card: it is never loaded."""

    status = 500
    slug = "integrity-error"
    title = "Model artifact failed its checksum"


class ConflictError(SkyscoreError):
    """A write that would overwrite something that must stay immutable (e.g. a model version)."""

    status = 409
    slug = "conflict"
    title = "Conflict"


class InputChanged(ConflictError):
    """The input was modified while it was being scored: its output would match neither
    version, so it is dropped; the new version is scored on its own (or upload it again)."""

    slug = "input-changed"
    title = "Input changed while being scored"


class Busy(SkyscoreError):
    """A copy of this very delivery (same message or event id) is being worked on right now.

    A 503, so it is retried later instead of acknowledged: the first copy may still fail, and
    then this delivery is the one that must do the work. By the retry, the first copy has
    finished (the retry is a duplicate) or stopped its heartbeat (the retry takes over)."""

    status = 503
    slug = "busy"
    title = "Being worked on by a copy of this delivery"


class ConfigError(SkyscoreError):
    """The deployment is not configured: a required setting is missing or malformed.

    A 500 on purpose: the caller did nothing wrong, and the event must stay retryable until
    the setting is fixed.
    """

    status = 500
    slug = "not-configured"
    title = "Not configured"


class ParityError(SkyscoreError):
    """The ONNX graph disagrees with scikit-learn beyond tolerance: the model is not published."""

    status = 500
    slug = "onnx-parity"
    title = "ONNX probabilities differ from scikit-learn"


class TrainingDataError(SkyscoreError):
    """The labelled data cannot be trained on (missing target, one class, too few rows)."""

    status = 422
    slug = "training-data"
    title = "Training data is not usable"


def problem_body(error: SkyscoreError, instance: str | None = None) -> dict[str, Any]:
    """Render any core error as a problem object (the single place that does so)."""
    return error.to_problem(instance)


def internal_problem(instance: str | None = None) -> dict[str, Any]:
    """The problem object for an unexpected exception: never a stack trace."""
    return SkyscoreError("An unexpected error occurred; it has been logged.").to_problem(instance)


_BY_STATUS: dict[int, type[SkyscoreError]] = {
    400: BadRequest,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


def error_for_status(status: int, detail: str) -> SkyscoreError:
    """A web framework's own refusal (a path its routes cannot match, a method it does not
    serve, a body it will not read) as the core's error, so it renders as the same problem body
    as ours. Statuses without a class of their own become a 400 (a client error) or stay 500."""
    kind = _BY_STATUS.get(status, BadRequest if 400 <= status < 500 else SkyscoreError)
    return kind(detail)
