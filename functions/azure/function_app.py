"""skyscore on Azure Functions (Python v2 programming model, Flex Consumption).

Each function converts its trigger into the core's types and makes one core call
(:mod:`skyscore.runtime.core`); the conversions of every Azure shape live here, in one place:

* ``http``: every path (``/v1/...``, the Open Inference Protocol ``/v2/...``, ``/openapi.json``)
  goes to the dataplane, so routes, bodies and problems are exactly the local runtime's;
  ``host.json`` sets ``routePrefix`` to ``""`` so the paths are the same too. Function-level
  auth (a key in ``x-functions-key`` or ``?code=``).
* ``alerts``: Azure Monitor's action-group webhook (common alert schema) → :meth:`Core.alarm`,
  which acts only on ``Fired`` alerts of rules configured as retrain triggers.
* ``upload_event``: Event Grid ``Microsoft.Storage.BlobCreated`` → :meth:`Core.object_created`.
* ``upload_blob``: the Event Grid-based blob trigger (the only one on Flex Consumption) → the same.
* ``work``: Storage Queue messages (the host decodes base64; it moves a message to
  ``<queue>-poison`` after ``maxDequeueCount`` failed tries) → :meth:`Core.message`.
* ``retrain_schedule``: timer → :meth:`Core.schedule` (judges finished Azure ML jobs, considers
  retraining).

Settings are documented on :class:`skyscore.adapters.azure.AzureBackend`. Only azure.functions is
imported at start-up; the core and the storage SDK load on the first invocation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import azure.functions as func

if TYPE_CHECKING:
    from skyscore.runtime.core import Core
    from skyscore.runtime.events import AlarmSignal, ObjectCreated
    from skyscore.serving.dataplane import Request, Response

CONNECTION = "SKYSCORE_STORAGE"  # the storage connection of the triggers and of the core's clients
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
COMMON_ALERT_SCHEMA = "azureMonitorCommonAlertSchema"
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
SCHEDULE = "0 */15 * * * *"  # NCRONTAB: every 15 minutes, on the minute
ALERT_ROUTE = "hooks/azure-monitor"  # a literal route: it takes precedence over the catch-all

log = logging.getLogger("skyscore.azure")
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


def core() -> Core:
    """The core for this instance, built once from the app settings."""
    from skyscore.adapters.azure import AZURE
    from skyscore.runtime.wiring import core_for

    return core_for(AZURE)


# --------------------------------------------------------------------------------------------
# Azure shapes → the core's types
# --------------------------------------------------------------------------------------------


def blob_object(container_and_name: str, properties: Any) -> ObjectCreated:
    """The blob trigger's ``InputStream.name`` (``<container>/<name>``) and its properties."""
    from skyscore.runtime.events import ObjectCreated

    container, _, name = container_and_name.partition("/")
    props = {str(k).lower(): v for k, v in dict(properties or {}).items()}
    etag = props.get("etag")
    size = props.get("length", props.get("contentlength"))
    return ObjectCreated(
        container,
        name,
        str(etag) if etag else None,
        int(size) if isinstance(size, int | str) and str(size).isdigit() else None,
    )


def event_object(event_type: str, subject: str, data: Any) -> ObjectCreated | None:
    """A ``BlobCreated`` event (Event Grid or CloudEvents schema) as the object it names.

    The subject is ``/blobServices/default/containers/<container>/blobs/<name>`` with the name
    as it is (``data.url`` has it percent-encoded); other event types name nothing.
    """
    from skyscore.runtime.events import ObjectCreated

    if event_type != BLOB_CREATED:
        return None
    data = data if isinstance(data, dict) else {}
    _, sep, rest = str(subject or "").partition("/containers/")
    container, sep2, name = rest.partition("/blobs/")
    if not (sep and sep2 and container and name):
        url = urlsplit(str(data.get("url") or ""))
        container, _, name = unquote(url.path).lstrip("/").partition("/")
        if not (container and name):
            return None
    etag = data.get("eTag") or data.get("etag")
    size = data.get("contentLength")
    return ObjectCreated(
        container,
        name,
        str(etag) if etag else None,
        size if isinstance(size, int) and not isinstance(size, bool) else None,
    )


