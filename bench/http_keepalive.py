"""Keep-alive latency of the local HTTP server: single-row predictions on one reused
connection against a fresh connection per request, and many clients at once.

    python -m bench.http_keepalive              # trains the demo model in a temporary home
    python -m bench --only keepalive            # the same, inside the full bench's setup

A response written in two sends (headers, then body) without TCP_NODELAY waits for the client's
delayed ACK on a reused connection (Nagle): ~40 ms per request instead of ~1 ms. The row to
watch is "keep-alive vs fresh" (target: no slower than a fresh connection). Not a test: it
prints figures, it does not assert them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

TARGETS = {"keep-alive vs fresh p50": "<= 1.0x"}


def _address(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("http://").rpartition(":")
    return host, int(port)


def _one(connection: HTTPConnection, path: str, body: bytes) -> None:
    connection.request("POST", path, body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"POST {path}: {response.status}")


def _latencies_ms(url: str, path: str, body: bytes, n: int, *, reuse: bool) -> list[float]:
    address = _address(url)
    samples: list[float] = []
    connection = HTTPConnection(*address) if reuse else None
    for _ in range(n):
        started = time.perf_counter()
        if connection is None:
            fresh = HTTPConnection(*address)
            _one(fresh, path, body)
            fresh.close()
        else:
            _one(connection, path, body)
        samples.append((time.perf_counter() - started) * 1e3)
    if connection is not None:
        connection.close()
    return samples


def _throughput(url: str, path: str, body: bytes, clients: int, seconds: float) -> float:
    """Requests per second of ``clients`` threads, each on its own kept-alive connection."""
    deadline = time.perf_counter() + seconds
    counts = [0] * clients

    def client(i: int) -> None:
        connection = HTTPConnection(*_address(url))
        while time.perf_counter() < deadline:
            _one(connection, path, body)
            counts[i] += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def bench_keepalive(
    home: Path, model: str, instance: dict[str, Any], *, requests: int = 400, clients: int = 20
) -> dict[str, float]:
    """Serve ``home`` locally and print the keep-alive table; returns its figures."""
    import logging

    from skyscore.local.runtime import LocalRuntime

    body = json.dumps({"instances": [instance]}).encode()
    path = f"/v1/models/{model}/predict"
    with LocalRuntime(
        home, port=0, watch_inbox=False, retraining=False, log_to_stderr=False
    ) as runtime:
        logging.getLogger("skyscore").setLevel(logging.WARNING)  # no access log in the timings
        _latencies_ms(runtime.url, path, body, 20, reuse=True)  # warm up: model load, caches
        fresh = _latencies_ms(runtime.url, path, body, requests, reuse=False)
        reused = _latencies_ms(runtime.url, path, body, requests, reuse=True)
        rate = _throughput(runtime.url, path, body, clients, 3.0)
    figures = {
        "fresh p50": statistics.median(fresh),
        "fresh p99": _p(fresh, 99),
        "keep-alive p50": statistics.median(reused),
        "keep-alive p99": _p(reused, 99),
        "clients": clients,
        "req/s": rate,
    }
    ratio = figures["keep-alive p50"] / figures["fresh p50"]
    print("\n### HTTP keep-alive (local server, single-row predict)\n")
    print("| measure | value | target |")
    print("|---|---|---|")
    print(
        f"| fresh connection p50 / p99 | {figures['fresh p50']:.2f} / {figures['fresh p99']:.2f} ms | |"
    )
    print(
        f"| keep-alive p50 / p99 | {figures['keep-alive p50']:.2f} / "
        f"{figures['keep-alive p99']:.2f} ms | |"
    )
    print(f"| keep-alive vs fresh p50 | {ratio:.2f}x | {TARGETS['keep-alive vs fresh p50']} |")
    print(f"| {clients} kept-alive clients | {rate:,.0f} req/s | |")
    sys.stdout.flush()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_keepalive", description=__doc__)
    parser.add_argument("--requests", type=int, default=400, help="requests per latency row")
    parser.add_argument("--clients", type=int, default=20, help="concurrent kept-alive clients")
    args = parser.parse_args()
    from skyscore.local.home import LocalHome
    from skyscore.training.datasets import DEMO_ID, DEMO_TARGET, breast_cancer_frame
    from skyscore.training.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as work:
        data = Path(work) / "cancer.csv"
        frame = breast_cancer_frame()
        frame.to_csv(data, index=False)
        result = train(
            TrainConfig(
                data=str(data),
                target=DEMO_TARGET,
                name="cancer",
                estimator="logreg",
                id_column=DEMO_ID,
            )
        )
        home = LocalHome(Path(work) / "home").ensure()
        registry = home.registry()
        card = registry.register(result.card, result.onnx_bytes)
        registry.promote(card.name, card.version)
        row = frame.drop(columns=[DEMO_TARGET]).iloc[0].to_dict()
        instance = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        bench_keepalive(
            home.root, card.name, instance, requests=args.requests, clients=args.clients
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
