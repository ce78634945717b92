"""Drift over live HTTP traffic: a rolling window of recent requests per model version.

Observing a request is an append to a buffer (the hot path stays a few hundred nanoseconds
longer); every ``flush_every`` requests the buffer is counted into a :class:`RollingDrift` as one
batch, so the counting cost is paid once per many requests, off the median path. One request in
256 pays it (~0.4 ms measured here), which keeps it out of the 99th percentile as well: at one
in 64 it was 1.6 % of requests and set p99 at ~1 ms instead of ~0.1 ms.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from skyscore.model.schema import Batch
from skyscore.monitoring.drift import RollingDrift

if TYPE_CHECKING:
    from skyscore.model.predictor import Predictor

_Item = tuple[np.ndarray, np.ndarray, np.ndarray]


class _Buffer:
    """Requests of one model version waiting to be counted."""

    __slots__ = ("items", "rows")

    def __init__(self) -> None:
        self.items: list[_Item] = []
        self.rows = 0


class OnlineDrift:
    """Per ``(model, version)``: the last ``window`` flushes of ``flush_every`` requests each.

    A buffer is also counted once it holds ``flush_rows`` rows, so batch requests (up to
    10,000 instances each) cannot pile up hundreds of megabytes of arrays before a flush.
    """

    def __init__(self, *, flush_every: int = 256, window: int = 25, flush_rows: int = 8192) -> None:
        self.flush_every = flush_every
        self.flush_rows = flush_rows
        self.window = window
        self._lock = threading.Lock()
        self._buffers: dict[tuple[str, str], _Buffer] = {}
        self._rolling: dict[tuple[str, str], RollingDrift] = {}

    def observe(
        self,
        predictor: Predictor,
        numeric: np.ndarray,
        categorical: np.ndarray,
        probabilities: np.ndarray,
    ) -> None:
        """Remember one scored request; count the buffer once it is full (on every request's
        path: ~1 µs here, so it is kept to a few dictionary and list operations)."""
        key = predictor.key
        with self._lock:
            buffer = self._buffers.get(key)
            if buffer is None:
                buffer = self._buffers[key] = _Buffer()
            buffer.items.append((numeric, categorical, probabilities))
            buffer.rows += len(numeric)
            if len(buffer.items) < self.flush_every and buffer.rows < self.flush_rows:
                return
            del self._buffers[key]
        self._count(predictor, buffer.items)

    def _count(self, predictor: Predictor, items: list[_Item]) -> None:
        if not items:
            return
        numeric = np.concatenate([i[0] for i in items])
        categorical = np.concatenate([i[1] for i in items])
        probabilities = np.concatenate([i[2] for i in items])
        batch = Batch(np.arange(1, len(numeric) + 1), numeric, categorical, None)
        key = predictor.key
        with self._lock:
            rolling = self._rolling.get(key)
            if rolling is None:
                rolling = self._rolling[key] = RollingDrift(predictor.card, window=self.window)
            rolling.observe(batch, probabilities)

    def result(self, predictor: Predictor) -> dict[str, Any]:
        """The window's ``drift`` object (requests still in the buffer included)."""
        key = predictor.key
        with self._lock:
            pending = self._buffers.pop(key, None)
        self._count(predictor, pending.items if pending is not None else [])
        with self._lock:
            rolling = self._rolling.get(key)
            if rolling is None:
                rolling = self._rolling[key] = RollingDrift(predictor.card, window=self.window)
            result = rolling.result()
        result["window_requests"] = self.window * self.flush_every  # at most (see flush_rows)
        return result