def objects_created(payload: Any) -> Iterator[ObjectCreated]:
    """Created blobs in raw Event Grid JSON: one event or an array of them, in the Event Grid
    schema (``eventType``) or the CloudEvents schema (``type``). Anything else names none."""
    for item in payload if isinstance(payload, list) else [payload]:
        if not isinstance(item, dict):
            continue
        found = event_object(
            str(item.get("eventType") or item.get("type") or ""),
            str(item.get("subject") or ""),
            item.get("data"),
        )
        if found is not None:
            yield found


def _model_of(context: Any, custom: Any) -> str | None:
    """The model an alert is about: a ``model`` custom property, else a ``model`` dimension."""
    if isinstance(custom, dict) and custom.get("model"):
        return str(custom["model"])
    condition = context.get("condition") if isinstance(context, dict) else None
    criteria = condition.get("allOf") if isinstance(condition, dict) else None
    for criterion in criteria if isinstance(criteria, list) else ():
        dimensions = criterion.get("dimensions") if isinstance(criterion, dict) else None
        for dimension in dimensions if isinstance(dimensions, list) else ():
            if isinstance(dimension, dict) and dimension.get("name") == "model":
                return str(dimension.get("value") or "") or None
    return None


def alarm_signal(payload: Any) -> AlarmSignal:
    """An Azure Monitor alert notification (common alert schema) as the core's signal.

    Raises :class:`skyscore.errors.BadRequest` for anything else: a legacy or custom payload
    cannot say reliably which rule fired.
    """
    from skyscore.errors import BadRequest
    from skyscore.runtime.events import AlarmSignal

    if not isinstance(payload, dict) or payload.get("schemaId") != COMMON_ALERT_SCHEMA:
        raise BadRequest(
            f"not an Azure Monitor alert in the common alert schema ({COMMON_ALERT_SCHEMA})"
        )
    data = payload.get("data")
    essentials = data.get("essentials") if isinstance(data, dict) else None
    if not isinstance(essentials, dict) or not essentials.get("alertRule"):
        raise BadRequest("the alert has no data.essentials.alertRule")
    assert isinstance(data, dict)
    condition = str(essentials.get("monitorCondition") or "")
    firing = condition == "Fired"
    at = str(essentials.get("firedDateTime" if firing else "resolvedDateTime") or "")
    alert_id = str(essentials.get("alertId") or essentials.get("originAlertId") or "")
    return AlarmSignal(
        name=str(essentials["alertRule"]),
        firing=firing,
        model=_model_of(data.get("alertContext"), data.get("customProperties")),
        changed_at=at,
        reason=f"{essentials.get('signalType') or 'alert'} alert {condition}",
        description=str(essentials.get("description") or ""),
        event_id=f"{alert_id}:{condition}" if alert_id else "",
    )


def http_request(req: func.HttpRequest) -> Request:
    """The dataplane's request: the URL's path as sent, the query less the function key."""
    from skyscore.serving.dataplane import Request

    query = {k: v for k, v in req.params.items() if k != "code"}
    headers = {k.lower(): v for k, v in req.headers.items()}
    return Request(req.method, urlsplit(req.url).path or "/", headers, req.get_body(), query=query)


def http_response(response: Response) -> func.HttpResponse:
    """The dataplane's response as the host's."""
    mimetype = response.headers.get("content-type", "application/json").split(";")[0]
    return func.HttpResponse(
        response.body, status_code=response.status, headers=response.headers, mimetype=mimetype
    )


# --------------------------------------------------------------------------------------------
# Functions
# --------------------------------------------------------------------------------------------


@app.function_name(name="http")
@app.route(route="{*path}", methods=HTTP_METHODS)
def http(req: func.HttpRequest) -> func.HttpResponse:
    """Every dataplane route, answered as the local runtime answers it."""
    from skyscore.errors import SkyscoreError

    the_core = core()
    try:
        request = http_request(req)
    except SkyscoreError as error:
        return http_response(the_core.dataplane.error_response(error, urlsplit(req.url).path))
    return http_response(the_core.http(request))


