"""Fixtures for the Azure functions: Azurite storage (a fresh container and work queue per test),
the Azure ML fake with its managed-identity endpoint, the app's settings, and a registered
model. The functions are called as the Functions host calls them, with the real azure-functions
types; there is no local host (Core Tools cannot be installed here)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azfunc import DRIFT_RULE, ERROR_RULE, MAX_DEQUEUE, AzureApp

from azurite import AzureMLFake, azureml_fake, shared_azurite
from skyscore.adapters.azure import AzureBlobStore, AzureQueue
from skyscore.model.registry import ModelRegistry
from skyscore.training.train import TrainResult


@pytest.fixture(autouse=True)
def _reset_cores() -> Iterator[None]:
    from skyscore.runtime.wiring import reset_cores

    reset_cores()
    yield
    reset_cores()


@pytest.fixture
def ml() -> Iterator[AzureMLFake]:
    with azureml_fake() as fake:
        yield fake


@pytest.fixture
def azure_app(ml: AzureMLFake, monkeypatch: pytest.MonkeyPatch) -> Iterator[AzureApp]:
    """A fresh container and work queue on Azurite, and the app settings that name them."""
    server = shared_azurite()
    container = server.new_container()
    queue_name = server.new_queue()
    settings = {
        "SKYSCORE_STORAGE": server.connection_string,
        "SKYSCORE_CONTAINER": container,
        "SKYSCORE_QUEUE": queue_name,
        "SKYSCORE_QUEUE_MAX_DEQUEUE": str(MAX_DEQUEUE),
        "SKYSCORE_MODEL": "cancer",
        "SKYSCORE_REFRESH_SECONDS": "0",
        "SKYSCORE_RETRAIN_MODELS": "cancer",
        "SKYSCORE_RETRAIN_ALARMS": f"{DRIFT_RULE}=drift,{ERROR_RULE}=error_rate",
        **ml.app_settings(),
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    for name in ("SKYSCORE_PREFIX", "SKYSCORE_FANOUT_BYTES", "SKYSCORE_PART_BYTES"):
        monkeypatch.delenv(name, raising=False)
    store = AzureBlobStore(container, connection_string=server.connection_string)
    queue = AzureQueue(
        queue_name, connection_string=server.connection_string, max_receives=MAX_DEQUEUE
    )
    yield AzureApp(server, container, queue_name, store, queue, ml)
    server.blob_service().delete_container(container)
    for name in (queue_name, f"{queue_name}-poison"):
        server.queue_service().delete_queue(name)


@pytest.fixture
def cancer(azure_app: AzureApp, demo_model: TrainResult) -> ModelRegistry:
    """The demo model registered in the container as ``cancer``, in production."""
    registry = azure_app.registry()
    card = registry.register(demo_model.card, demo_model.onnx_bytes, name="cancer")
    registry.promote("cancer", card.version)
    return registry
