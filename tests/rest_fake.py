"""The base of the local fakes for job APIs that have no emulator (Azure ML, Vertex AI): a
threaded HTTP server on 127.0.0.1, every request recorded, the bearer token checked. Each fake
routes and answers in its service's documented shapes (``handle``)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit

JSON = {"Content-Type": "application/json"}


class RestFake:
    token: str

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.tokens_issued = 0
        self.page_size = 1  # every list answer pages, so the next-page link is followed
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def handle(
        self, method: str, target: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        """(status, body: bytes or JSON, headers) for one request."""
        raise NotImplementedError

    def fail(self, status: int, why: str) -> tuple[int, Any, dict[str, str]]:
        """Record why a request was refused and answer it in the service's error shape."""
        raise NotImplementedError

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body, extra = fake.handle(self.command, self.path, dict(self.headers), raw)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _handle  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @staticmethod
    def split(
        target: str, headers: dict[str, str]
    ) -> tuple[SplitResult, dict[str, str], dict[str, str]]:
        """The target's parts and query, and the headers with lower-case names."""
        parts = urlsplit(target)
        return parts, dict(parse_qsl(parts.query)), {k.lower(): v for k, v in headers.items()}

    def api_call(
        self,
        method: str,
        parts: SplitResult,
        query: dict[str, str],
        headers: dict[str, str],
        raw: bytes,
    ) -> tuple[Any, tuple[int, Any, dict[str, str]] | None]:
        """Record an API request and check its JSON body and bearer token: (body, refusal)."""
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                return None, self.fail(400, "the body is not JSON")
        with self._lock:
            self.requests.append(
                {
                    "method": method,
                    "path": parts.path,
                    "query": query,
                    "headers": headers,
                    "body": body,
                }
            )
        if headers.get("authorization") != f"Bearer {self.token}":
            return body, self.fail(
                401, f"bad Authorization header {headers.get('authorization')!r}"
            )
        return body, None
