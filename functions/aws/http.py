"""HTTP: API Gateway HTTP API (payload 2.0), Lambda function URLs and REST API proxy events.

The event becomes the dataplane's request (:func:`functions.aws.events.http_request`) and the
core answers it, so routes, bodies and RFC 9457 problems are exactly the local runtime's. No
Powertools resolver: one dict lookup per field is all the framing this needs, on the
cold-start-critical path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from functions.aws.common import core, logger
from functions.aws.events import http_request

from skyscore.errors import SkyscoreError

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from skyscore.serving.dataplane import Response


def _reply(response: Response) -> dict[str, Any]:
    return {
        "statusCode": response.status,
        "headers": dict(response.headers),
        "body": response.body.decode("utf-8"),
        "isBase64Encoded": False,
    }


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point for every HTTP front end."""
    the_core = core()
    try:
        request = http_request(event)
    except SkyscoreError as error:
        return _reply(the_core.dataplane.error_response(error, str(event.get("rawPath") or "")))
    return _reply(the_core.http(request))
