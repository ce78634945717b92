"""Load is held (issue 18.5): the local runtime's HTTP server on 127.0.0.1 under a bounded
loopback load — ``SKYSCORE_LOAD_CLIENTS`` clients (default 20), each on its own keep-alive
connection, for ``SKYSCORE_LOAD_SECONDS`` (default 8) after a 2 s warm-up — answers every
request (zero errors) and its memory stays flat (resident set growth under 20 MB after the
warm-up). p50, p99 and throughput are printed (``pytest -s``) and kept in the test report.

For a longer run: ``SKYSCORE_LOAD_CLIENTS=50 SKYSCORE_LOAD_SECONDS=30 pytest
tests/hardening/test_load.py -s``, or ``python -m bench.load``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.load import demo_body, run_load

from skyscore.training.train import TrainResult

CLIENTS = int(os.environ.get("SKYSCORE_LOAD_CLIENTS", "20"))
SECONDS = float(os.environ.get("SKYSCORE_LOAD_SECONDS", "8"))
MAX_RSS_GROWTH_MB = 20.0


@pytest.fixture
def quiet_request_log() -> Iterator[None]:
    """pytest keeps every captured log record in memory, which would be the growth measured
    here: the per-request INFO lines are left out for the run (warnings and errors stay)."""
    logger = logging.getLogger("skyscore")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


def test_local_server_holds_a_bounded_load(
    demo_model: TrainResult,
    tmp_path: Path,
    quiet_request_log: None,
    record_property: pytest.RecordProperty,
) -> None:
    from skyscore.adapters.local import LocalBlobStore
    from skyscore.local.runtime import LocalRuntime
    from skyscore.model.registry import ModelRegistry

    home = tmp_path / "home"
    registry = ModelRegistry(LocalBlobStore(home))
    card = registry.register(demo_model.card, demo_model.onnx_bytes, name="cancer")
    registry.promote("cancer", card.version)
    with LocalRuntime(
        home, port=0, registry=registry, log_to_stderr=False, watch_inbox=False
    ) as runtime:
        result = run_load(
            runtime.url,
            "/v1/models/cancer/predict",
            demo_body(),
            clients=CLIENTS,
            seconds=SECONDS,
        )
    print(result.line())
    record_property("load", json.dumps(result.__dict__))
    assert result.errors == 0, result.first_errors
    assert result.requests > CLIENTS * SECONDS, result.line()  # it really ran
    assert result.rss_growth_mb < MAX_RSS_GROWTH_MB, result.line()
