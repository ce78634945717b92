"""Helpers of the Azure function tests: the registered functions (introspected once), the
context the worker passes, the events the platform sends for a blob, and one test's app."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func

from azurite import AzureMLFake, Azurite, blob_created_event, blob_input_stream
from skyscore.adapters.azure import AzureBlobStore, AzureQueue
from skyscore.model.registry import ModelRegistry

ROOT = Path(__file__).resolve().parents[3]
APP_DIR = ROOT / "functions" / "azure"
REFERENCE_EVENTS = ROOT / "tests" / "reference-events" / "azure"
HOST_JSON = json.loads((APP_DIR / "host.json").read_text())
MAX_DEQUEUE = int(HOST_JSON["extensions"]["queues"]["maxDequeueCount"])
DRIFT_RULE = "skyscore-drift"
ERROR_RULE = "skyscore-error-rate"


def functions() -> dict[str, Any]:
    """The app's registered functions by name (one cache per session, in tests/azurite.py)."""
    from azurite import app_functions

    return app_functions()


def call(name: str, *args: Any, **kwargs: Any) -> Any:
    """Invoke a function's user code, as the worker does."""
    return functions()[name].get_user_function()(*args, **kwargs)


def reference_event(name: str) -> Any:
    """A verbatim public payload from ``tests/reference-events/azure``."""
    return json.loads((REFERENCE_EVENTS / name).read_text())


class FunctionContext(func.Context):
    """What the worker passes as ``context``, with this test's invocation id."""

    def __init__(self, invocation_id: str | None = None, function_name: str = "test") -> None:
        self._invocation_id = invocation_id or str(uuid.uuid4())
        self._function_name = function_name

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return str(APP_DIR)

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None

    @property
    def thread_local_storage(self) -> Any:
        return None


def queue_message(message: Any) -> Any:
    """What the worker hands a queue-triggered function for a received message (the host has
    already decoded the base64)."""
    from azure.functions.queue import QueueMessage

    return QueueMessage(
        id=message.id,
        body=message.body,
        dequeue_count=message.receive_count,
        pop_receipt=message.receipt,
    )


@dataclass
class AzureApp:
    """One test's storage and Azure ML workspace, as the app's settings name them."""

    azurite: Azurite
    container: str
    queue_name: str
    store: AzureBlobStore
    queue: AzureQueue
    ml: AzureMLFake

    def registry(self) -> ModelRegistry:
        """A registry over the container, re-reading aliases on every call."""
        return ModelRegistry(self.store, refresh_seconds=0)

    def blob_event(self, key: str, *, etag: str | None = None, event_id: str | None = None) -> Any:
        """The Event Grid ``BlobCreated`` event the storage account publishes for ``key``."""
        return blob_created_event(self.store, self.container, key, etag=etag, event_id=event_id)

    def input_stream(self, key: str) -> Any:
        """What the blob trigger hands over for ``key``."""
        return blob_input_stream(self.store, self.container, key)
