"""The core's event types: what every cloud's trigger is converted into before one core call.

Each handler parses its own envelope (an S3 notification, an Event Grid event, a CloudEvent)
into these small frozen types; the core decides what they mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

AlarmKind = Literal["drift", "prediction_drift", "error_rate", "operational"]
RETRAIN_KINDS: tuple[AlarmKind, ...] = ("drift", "prediction_drift", "error_rate")


@dataclass(frozen=True, slots=True)
class ObjectCreated:
    """An object appeared in a bucket or container, named as the event names it.

    ``version`` is the token the event carried (S3 ETag, Azure ETag, GCS generation): the core
    compares it with the store's, through the store, and never parses it.
    """

    container: str
    name: str
    version: str | None = None
    size: int | None = None


@dataclass(frozen=True, slots=True)
class AlarmSignal:
    """A monitoring alarm that changed state (CloudWatch, Azure Monitor, Cloud Monitoring).

    ``firing`` is true for CloudWatch ``ALARM``, Azure ``Fired`` and Cloud Monitoring ``open``.
    ``description`` may carry ``model=<name>`` and ``alarm=<kind>`` tokens; ``event_id`` names
    the state change, the same however many times and ways it is delivered.
    """

    name: str
    firing: bool
    model: str | None = None
    changed_at: str = ""
    reason: str = ""
    description: str = ""
    event_id: str = ""


def decode_json(body: bytes) -> Any:
    """A trigger's JSON payload (an alert webhook, a Pub/Sub message) with the core's decoder:
    anything hostile, deep nesting included, is a 400, never a crash."""
    import msgspec

    from skyscore.errors import BadRequest

    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError, ValueError) as error:
        raise BadRequest(f"the body is not JSON: {error}") from None
