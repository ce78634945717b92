"""The local HTTP front end: a stdlib ``ThreadingHTTPServer`` that turns each request into a
:class:`~skyscore.serving.dataplane.Request`, so it answers exactly like the cloud functions."""

from __future__ import annotations

import logging
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import msgspec

from skyscore.errors import PROBLEM_CONTENT_TYPE, BadRequest, SkyscoreError
from skyscore.serving.dataplane import (
    DataPlane,
    Headers,
    Request,
    Response,
)

if TYPE_CHECKING:
    pass

DRAIN_LIMIT_BYTES = 64 << 20  # an oversized body up to this is read and dropped, not reset
_BLOCK = 1 << 20

_log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()


# ------------------------------------------------------------------------------ HTTP
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    plane: DataPlane


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    """Adapts one HTTP exchange to ``DataPlane.handle``; no routing or validation here."""

    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    server_version = "skyscore"
    sys_version = ""
    timeout = 60  # idle keep-alive connections close, so stop() never waits on them
    server: _Server

    def _serve(self) -> None:
        started = time.perf_counter()
        plane = self.server.plane
        target, _, raw_query = self.path.partition("?")
        query: dict[str, str] = {}
        if raw_query:
            from urllib.parse import parse_qsl

            query = dict(parse_qsl(raw_query))
        response: Response | None = None
        body = b""
        try:
            body = self._read_body(plane)
        except SkyscoreError as error:  # _read_body decided whether the connection survives
            response = plane.error_response(error, target)
        if response is None:
            request = Request(self.command, target, Headers(self.headers.items()), body, query)
            response = plane.handle(request)
        self._send(response)
        _log.info(
            "request",
            extra={
                "fields": {
                    "method": self.command,
                    "path": target,
                    "status": response.status,
                    "bytes_in": len(body),
                    "bytes_out": len(response.body),
                    "duration_ms": round((time.perf_counter() - started) * 1e3, 3),
                    "client": self.client_address[0],
                }
            },
        )

    # http.server dispatches on do_<METHOD>; every method goes to the dataplane
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve  # noqa: N815

    def _read_body(self, plane: DataPlane) -> bytes:
        """The request body, refused (413) before it is kept when it is over the limit.

        An oversized body of moderate size is read and discarded, so the client sees the 413
        rather than a reset connection and may reuse it; a huge one closes the connection.
        """
        encoding = self.headers.get("Transfer-Encoding", "")
        if "chunked" in encoding.lower():
            try:
                return self._read_chunked(plane)
            except SkyscoreError:
                self.close_connection = True  # the rest of the chunks are unread
                raise
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
            if length < 0:
                raise ValueError(raw)
        except ValueError:
            self.close_connection = True  # the body's end is unknown
            raise BadRequest(f"invalid Content-Length {raw!r}") from None
        try:
            plane.check_size(length)
        except SkyscoreError:
            if length > DRAIN_LIMIT_BYTES:
                self.close_connection = True
            else:
                remaining = length
                while remaining > 0:
                    block = self.rfile.read(min(remaining, _BLOCK))
                    if not block:
                        break
                    remaining -= len(block)
            raise
        return self.rfile.read(length) if length else b""

    def _read_chunked(self, plane: DataPlane) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequest("malformed chunked body") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            plane.check_size(total)
            parts.append(self.rfile.read(size))
            self.rfile.readline(8)  # the CRLF after each chunk

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors (bad request line, oversized headers) as problem JSON too."""
        title = message or self.responses.get(code, ("Error", ""))[0]
        problem = {
            "type": "about:blank",
            "title": title,
            "status": code,
            "detail": explain or title,
        }
        body = _encoder.encode(problem)
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # an unparsable request line: answer in HTTP/1.x
            self.request_version = self.protocol_version
        try:
            self.send_response(code, message)
            self.send_header("Content-Type", PROBLEM_CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)
        except OSError:
            pass
        _log.info(
            "request",
            extra={
                "fields": {
                    "method": getattr(self, "command", None),
                    "path": getattr(self, "path", None),
                    "status": code,
                    "client": self.client_address[0],
                }
            },
        )

    def log_message(self, format: str, *args: Any) -> None:
        """Silence http.server's own access log: ``_serve`` logs one JSON line instead."""
