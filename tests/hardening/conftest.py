"""Fixtures of the hardening tests: one moto server for the module's AWS cases, the session's
Azurite, and a fresh core (the handlers build one per process from the environment)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _fresh_cores() -> Iterator[None]:
    from skyscore.runtime.wiring import reset_cores

    reset_cores()
    yield
    reset_cores()


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A moto server of this module's own on a free port of 127.0.0.1."""
    from aws_moto import moto_server

    with moto_server() as url:
        yield url


@pytest.fixture(scope="session")
def azurite_connection() -> str:
    """The session's Azurite (started on first use)."""
    from azurite import shared_azurite

    return shared_azurite().connection_string


# --------------------------------------------------------------------------------------------
# Google Cloud: the function tests' helpers (tests/functions/gcp/gcpfunc.py), a plain
# fake-gcs-server and the Pub/Sub emulator of the session, one deployment per test
# --------------------------------------------------------------------------------------------

_GCP_TESTS = str(Path(__file__).resolve().parents[1] / "functions" / "gcp")
if _GCP_TESTS not in sys.path:
    sys.path.insert(0, _GCP_TESTS)


@pytest.fixture
def gcp_deployment(demo_model: Any) -> Iterator[Any]:
    """A fresh bucket with the demo model in production, work and dead-letter topics, a
    Vertex AI fake whose metadata-server token is long and random, and the functions'
    environment naming them (a ``GcpApp``; its servers are stopped when the test ends)."""
    import secrets

    from gcpfunc import GcpApp, function_env, vertex_fake

    from fake_gcs import shared_fake_gcs
    from pubsub_emulator import shared_pubsub

    gcs, pubsub = shared_fake_gcs(), shared_pubsub()
    with vertex_fake() as vertex:
        vertex.token = "ya29.c." + secrets.token_urlsafe(64)
        bucket = gcs.new_bucket("hardening")
        work, dead = pubsub.new_topic("work"), pubsub.new_topic("work-dead")
        env = function_env(
            gcs, pubsub, vertex, bucket, SKYSCORE_TOPIC=work, SKYSCORE_DEAD_LETTER_TOPIC=dead
        )
        app = GcpApp(gcs, pubsub, bucket, gcs.store(bucket), work, dead, vertex, env)
        registry = app.registry()
        card = registry.register(demo_model.card, demo_model.onnx_bytes, name="cancer")
        registry.promote("cancer", card.version)
        try:
            yield app
        finally:
            app.stop()
