"""The local HTTP front end under hostile framing: raw sockets on 127.0.0.1, a real server.

Chunk sizes and Content-Length are parsed strictly (RFC 9112): a size that is not hex digits, a
negative or absurd one, conflicting lengths or chunked plus a length get a 400 and the
connection closes; the body limit holds for chunked bodies as for sized ones. Responses go out
in one write with TCP_NODELAY, so a kept-alive connection is as fast as a fresh one.
"""

from __future__ import annotations

import json
import socket
import statistics
import time
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path

import pytest

from skyscore.local.runtime import LocalRuntime
from skyscore.model.predictor import Predictor
from skyscore.serving.dataplane import StaticModelProvider
from tiny_model import tiny_model

LIMIT = 64 * 1024
TIMEOUT = 5.0
ROW = json.dumps({"instances": [{"x1": 1.0, "x2": 2.0, "color": "red"}]}).encode()


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[LocalRuntime]:
    card, data = tiny_model()
    with LocalRuntime(
        tmp_path / "home",
        host="127.0.0.1",
        port=0,
        provider=StaticModelProvider([Predictor(card, data)]),
        max_body_bytes=LIMIT,
        watch_inbox=False,
        retraining=False,
        log_to_stderr=False,
    ) as running:
        yield running


def address(runtime: LocalRuntime) -> tuple[str, int]:
    host, _, port = runtime.url.removeprefix("http://").rpartition(":")
    return host, int(port)


def exchange(runtime: LocalRuntime, raw: bytes, *, then_wait: bool = True) -> tuple[int, bytes]:
    """Send ``raw`` on a fresh connection, leave it open (a hostile client would), and read
    one response: (status, rest of what came back before the server closed or went quiet)."""
    with socket.create_connection(address(runtime), timeout=TIMEOUT) as sock:
        sock.sendall(raw)
        received = b""
        try:
            while b"\r\n\r\n" not in received or then_wait:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except TimeoutError:
            if b"\r\n\r\n" not in received:
                raise AssertionError(f"no response within {TIMEOUT}s: {received[:200]!r}") from None
    status = int(received.split(b" ", 2)[1])
    return status, received


def request_head(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", "Content-Type: application/json", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


PREDICT = "/v1/models/tiny/predict"


@pytest.mark.parametrize(
    "size",
    [b"-1", b"-0", b"zz", b"+5", b"0x5", b"1_0", b" ", b"", b"ffffffffffffffffffff"],
    ids=["negative", "minus-zero", "junk", "plus", "0x", "underscore", "blank", "empty", "huge"],
)
def test_an_invalid_chunk_size_is_a_400_and_closes(runtime: LocalRuntime, size: bytes) -> None:
    # the connection stays open after the bad size: the old parser read to end of stream here
    raw = request_head(PREDICT, "Transfer-Encoding: chunked") + size + b"\r\n"
    status, received = exchange(runtime, raw)
    assert status == 400, received[:300]
    assert b"chunk" in received
    assert b"connection: close" in received.lower()


def test_the_body_limit_holds_for_chunked_bodies(runtime: LocalRuntime) -> None:
    chunk = b"x" * 8192
    body = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") * (LIMIT // len(chunk) + 1)
    status, received = exchange(
        runtime, request_head(PREDICT, "Transfer-Encoding: chunked") + body + b"0\r\n\r\n"
    )
    assert status == 413, received[:300]
    # one chunk announcing more than the limit is refused before any of it is read
    status, _ = exchange(
        runtime, request_head(PREDICT, "Transfer-Encoding: chunked") + f"{LIMIT + 1:x}\r\n".encode()
    )
    assert status == 413


def test_a_well_formed_chunked_body_is_served(runtime: LocalRuntime) -> None:
    half = len(ROW) // 2
    body = b"".join(
        f"{len(part):x};ext=1\r\n".encode() + part + b"\r\n" for part in (ROW[:half], ROW[half:])
    )
    raw = request_head(PREDICT, "Transfer-Encoding: chunked") + body + b"0\r\nX-T: 1\r\n\r\n"
    status, received = exchange(runtime, raw, then_wait=False)
    assert status == 200, received[:300]


@pytest.mark.parametrize(
    "tail",
    [b"5\r\nabcdeXX", b"5\r\nab", b"0\r\n" + b"X-Trailer: 1\r\n" * 200],
    ids=["no-crlf-after-data", "truncated", "endless-trailers"],
)
def test_broken_chunk_framing_is_a_400(runtime: LocalRuntime, tail: bytes) -> None:
    raw = request_head(PREDICT, "Transfer-Encoding: chunked") + tail
    with socket.create_connection(address(runtime), timeout=TIMEOUT) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)  # the truncated body ends here
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert int(received.split(b" ", 2)[1]) == 400, received[:300]


