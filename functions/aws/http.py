"""HTTP: API Gateway HTTP API (payload 2.0), Lambda function URLs and REST API proxy events.

Powertools' resolver parses the event and frames the reply; one catch-all route hands every
request to the core's :class:`~skyscore.serving.dataplane.DataPlane`, so routes, bodies and RFC 9457
problems are exactly the local runtime's.
"""

from __future__ import annotations

import base64
import functools
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import (
    APIGatewayHttpResolver,
    APIGatewayRestResolver,
    Response,
)
from aws_lambda_powertools.logging import correlation_paths
from functions.aws.common import logger, registry

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from skyscore.serving.dataplane import DataPlane

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
CATCH_ALL = ".+"  # Powertools compiles routes to ^rule$, so this matches every path

http_app = APIGatewayHttpResolver()  # payload 2.0: HTTP APIs and function URLs
rest_app = APIGatewayRestResolver()  # payload 1.0: REST API proxy integrations


@functools.cache
def dataplane() -> DataPlane:
    """The dataplane over the S3 registry (built once per container)."""
    from skyscore.serving.dataplane import DataPlane, RegistryModelProvider

    return DataPlane(RegistryModelProvider(registry()))


def _serve(event: BaseProxyEvent) -> Response[str]:
    from skyscore.serving.dataplane import Request

    body = event.body or ""
    raw = base64.b64decode(body) if event.is_base64_encoded else body.encode("utf-8")
    request = Request(
        event.http_method,
        event.path,
        dict(event.headers or {}),
        raw,
        query=dict(event.query_string_parameters or {}),
    )
    reply = dataplane().handle(request)
    headers = {k: v for k, v in reply.headers.items() if k != "content-type"}
    return Response(
        status_code=reply.status,
        content_type=reply.content_type or None,
        body=reply.body.decode("utf-8"),
        headers=headers,
    )


@http_app.route(CATCH_ALL, method=METHODS)
def _http_any() -> Response[str]:
    return _serve(http_app.current_event)


@rest_app.route(CATCH_ALL, method=METHODS)
def _rest_any() -> Response[str]:
    return _serve(rest_app.current_event)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point for every HTTP front end."""
    app = rest_app if event.get("version") == "1.0" or "httpMethod" in event else http_app
    return app.resolve(event, context)
