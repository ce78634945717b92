"""The local HTTP front end: a stdlib ``ThreadingHTTPServer`` that turns each request into a
:class:`~skyscore.serving.dataplane.Request`, so it answers exactly like the cloud functions."""

from __future__ import annotations

import logging
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from skyscore.errors import BadRequest, SkyscoreError
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
_LINE_LIMIT = 1024  # a chunk-size or trailer line longer than this is malformed
_MAX_TRAILERS = 64
_HEX = frozenset(b"0123456789abcdefABCDEF")
_DIGITS = frozenset(b"0123456789")

_log = logging.getLogger(__name__)


class ProtocolError(SkyscoreError):
    """An HTTP-level failure http.server detects itself (bad request line, oversized headers):
    its status is the one http.server chose, and it renders like every other problem."""

    slug = "protocol-error"

    def __init__(self, detail: str, *, status: int, title: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title


def _list_header(values: list[str]) -> list[str]:
    """The members of a list-valued header sent once or several times (RFC 9110 §5.3)."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _is_hex(text: bytes) -> bool:
    return 0 < len(text) <= 16 and _HEX.issuperset(text)


def _is_digits(text: str) -> bool:
    return 0 < len(text) <= 18 and _DIGITS.issuperset(text.encode())


# ------------------------------------------------------------------------------ HTTP
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    plane: DataPlane


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    """Adapts one HTTP exchange to ``DataPlane.handle``; no routing or validation here."""

    disable_nagle_algorithm = True  # TCP_NODELAY: a response is never held back for an ACK
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
        """The request body, framed strictly (RFC 9112 §6), refused before it is kept when it
        is over the limit.

        Framing the server cannot be sure of (conflicting or malformed Content-Length, chunked
        together with a length, a coding other than ``chunked``) is a 400 that closes the
        connection: a proxy in front may have framed it differently (request smuggling). An
        oversized body of moderate size is read and discarded, so the client sees the 413
        rather than a reset connection and may reuse it; a huge one closes the connection.
        """
        codings = _list_header(self.headers.get_all("Transfer-Encoding") or [])
        lengths = _list_header(self.headers.get_all("Content-Length") or [])
        if codings:
            keep = self.close_connection
            self.close_connection = True  # the body's end is uncertain until it is all read
            if lengths:
                raise BadRequest("a request may not have both Transfer-Encoding and Content-Length")
            if [c.lower() for c in codings] != ["chunked"]:
                raise BadRequest(
                    f"unsupported Transfer-Encoding {', '.join(codings)!r}: send chunked or a "
                    "Content-Length"
                )
            body = self._read_chunked(plane)
            self.close_connection = keep
            return body
        if not lengths:
            return b""
        if len(set(lengths)) > 1 or not _is_digits(lengths[0]):
            self.close_connection = True  # the body's end is unknown
            raise BadRequest(f"invalid Content-Length {', '.join(lengths)!r}")
        length = int(lengths[0])
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
        """A chunked body: each size is 1-16 hex digits (no sign, prefix or underscore: what
        ``int(x, 16)`` would also take), each chunk ends in CRLF, the total stays under the
        limit, and the trailer section is bounded."""
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(_LINE_LIMIT)
            digits = line.split(b";", 1)[0].strip(b" \t\r\n")
            if not line.endswith(b"\n") or not _is_hex(digits):
                raise BadRequest(f"malformed chunked body: invalid chunk size {digits[:32]!r}")
            size = int(digits, 16)
            if size == 0:
                for _ in range(_MAX_TRAILERS):
                    trailer = self.rfile.readline(_LINE_LIMIT)
                    if trailer in (b"\r\n", b"\n"):
                        return b"".join(parts)
                    if not trailer.endswith(b"\n"):
                        break
                raise BadRequest("malformed chunked body: the trailer section does not end")
            total += size
            plane.check_size(total)
            data = self.rfile.read(size)
            if len(data) != size:
                raise BadRequest("malformed chunked body: it ends inside a chunk")
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise BadRequest("malformed chunked body: a chunk does not end with CRLF")
            parts.append(data)

    def _send(self, response: Response) -> None:
        """Status line, headers and body in one write: in two, the body waited for the
        client's delayed ACK of the headers (Nagle), ~40 ms per response on a kept-alive
        connection."""
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self._write_all(b"" if self.command == "HEAD" else response.body)

    def _write_all(self, body: bytes) -> None:
        """End the buffered headers and send them with ``body`` in a single write."""
        buffered: list[bytes] = getattr(self, "_headers_buffer", [])
        buffered.append(b"\r\n")
        if body:
            buffered.append(body)
        self._headers_buffer: list[bytes] = []
        self.wfile.write(b"".join(buffered))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors (bad request line, oversized headers) as problem JSON too,
        rendered by the dataplane like every other error."""
        title = message or self.responses.get(code, ("Error", ""))[0]
        error = ProtocolError(explain or title, status=code, title=title)
        response = self.server.plane.error_response(error, getattr(self, "path", None))
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # an unparsable request line: answer in HTTP/1.x
            self.request_version = self.protocol_version
        try:
            self.send_response(code, message)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("Connection", "close")
            bodiless = getattr(self, "command", None) == "HEAD" or code < 200 or code in (204, 304)
            self._write_all(b"" if bodiless else response.body)
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
