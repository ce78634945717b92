"""The queue contract: at-least-once delivery, acknowledgement, release and dead letters."""

from __future__ import annotations

import time

from skyscore.ports import QueuePort


def _receive_all(queue: QueuePort, want: int, visibility: float = 30.0) -> list:  # type: ignore[type-arg]
    deadline = time.monotonic() + 20
    got: list = []  # type: ignore[type-arg]
    while len(got) < want and time.monotonic() < deadline:
        got.extend(queue.receive(10, visibility))
        if len(got) < want:
            time.sleep(0.2)
    return got


def test_send_receive_ack(queue_port: QueuePort) -> None:
    ids = {queue_port.send(f"message {i}".encode(), {"n": str(i)}) for i in range(3)}
    assert len(ids) == 3
    got = _receive_all(queue_port, 3)
    assert sorted(m.body for m in got) == [b"message 0", b"message 1", b"message 2"]
    assert {m.attributes.get("n") for m in got} == {"0", "1", "2"}
    for message in got:
        queue_port.ack(message)
    assert queue_port.receive(10, 1.0) == []


def test_released_messages_come_back_then_dead_letter(queue_port: QueuePort) -> None:
    queue_port.send(b"poison")
    for attempt in range(1, 3):
        [message] = _receive_all(queue_port, 1, visibility=30.0)
        assert message.body == b"poison" and message.receive_count == attempt
        queue_port.release(message)
    # a third receive exceeds max_receives=2: the base class moves it to the dead-letter queue
    assert queue_port.receive(10, 30.0) == []
    assert queue_port.dead_letter is not None
    [dead] = _receive_all(queue_port.dead_letter, 1)
    assert dead.body == b"poison"
