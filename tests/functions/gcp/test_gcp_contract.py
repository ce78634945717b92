"""The HTTP function keeps the same contract as the local server (issue 18.2): schemathesis
generates valid and invalid requests from the OpenAPI document the running functions-framework
server serves, and every response must be documented: no 5xx, declared statuses, content types
and schemas."""

from __future__ import annotations

import schemathesis
from gcpfunc import GcpApp

from openapi_contract import check_operations
from skyscore.model.registry import ModelRegistry


def test_every_operation_keeps_its_contract(gcp_app: GcpApp, cancer: ModelRegistry) -> None:
    server = gcp_app.server("http")
    api = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = {result.ok().path for result in api.get_all_operations()}
    assert "/v2/models/{name}/infer" in operations
    assert check_operations(api, examples=15, front_end_rejects=gunicorn_rejects) == []


def gunicorn_rejects(response: schemathesis.Response) -> bool:
    """gunicorn (the functions' web server; on Cloud Run the Google Front End is in front of
    it too) answers a request it cannot parse, such as an invalid header, with its own HTML 400
    before the function runs."""
    headers = {name.lower(): values for name, values in response.headers.items()}
    return (
        response.status_code == 400
        and (headers.get("content-type") or [""])[0].startswith("text/html")
        and b"<h1><p>Bad Request</p></h1>" in response.content
    )