@pytest.mark.parametrize(
    "headers",
    [
        ("Content-Length: 5", "Content-Length: 6"),
        ("Content-Length: 5, 6",),
        ("Content-Length: +5",),
        ("Content-Length: 5_0",),
        ("Content-Length: -1",),
        ("Transfer-Encoding: chunked", "Content-Length: 5"),
        ("Transfer-Encoding: chunked, gzip",),
        ("Transfer-Encoding: gzip",),
    ],
    ids=[
        "two-lengths",
        "length-list",
        "plus",
        "underscore",
        "negative",
        "chunked-and-length",
        "chunked-not-last",
        "not-chunked",
    ],
)
def test_ambiguous_framing_is_a_400_and_closes(
    runtime: LocalRuntime, headers: tuple[str, ...]
) -> None:
    status, received = exchange(runtime, request_head(PREDICT, *headers) + b"abcde")
    assert status == 400, received[:300]
    assert b"connection: close" in received.lower()


def test_repeated_equal_lengths_are_one_length(runtime: LocalRuntime) -> None:
    n = len(ROW)
    raw = request_head(PREDICT, f"Content-Length: {n}", f"Content-Length: {n}") + ROW
    status, received = exchange(runtime, raw, then_wait=False)
    assert status == 200, received[:300]


def _keep_alive_p50_ms(runtime: LocalRuntime, method: str, path: str, body: bytes | None) -> float:
    connection = HTTPConnection(*address(runtime), timeout=TIMEOUT)
    times: list[float] = []
    try:
        for _ in range(25):
            started = time.perf_counter()
            connection.request(method, path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            times.append((time.perf_counter() - started) * 1e3)
    finally:
        connection.close()
    return statistics.median(times)


def test_a_kept_alive_connection_is_not_delayed(runtime: LocalRuntime) -> None:
    """Headers and body in two sends met Nagle and delayed ACK: ~40 ms per response on a
    reused connection. One write with TCP_NODELAY answers in about a millisecond."""
    for method, path, body in (("GET", "/v2/health/live", None), ("POST", PREDICT, ROW)):
        p50 = _keep_alive_p50_ms(runtime, method, path, body)
        assert p50 < 20.0, f"{method} {path}: keep-alive p50 {p50:.1f} ms"


@pytest.mark.parametrize("depth", [5_000, 20_000])
def test_deep_json_is_a_4xx_over_http_on_every_route(runtime: LocalRuntime, depth: int) -> None:
    from skyscore.serving.routes import ROUTES

    bodies = (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth)
    connection = HTTPConnection(*address(runtime), timeout=TIMEOUT)
    try:
        for route in ROUTES:
            path = route.path.replace("{name}", "tiny")
            for body in bodies:
                for method in sorted({route.method, "POST"}):
                    connection.request(method, path, body, {"Content-Type": "application/json"})
                    response = connection.getresponse()
                    response.read()
                    assert response.status < 500, (method, path, depth)
                    if route.request is not None or method != route.method:
                        assert 400 <= response.status < 500, (method, path, depth)
    finally:
        connection.close()
