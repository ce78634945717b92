"""JSON over HTTPS with a bearer token: the managed-job APIs that have no SDK on the inference
path (Azure ML's and Vertex AI's REST endpoints) are called the same way, with the same errors."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from skyscore.errors import NotFound, SkyscoreError


def json_request(
    service: str,
    method: str,
    url: str,
    token: str,
    body: dict[str, Any] | None = None,
    *,
    timeout: float,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """One call; the decoded JSON object (``{}`` for an empty or non-object answer).

    A 404 is :class:`NotFound`; any other HTTP error a :class:`SkyscoreError` (500: the trigger
    retries) naming the service, method, path and the start of the answer.
    """
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", content_type)
    path = urlsplit(url).path
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace")[:500]
        if error.code == 404:
            raise NotFound(f"{service}: {method} {path}: not found") from None
        raise SkyscoreError(f"{service}: {method} {path}: {error.code} {detail}") from None
    loaded = json.loads(raw) if raw else {}
    return loaded if isinstance(loaded, dict) else {}
