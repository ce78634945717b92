"""A bounded loopback load on an HTTP prediction route: many clients, each on its own
keep-alive connection, for a fixed time; errors, latency percentiles, throughput and the
process's resident memory over the run.

    python -m bench.load                          # the local runtime, 50 clients x 30 s
    python -m bench.load --clients 20 --seconds 10

``tests/hardening/test_load.py`` runs the same generator for ~10 s (``SKYSCORE_LOAD_CLIENTS``,
``SKYSCORE_LOAD_SECONDS`` make it longer) and asserts zero errors and flat memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from typing import Any


def rss_bytes() -> int:
    """This process's resident set (Linux ``/proc``; 0 where there is none)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class LoadResult:
    """What one run measured."""

    clients: int
    seconds: float
    requests: int = 0
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    throughput_rps: float = 0.0
    rss_after_warmup_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_growth_mb: float = 0.0

    def line(self) -> str:
        """One human line for the test log and the bench."""
        return (
            f"{self.clients} clients x {self.seconds:.0f} s: {self.requests:,} requests, "
            f"{self.errors} errors, p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms, "
            f"max {self.max_ms:.1f} ms, {self.throughput_rps:,.0f} req/s, RSS "
            f"{self.rss_after_warmup_mb:.1f} -> {self.rss_end_mb:.1f} MB "
            f"({self.rss_growth_mb:+.1f} MB after warm-up)"
        )


def _percentile(samples: list[float], q: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_load(
    url: str,
    path: str,
    body: bytes,
    *,
    clients: int = 50,
    seconds: float = 30.0,
    warmup_seconds: float = 2.0,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """``clients`` threads POST ``body`` to ``url + path`` on keep-alive connections for
    ``warmup_seconds`` (not counted), then ``seconds``. A response other than 200, a broken
    connection or a timeout is an error (the client reconnects and goes on)."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    send = {"Content-Type": "application/json", **(headers or {})}
    result = LoadResult(clients, seconds)
    lock = threading.Lock()
    latencies: list[list[float]] = [[] for _ in range(clients)]
    start = time.monotonic()
    measure_from = start + warmup_seconds
    stop_at = measure_from + seconds

    def client(index: int) -> None:
        connection = HTTPConnection(host, int(port), timeout=30)
        mine = latencies[index]
        while (now := time.monotonic()) < stop_at:
            try:
                connection.request("POST", path, body, send)
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
                why = f"HTTP {response.status}"
            except (OSError, ValueError) as error:
                ok, why = False, f"{type(error).__name__}: {error}"
                connection.close()
                connection = HTTPConnection(host, int(port), timeout=30)
            if now < measure_from:
                continue
            if ok:
                mine.append((time.monotonic() - now) * 1e3)
            else:
                with lock:
                    result.errors += 1
                    if len(result.first_errors) < 5:
                        result.first_errors.append(why)
        connection.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, measure_from - time.monotonic()))
    rss_start = rss_bytes()
    for thread in threads:
        thread.join(seconds + warmup_seconds + 60)
    rss_end = rss_bytes()
    samples = [x for mine in latencies for x in mine]
    result.requests = len(samples) + result.errors
    result.p50_ms = round(statistics.median(samples), 3) if samples else 0.0
    result.p99_ms = round(_percentile(samples, 0.99), 3)
    result.max_ms = round(max(samples, default=0.0), 3)
    result.throughput_rps = round(len(samples) / seconds, 1)
    result.rss_after_warmup_mb = round(rss_start / 2**20, 1)
    result.rss_end_mb = round(rss_end / 2**20, 1)
    result.rss_growth_mb = round((rss_end - rss_start) / 2**20, 1)
    return result


def demo_body(rows: int = 1) -> bytes:
    """A predict request with ``rows`` rows of the demo table."""
    from skyscore.training.datasets import DEMO_TARGET, breast_cancer_frame

    frame = breast_cancer_frame().drop(columns=[DEMO_TARGET]).head(rows)
    instances: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    return json.dumps({"instances": instances}).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    args = parser.parse_args()

    from skyscore.local.runtime import LocalRuntime
    from skyscore.model.registry import ModelRegistry
    from skyscore.training.datasets import DEMO_ID, DEMO_TARGET, breast_cancer_frame
    from skyscore.training.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "cancer.csv"
        breast_cancer_frame().to_csv(data, index=False)
        model = train(
            TrainConfig(data=str(data), target=DEMO_TARGET, name="cancer", id_column=DEMO_ID)
        )
        from skyscore.adapters.local import LocalBlobStore

        home = Path(tmp) / "home"
        registry = ModelRegistry(LocalBlobStore(home))
        card = registry.register(model.card, model.onnx_bytes)
        registry.promote("cancer", card.version)
        with LocalRuntime(
            home, port=0, registry=registry, log_to_stderr=False, watch_inbox=False
        ) as runtime:
            result = run_load(
                runtime.url,
                "/v1/models/cancer/predict",
                demo_body(args.rows),
                clients=args.clients,
                seconds=args.seconds,
            )
    print(result.line())
    print(json.dumps(asdict(result)))
    return 0 if result.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
