"""The gcloud Pub/Sub emulator for the GCP tests: ``gcloud beta emulators pubsub start`` on a free
port of 127.0.0.1, once per session, used with the real google-cloud-pubsub clients
(``PUBSUB_EMULATOR_HOST``). Push subscriptions deliver to functions-framework servers, so the
chain storage notification → topic → push → function runs on real parts.

gcloud starts the emulator as a java child process; stopping is by those pids (the child's,
then gcloud's). A missing gcloud or emulator component fails under ``CI=true`` and skips
elsewhere.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fake_gcs import PROJECT, free_port, wait_for_port
from needs import missing


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc), deepest last."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                out.append(int(child))
                out.extend(_children(int(child)))
    return out


def _stop(process: subprocess.Popen[bytes]) -> None:
    for pid in reversed(_children(process.pid)):  # the java emulator first
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@dataclass(frozen=True)
class PubSubEmulator:
    """A running emulator and helpers that create what a test needs on it."""

    port: int
    project: str = PROJECT

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def environment(self) -> dict[str, str]:
        """What points google-cloud-pubsub (in another process) at the emulator."""
        return {"PUBSUB_EMULATOR_HOST": self.host}

    def publisher(self) -> Any:
        from google.cloud import pubsub_v1

        with _emulator_env(self.host):
            return pubsub_v1.PublisherClient()

    def subscriber(self) -> Any:
        from google.cloud import pubsub_v1

        with _emulator_env(self.host):
            return pubsub_v1.SubscriberClient()

    def topic_path(self, name: str) -> str:
        return f"projects/{self.project}/topics/{name}"

    def subscription_path(self, name: str) -> str:
        return f"projects/{self.project}/subscriptions/{name}"

    def new_topic(self, stem: str = "skyscore") -> str:
        """A fresh topic; returns its short name."""
        name = f"{stem}-{uuid.uuid4().hex[:10]}"
        self.publisher().create_topic(request={"name": self.topic_path(name)})
        return name

    def new_subscription(
        self,
        topic: str,
        *,
        push_endpoint: str = "",
        dead_letter_topic: str = "",
        max_delivery_attempts: int = 5,
        ack_deadline_seconds: int = 10,
    ) -> str:
        """A pull (or push) subscription on ``topic``, with a dead-letter policy when asked."""
        name = f"{topic}-sub-{uuid.uuid4().hex[:6]}"
        request: dict[str, Any] = {
            "name": self.subscription_path(name),
            "topic": self.topic_path(topic),
            "ack_deadline_seconds": ack_deadline_seconds,
        }
        if push_endpoint:
            request["push_config"] = {"push_endpoint": push_endpoint}
        if dead_letter_topic:
            request["dead_letter_policy"] = {
                "dead_letter_topic": self.topic_path(dead_letter_topic),
                "max_delivery_attempts": max_delivery_attempts,
            }
        self.subscriber().create_subscription(request=request)
        return name

    def delete_subscription(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self.subscriber().delete_subscription(
                request={"subscription": self.subscription_path(name)}
            )


@contextlib.contextmanager
def _emulator_env(host: str) -> Iterator[None]:
    """``PUBSUB_EMULATOR_HOST`` while a client is built (the client reads it once)."""
    old = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = host
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = old


@contextlib.contextmanager
def pubsub_emulator_process(project: str = PROJECT) -> Iterator[PubSubEmulator]:
    """The emulator on a free port with a fresh data directory."""
    gcloud = os.environ.get("SKYSCORE_GCLOUD") or shutil.which("gcloud")
    if gcloud is None:
        missing("the Pub/Sub emulator needs gcloud with the pubsub-emulator component")
    assert gcloud is not None
    port = free_port()
    with tempfile.TemporaryDirectory() as data, tempfile.TemporaryFile() as log:
        command = [
            gcloud,
            *("beta", "emulators", "pubsub", "start"),
            f"--host-port=127.0.0.1:{port}",
            f"--project={project}",
            f"--data-dir={data}",
            "--quiet",
        ]
        env = {**os.environ, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env
        )
        try:
            try:
                wait_for_port(port, process, "the Pub/Sub emulator", 60)
            except (RuntimeError, TimeoutError) as error:
                log.seek(0)
                missing(f"the Pub/Sub emulator did not start: {error}\n{log.read()[-2000:]!r}")
            yield PubSubEmulator(port, project)
        finally:
            _stop(process)


_shared: list[PubSubEmulator] = []
_shared_lock = threading.Lock()
_stack = contextlib.ExitStack()


def shared_pubsub() -> PubSubEmulator:
    """The session's emulator, started on first use and stopped when the process exits."""
    with _shared_lock:
        if not _shared:
            _shared.append(_stack.enter_context(pubsub_emulator_process()))
            atexit.register(_stack.close)
        return _shared[0]


@pytest.fixture(scope="session")
def pubsub_emulator() -> PubSubEmulator:
    """The session's Pub/Sub emulator."""
    return shared_pubsub()


@pytest.fixture
def pubsub_queue() -> Iterator[Any]:
    """A ``PubSubQueue`` on a fresh topic and pull subscription whose dead-letter policy
    (``max_delivery_attempts``, Pub/Sub's minimum of 5) counts deliveries; the port's own
    dead-letter step moves a message after 2 receives to a fresh dead-letter topic."""
    from skyscore.adapters.gcp import PubSubQueue

    emulator = shared_pubsub()
    topic = emulator.new_topic("work")
    dead_topic = emulator.new_topic("dead")
    subscription = emulator.new_subscription(topic, dead_letter_topic=dead_topic)
    dead_subscription = emulator.new_subscription(dead_topic)
    dead = PubSubQueue(
        dead_topic,
        project=emulator.project,
        subscription=dead_subscription,
        publisher=emulator.publisher(),
        subscriber=emulator.subscriber(),
    )
    yield PubSubQueue(
        topic,
        project=emulator.project,
        subscription=subscription,
        max_receives=2,
        dead_letter=dead,
        publisher=emulator.publisher(),
        subscriber=emulator.subscriber(),
    )
    emulator.delete_subscription(subscription)
    emulator.delete_subscription(dead_subscription)
