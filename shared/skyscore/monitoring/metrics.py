"""Metrics: one small interface, written as structured log lines (no network on the hot path).

The clouds turn the lines into metrics: CloudWatch reads the Embedded Metric Format (EMF) that
:class:`LogMetrics` writes by default; Azure Monitor and Cloud Monitoring extract log-based
metrics from the same JSON lines (``format="json"``). :class:`InMemoryMetrics` is for tests.
Every metric carries the model name and version as dimensions.
"""

from __future__ import annotations

import abc
import json
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import IO, Literal

NAMESPACE = "skyscore"
MAX_VALUES_PER_METRIC = 100  # EMF accepts at most 100 values per metric per line


@dataclass(slots=True)
class _Series:
    unit: str
    values: list[float] = field(default_factory=list)


class Metrics(abc.ABC):
    """Counts, latency histograms and gauges (drift scores), buffered until :meth:`flush`."""

    def __init__(self, **dimensions: str) -> None:
        self.dimensions = {k: str(v) for k, v in dimensions.items()}
        self._lock = threading.Lock()
        self._series: dict[tuple[tuple[tuple[str, str], ...], str], _Series] = {}

    def _record(self, name: str, value: float, unit: str, dimensions: dict[str, str]) -> None:
        dims = tuple(sorted({**self.dimensions, **dimensions}.items()))
        with self._lock:
            series = self._series.setdefault((dims, name), _Series(unit))
            series.values.append(float(value))
            full = len(series.values) >= MAX_VALUES_PER_METRIC
        if full:
            self.flush()

    def count(self, name: str, value: float = 1, **dimensions: str) -> None:
        """Add to a counter (rows scored, rows failed, requests, errors)."""
        self._record(name, value, "Count", dimensions)

    def latency(self, name: str, seconds: float, **dimensions: str) -> None:
        """One latency observation, recorded in milliseconds (a histogram downstream)."""
        self._record(name, seconds * 1000.0, "Milliseconds", dimensions)

    def gauge(self, name: str, value: float, **dimensions: str) -> None:
        """A level (drift PSI, missing rate)."""
        self._record(name, value, "None", dimensions)

    def flush(self) -> None:
        """Emit everything buffered, one record per dimension set."""
        with self._lock:
            series, self._series = self._series, {}
        grouped: dict[tuple[tuple[str, str], ...], dict[str, _Series]] = defaultdict(dict)
        for (dims, name), values in series.items():
            grouped[dims][name] = values
        for dims, metrics in grouped.items():
            self._emit(dict(dims), metrics)

    @abc.abstractmethod
    def _emit(self, dimensions: dict[str, str], metrics: dict[str, _Series]) -> None:
        """Write one record."""


class LogMetrics(Metrics):
    """Structured log lines: EMF for CloudWatch, plain JSON for log-based metrics elsewhere."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        namespace: str = NAMESPACE,
        format: Literal["emf", "json"] = "emf",
        **dimensions: str,
    ) -> None:
        super().__init__(**dimensions)
        self.stream = stream or sys.stdout
        self.namespace = namespace
        self.format = format

    def _emit(self, dimensions: dict[str, str], metrics: dict[str, _Series]) -> None:
        record: dict[str, object] = dict(dimensions)
        for name, series in metrics.items():
            record[name] = series.values[0] if len(series.values) == 1 else series.values
        if self.format == "emf":
            record["_aws"] = {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": self.namespace,
                        "Dimensions": [sorted(dimensions)],
                        "Metrics": [{"Name": n, "Unit": s.unit} for n, s in metrics.items()],
                    }
                ],
            }
        else:
            record = {"type": "metric", "namespace": self.namespace, **record}
        self.stream.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.stream.flush()


class InMemoryMetrics(Metrics):
    """Keeps every emitted record (for tests and the local runtime's reports)."""

    def __init__(self, **dimensions: str) -> None:
        super().__init__(**dimensions)
        self.records: list[tuple[dict[str, str], dict[str, list[float]]]] = []

    def _emit(self, dimensions: dict[str, str], metrics: dict[str, _Series]) -> None:
        self.records.append((dimensions, {n: list(s.values) for n, s in metrics.items()}))

    def values(self, name: str, **dimensions: str) -> list[float]:
        """Every value emitted for ``name`` whose dimensions include ``dimensions``."""
        self.flush()
        out: list[float] = []
        for dims, metrics in self.records:
            if name in metrics and all(dims.get(k) == v for k, v in dimensions.items()):
                out.extend(metrics[name])
        return out


class NullMetrics(Metrics):
    """Discards everything."""

    def _emit(self, dimensions: dict[str, str], metrics: dict[str, _Series]) -> None:
        return None
