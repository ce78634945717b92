"""skyscore on Cloud Run functions (2nd gen), Python 3.13, on functions-framework.

Each function converts its trigger into the core's types and makes one core call
(:mod:`skyscore.runtime.core`); the conversions of every Google Cloud shape live here, in one
place:

* ``http`` (HTTP): every path (``/v1/...``, the Open Inference Protocol ``/v2/...``,
  ``/openapi.json``) goes to the dataplane, so routes, bodies and problems are exactly the
  local runtime's. Private: deployed without ``allUsers`` invoker, callers send an identity
  token (``Authorization: Bearer $(gcloud auth print-identity-token)``).
* ``upload`` (Eventarc ``google.cloud.storage.object.v1.finalized``) → :meth:`Core.object_created`.
  A Pub/Sub ``messagePublished`` event carrying a Cloud Storage notification
  (``eventType=OBJECT_FINALIZE``) names the same object and is accepted too.
* ``work`` (Eventarc Pub/Sub ``messagePublished`` on the work topic) → :meth:`Core.message`
  (object pointers, inline records, fan-out parts) or, for a storage notification, the upload.
* ``alerts`` (Pub/Sub ``messagePublished`` from the Cloud Monitoring notification channel,
  incident JSON version 1.2) → :meth:`Core.alarm`, which acts only on ``state: open``
  incidents of policies configured as retrain triggers.
* ``retrain_schedule`` (HTTP, called by Cloud Scheduler with an OIDC token) →
  :meth:`Core.schedule` (judges finished Vertex AI jobs, considers retraining).

Replies to Pub/Sub: a 2xx acknowledges, an error status makes Pub/Sub redeliver (and, after
the subscription's ``max_delivery_attempts``, dead-letter). So an event no retry can help (a
malformed message, a 4xx problem from the core) is logged, forwarded to the dead-letter topic
and acknowledged; everything else raises and is retried.

Settings are documented on :class:`skyscore.adapters.gcp.GcpBackend`. Only functions-framework
is imported at start-up; the core and the storage SDK load on the first invocation.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any, cast

import functions_framework
from werkzeug.exceptions import HTTPException

if TYPE_CHECKING:
    import flask
    from cloudevents.http.event import CloudEvent

    from skyscore.runtime.core import Core
    from skyscore.runtime.events import AlarmSignal, ObjectCreated
    from skyscore.serving.dataplane import Request, Response

STORAGE_FINALIZED = "google.cloud.storage.object.v1.finalized"
PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
OBJECT_FINALIZE = "OBJECT_FINALIZE"  # a Cloud Storage Pub/Sub notification's eventType
INCIDENT_VERSION = "1.2"

log = logging.getLogger("skyscore.gcp")
if not logging.getLogger().handlers:  # Cloud Run ships stderr lines to Cloud Logging
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
log.setLevel(logging.INFO)


def core() -> Core:
    """The core for this instance, built once from the function's environment."""
    from skyscore.adapters.gcp import GCP
    from skyscore.runtime.wiring import core_for

    return core_for(GCP)


# --------------------------------------------------------------------------------------------
# Google Cloud shapes → the core's types
# --------------------------------------------------------------------------------------------