@app.function_name(name="alerts")
@app.route(route=ALERT_ROUTE, methods=("POST",))
def alerts(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    """Azure Monitor's webhook: a fired drift or error-rate alert may start retraining."""
    from skyscore.errors import SkyscoreError
    from skyscore.runtime.events import decode_json

    the_core = core()
    try:
        signal = alarm_signal(decode_json(req.get_body()))
        decision = the_core.alarm(signal, owner=signal.event_id or context.invocation_id)
    except SkyscoreError as error:  # Busy is a 503, which Azure Monitor's webhook retries
        return http_response(the_core.dataplane.error_response(error, f"/{ALERT_ROUTE}"))
    log.info("alert %s (%s): %s", signal.name, "fired" if signal.firing else "resolved", decision)
    body = {
        "alert": signal.name,
        "firing": signal.firing,
        "decision": None if decision is None else decision.to_dict(),
    }
    return func.HttpResponse(json.dumps(body), status_code=200, mimetype="application/json")


def _score(item: ObjectCreated, owner: str) -> dict[str, Any]:
    result = core().object_created(item, owner=owner)
    return {"key": result.key, "status": result.status, "output": result.output}


@app.function_name(name="upload_event")
@app.event_grid_trigger(arg_name="event")
def upload_event(event: func.EventGridEvent) -> None:
    """Event Grid ``BlobCreated`` (the host hands over one event of a delivered array at a
    time). The event id is the owner: a redelivery after a crash takes its own claim back."""
    item = event_object(event.event_type, event.subject, event.get_json())
    if item is None:
        log.info("ignored Event Grid event %s of type %s", event.id, event.event_type)
        return
    log.info("upload %s/%s: %s", item.container, item.name, _score(item, f"eventgrid:{event.id}"))


@app.function_name(name="upload_blob")
@app.blob_trigger(
    arg_name="blob",
    path="%SKYSCORE_CONTAINER%/{name}",
    connection=CONNECTION,
    source=func.BlobSource.EVENT_GRID,
)
def upload_blob(blob: func.InputStream) -> None:
    """The Event Grid-based blob trigger. The core streams the blob from the store itself; the
    trigger's copy is not read. Owned by the blob version, stable across the host's retries.

    The owner names the blob, not a delivery: a second execution for it while the first is
    live (Busy) is acknowledged, since each execution has retries of its own and the first
    one's retry takes over if it crashes."""
    from skyscore.errors import Busy

    item = blob_object(str(blob.name or ""), getattr(blob, "blob_properties", None))
    owner = f"blob:{item.container}/{item.name}@{item.version or ''}"
    try:
        outcome = _score(item, owner)
    except Busy as busy:
        outcome = {"key": item.name, "status": "in_progress", "output": None, "detail": busy.detail}
    log.info("upload %s/%s: %s", item.container, item.name, outcome)


@app.function_name(name="work")
@app.queue_trigger(arg_name="msg", queue_name="%SKYSCORE_QUEUE%", connection=CONNECTION)
def work(msg: func.QueueMessage) -> None:
    """One work-queue message: an object pointer, inline records, a fan-out part, or an Event
    Grid ``BlobCreated`` event delivered to the queue. A failure raises: the host retries it and
    moves it to ``<queue>-poison`` after ``maxDequeueCount`` tries."""
    from skyscore.adapters.azure import unwrap

    body, _ = unwrap(msg.get_body())
    owner = f"queue:{msg.id}"
    if body.lstrip()[:1] in (b"{", b"[") and (b'"eventType"' in body or b'"type"' in body):
        try:
            events = list(objects_created(json.loads(body)))
        except (ValueError, RecursionError):
            events = []
        if events:
            for item in events:
                log.info("upload %s/%s: %s", item.container, item.name, _score(item, owner))
            return
    result = core().message(body, owner=owner)
    log.info("message %s (try %s): %s %s", msg.id, msg.dequeue_count, result.status, result.detail)


@app.function_name(name="retrain_schedule")
@app.timer_trigger(arg_name="timer", schedule=SCHEDULE, run_on_startup=False, use_monitor=True)
def retrain_schedule(timer: func.TimerRequest, context: func.Context) -> None:
    """Judge Azure ML jobs that finished, then consider retraining each model."""
    if timer.past_due:
        log.info("the schedule is past due: running now")
    for decision in core().schedule(owner=context.invocation_id):
        log.info("retraining: %s", decision.to_dict())
