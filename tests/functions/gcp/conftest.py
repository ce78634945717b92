"""Fixtures for the Cloud Run functions: the Pub/Sub emulator and a fake-gcs-server that
publishes real storage notifications to it (once per session), a fresh bucket, work and
dead-letter topics and a Vertex AI fake per test, and the demo model registered in the bucket.
Every function runs in a functions-framework server of its own, started with the test's
environment (settings are read once per process, as on the platform)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gcpfunc import GcpApp, GcpCloud, VertexFake, function_env, vertex_fake

from fake_gcs import fake_gcs_process
from pubsub_emulator import shared_pubsub
from skyscore.model.registry import ModelRegistry
from skyscore.training.train import TrainResult

NOTIFIED_PREFIX = "incoming/"


@pytest.fixture(scope="session")
def gcp_cloud() -> Iterator[GcpCloud]:
    pubsub = shared_pubsub()
    topic = pubsub.new_topic("gcs-notifications")
    with fake_gcs_process(
        pubsub_project=pubsub.project,
        pubsub_topic=topic,
        pubsub_host=pubsub.host,
        prefix=NOTIFIED_PREFIX,
    ) as gcs:
        yield GcpCloud(pubsub, gcs, topic)


@pytest.fixture
def vertex() -> Iterator[VertexFake]:
    with vertex_fake() as fake:
        yield fake


@pytest.fixture
def gcp_app(gcp_cloud: GcpCloud, vertex: VertexFake) -> Iterator[GcpApp]:
    """A fresh bucket and work/dead-letter topics, and the environment that names them."""
    gcs, pubsub = gcp_cloud.gcs, gcp_cloud.pubsub
    bucket = gcs.new_bucket()
    work, dead = pubsub.new_topic("work"), pubsub.new_topic("work-dead")
    env = function_env(
        gcs, pubsub, vertex, bucket, SKYSCORE_TOPIC=work, SKYSCORE_DEAD_LETTER_TOPIC=dead
    )
    app = GcpApp(gcs, pubsub, bucket, gcs.store(bucket), work, dead, vertex, env)
    yield app
    app.stop()


@pytest.fixture
def cancer(gcp_app: GcpApp, demo_model: TrainResult) -> ModelRegistry:
    """The demo model registered in the bucket as ``cancer``, in production."""
    registry = gcp_app.registry()
    card = registry.register(demo_model.card, demo_model.onnx_bytes, name="cancer")
    registry.promote("cancer", card.version)
    return registry