def _int64(value: Any) -> int | None:
    """A proto3 int64 as JSON gives it: a string of digits, or (in older payloads) a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def storage_object(data: Any) -> ObjectCreated | None:
    """``StorageObjectData`` (the data of ``google.cloud.storage.object.v1.*`` events, and the
    body of a ``JSON_API_V1`` notification) as the object it names."""
    from skyscore.runtime.events import ObjectCreated

    if not isinstance(data, dict) or not data.get("bucket") or not data.get("name"):
        return None
    generation = _int64(data.get("generation"))
    return ObjectCreated(
        str(data["bucket"]),
        str(data["name"]),
        None if generation is None else str(generation),
        _int64(data.get("size")),
    )


def pubsub_message(data: Any) -> tuple[bytes, dict[str, str], str]:
    """``MessagePublishedData`` → (body, attributes, message id). The body is strict base64.

    Raises :class:`skyscore.errors.BadRequest` when the envelope is not a Pub/Sub message.
    """
    from skyscore.errors import BadRequest

    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, dict):
        raise BadRequest("not a Pub/Sub MessagePublishedData (no message)")
    try:
        body = base64.b64decode(str(message.get("data") or ""), validate=True)
    except (binascii.Error, ValueError) as error:
        raise BadRequest(f"message.data is not base64: {error}") from None
    raw = message.get("attributes")
    attributes = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    message_id = str(message.get("messageId") or message.get("message_id") or "")
    return body, attributes, message_id


def notification_object(body: bytes, attributes: dict[str, str]) -> ObjectCreated | None:
    """A Cloud Storage Pub/Sub notification (``eventType=OBJECT_FINALIZE``) as its object: the
    attributes name it (``bucketId``, ``objectId``, ``objectGeneration``); a ``JSON_API_V1``
    body adds the size. Any other message names none."""
    from skyscore.runtime.events import ObjectCreated

    if attributes.get("eventType") != OBJECT_FINALIZE:
        return None
    bucket, name = attributes.get("bucketId", ""), attributes.get("objectId", "")
    if not bucket or not name:
        return None
    size = None
    if attributes.get("payloadFormat") == "JSON_API_V1":
        try:
            found = storage_object(json.loads(body))
        except (ValueError, RecursionError):
            found = None
        size = found.size if found is not None else None
    generation = _int64(attributes.get("objectGeneration"))
    return ObjectCreated(bucket, name, None if generation is None else str(generation), size)


def event_objects(event: CloudEvent) -> list[ObjectCreated]:
    """The objects a CloudEvent says were created: a storage ``finalized`` event, or a Pub/Sub
    message that is a storage notification; anything else names none."""
    kind = str(event["type"])
    if kind == STORAGE_FINALIZED:
        found = storage_object(event.get_data())
        return [] if found is None else [found]
    if kind == PUBSUB_PUBLISHED:
        body, attributes, _ = pubsub_message(event.get_data())
        notified = notification_object(body, attributes)
        return [] if notified is None else [notified]
    return []


def _model_of(incident: dict[str, Any]) -> str | None:
    """The model an incident is about: the metric's ``model`` label, else the policy's."""
    for holder in (incident.get("metric"), incident.get("resource")):
        labels = holder.get("labels") if isinstance(holder, dict) else None
        if isinstance(labels, dict) and labels.get("model"):
            return str(labels["model"])
    user = incident.get("policy_user_labels")
    if isinstance(user, dict) and user.get("model"):
        return str(user["model"])
    return None


def alarm_signal(payload: Any) -> AlarmSignal:
    """A Cloud Monitoring notification (incident JSON, version 1.2) as the core's signal:
    firing only while ``state`` is ``open``; the policy's name is the alarm's.

    Raises :class:`skyscore.errors.BadRequest` for anything else.
    """
    from skyscore.errors import BadRequest
    from skyscore.runtime.events import AlarmSignal

    if not isinstance(payload, dict) or str(payload.get("version")) != INCIDENT_VERSION:
        raise BadRequest(f"not a Cloud Monitoring incident of version {INCIDENT_VERSION}")
    incident = payload.get("incident")
    if not isinstance(incident, dict) or not incident.get("policy_name"):
        raise BadRequest("the notification has no incident.policy_name")
    state = str(incident.get("state") or "")
    firing = state == "open"
    at = incident.get("started_at" if firing else "ended_at")
    documentation = incident.get("documentation")
    description = str(documentation.get("content") or "") if isinstance(documentation, dict) else ""
    incident_id = str(incident.get("incident_id") or "")
    return AlarmSignal(
        name=str(incident["policy_name"]),
        firing=firing,
        model=_model_of(incident),
        changed_at="" if at is None else str(at),
        reason=f"Cloud Monitoring incident {state}: {incident.get('summary') or ''}".strip(),
        description=description,
        event_id=f"{incident_id}:{state}" if incident_id else "",
    )


def http_request(req: flask.Request) -> Request:
    """The dataplane's request: the path as sent, the query, the raw body."""
    from skyscore.serving.dataplane import Request

    headers = {k.lower(): v for k, v in req.headers.items()}
    query = {k: v for k, v in req.args.items()}
    return Request(req.method, req.path or "/", headers, req.get_data(), query=query)


def http_response(response: Response) -> flask.Response:
    """The dataplane's response as Flask's (the body as is, the headers as given)."""
    import flask

    answer = flask.Response(response.body, status=response.status)
    for name, value in response.headers.items():
        answer.headers[name] = value
    return answer


# --------------------------------------------------------------------------------------------
# Functions
# --------------------------------------------------------------------------------------------


