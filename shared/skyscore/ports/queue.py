"""The queue port: at-least-once delivery with acknowledgement and a dead-letter policy."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Message:
    """One queue message as received: ``receipt`` acknowledges this delivery only."""

    id: str
    body: bytes
    receipt: str
    receive_count: int = 1
    attributes: dict[str, str] = field(default_factory=dict)


class QueuePort(abc.ABC):
    """At-least-once queue: receive, then ack; unacked messages come back after a timeout.

    The base class holds the dead-letter policy: a message received more than
    ``max_receives`` times is moved to the dead-letter queue instead of being returned.
    """

    def __init__(self, *, max_receives: int = 5, dead_letter: QueuePort | None = None) -> None:
        self.max_receives = max_receives
        self.dead_letter = dead_letter

    @abc.abstractmethod
    def send(self, body: bytes, attributes: dict[str, str] | None = None) -> str:
        """Enqueue; returns the message id."""

    @abc.abstractmethod
    def _receive(self, max_messages: int, visibility_timeout: float) -> list[Message]:
        """Backend primitive: take up to ``max_messages`` visible messages, hiding them."""

    @abc.abstractmethod
    def ack(self, message: Message) -> None:
        """Delete a received message: it was handled."""

    @abc.abstractmethod
    def release(self, message: Message) -> None:
        """Make a received message visible again now: it failed and may be retried."""

    def receive(self, max_messages: int = 10, visibility_timeout: float = 30.0) -> list[Message]:
        """Visible messages; poison ones (too many receives) go to the dead-letter queue."""
        out: list[Message] = []
        for message in self._receive(max_messages, visibility_timeout):
            if message.receive_count > self.max_receives and self.dead_letter is not None:
                self.dead_letter.send(message.body, dict(message.attributes))
                self.ack(message)
                continue
            out.append(message)
        return out