@functions_framework.http
def http(req: flask.Request) -> flask.Response:
    """Every dataplane route, answered as the local runtime answers it."""
    from skyscore.errors import SkyscoreError

    the_core = core()
    try:
        request = http_request(req)
    except SkyscoreError as error:
        return http_response(the_core.dataplane.error_response(error, req.path))
    return http_response(the_core.http(request))


def framework_error(error: HTTPException) -> flask.Response:
    """Flask's own answers (a path no route matches, such as one with a newline in it) as the
    same problem bodies as the dataplane's, never an HTML page."""
    import flask

    from skyscore.errors import error_for_status

    problem = error_for_status(error.code or 500, error.description or error.name)
    return http_response(core().dataplane.error_response(problem, flask.request.path))


# registered on the app functions-framework builds (it sets errorhandler before loading us)
cast(Any, functions_framework).errorhandler(HTTPException)(framework_error)


def _hopeless(error: Exception, event: CloudEvent, body: bytes | None) -> None:
    """An event no retry can help: logged, kept on the dead-letter topic when there is one,
    then acknowledged (the function returns)."""
    log.error("event %s (%s) rejected: %s", event["id"], event["type"], error)
    queue = core().queue
    if queue is not None and queue.dead_letter is not None and body is not None:
        queue.dead_letter.send(body, {"rejected": str(error)[:1000], "ce-id": str(event["id"])})


def _score(item: ObjectCreated, owner: str) -> None:
    result = core().object_created(item, owner=owner)
    log.info(
        "upload %s/%s: %s",
        item.container,
        item.name,
        {"key": result.key, "status": result.status, "output": result.output},
    )


@functions_framework.cloud_event
def upload(event: CloudEvent) -> None:
    """A finalized object (Eventarc's storage event, or a storage notification via Pub/Sub).
    The event id owns the claim: a redelivery after a crash takes its own claim back."""
    from skyscore.errors import SkyscoreError

    try:
        items = event_objects(event)
    except SkyscoreError as error:
        _hopeless(error, event, None)
        return
    if not items:
        log.info("ignored event %s of type %s", event["id"], event["type"])
    for item in items:
        _score(item, f"event:{event['id']}")


@functions_framework.cloud_event
def work(event: CloudEvent) -> None:
    """One work-topic message: an object pointer, inline records, a fan-out part, or a storage
    notification. A 4xx problem is acknowledged (after the dead-letter copy); anything else
    raises, so Pub/Sub retries it and finally dead-letters it."""
    from skyscore.errors import SkyscoreError

    body: bytes | None = None
    try:
        body, attributes, message_id = pubsub_message(event.get_data())
        owner = f"pubsub:{message_id or event['id']}"
        notified = notification_object(body, attributes)
        if notified is not None:
            _score(notified, owner)
            return
        result = core().message(body, owner=owner)
    except SkyscoreError as error:
        if error.retryable:
            raise
        _hopeless(error, event, body)
        return
    log.info("message %s: %s %s", message_id, result.status, result.detail)


@functions_framework.cloud_event
def alerts(event: CloudEvent) -> None:
    """A Cloud Monitoring incident from the Pub/Sub notification channel: an open drift or
    error-rate incident may start retraining; others page people and change nothing."""
    from skyscore.errors import SkyscoreError
    from skyscore.runtime.events import decode_json

    try:
        body, _, message_id = pubsub_message(event.get_data())
        signal = alarm_signal(decode_json(body))
    except SkyscoreError as error:
        log.error("alert event %s rejected: %s", event["id"], error)
        return
    decision = core().alarm(signal, owner=signal.event_id or f"pubsub:{message_id}")
    log.info(
        "alert %s (%s): %s",
        signal.name,
        "open" if signal.firing else "closed",
        None if decision is None else decision.to_dict(),
    )


@functions_framework.http
def retrain_schedule(req: flask.Request) -> flask.Response:
    """Cloud Scheduler's tick: judge finished Vertex AI jobs, then consider retraining."""
    import flask

    job = req.headers.get("X-CloudScheduler-JobName", "")
    at = req.headers.get("X-CloudScheduler-ScheduleTime", "")
    owner = f"scheduler:{job}@{at}" if job and at else f"schedule:{uuid.uuid4()}"
    decisions = [decision.to_dict() for decision in core().schedule(owner=owner)]
    for decision in decisions:
        log.info("retraining: %s", decision)
    return flask.Response(
        json.dumps({"decisions": decisions}), status=200, mimetype="application/json"
    )
