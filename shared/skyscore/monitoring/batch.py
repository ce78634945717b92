"""Monitoring of scored batches: drift into the manifest, numbers out as metrics, alarms to the
retraining loop. One place, so that the CLI, the local runtime and every cloud handler report a
batch the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyscore.monitoring.drift import PSI_ALARM, DriftAccumulator

if TYPE_CHECKING:
    from skyscore.batch.pipeline import Observer, ScoreReport
    from skyscore.model.predictor import Predictor
    from skyscore.monitoring.metrics import Metrics

DriftAlarm = Callable[[str, Mapping[str, Any]], object]


def publish_batch(metrics: Metrics, report: ScoreReport, drift: Mapping[str, Any] | None) -> None:
    """Counts, latency and drift scores of one batch, with the model version as a dimension."""
    dims = {"model": str(report.model_name), "version": str(report.model_version)}
    metrics.count("rows_scored", report.rows_scored, **dims)
    metrics.count("rows_failed", report.rows_failed, **dims)
    metrics.count("batches", 1, **dims)
    metrics.latency("batch_latency", report.total_seconds, **dims)
    if report.rows_read:
        metrics.gauge("row_error_rate", report.rows_failed / report.rows_read, **dims)
    if drift is not None and drift.get("rows"):
        metrics.gauge("max_psi", float(drift["max_psi"]), **dims)
        metrics.gauge("prediction_psi", float(drift["prediction_psi"]), **dims)
        metrics.gauge("missing_rate", float(drift["missing_rate"]), **dims)
        metrics.gauge("out_of_range_rate", float(drift["out_of_range_rate"]), **dims)
    metrics.flush()


def drift_alarm(drift: Mapping[str, Any] | None, threshold: float = PSI_ALARM) -> str | None:
    """Which alarm a batch's drift raises: ``prediction_drift``, ``drift`` or none."""
    if not drift or not drift.get("rows"):
        return None
    if float(drift["prediction_psi"]) >= threshold:
        return "prediction_drift"
    if float(drift["max_psi"]) >= threshold:
        return "drift"
    return None


def score_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    predictor: Predictor,
    *,
    metrics: Metrics | None = None,
    observers: Sequence[Observer] = (),
    report_html: bool = False,
) -> tuple[ScoreReport, dict[str, Any]]:
    """Score a file with drift monitoring: the manifest gets a ``drift`` object, metrics are
    published, and with ``report_html`` an HTML report is written beside the manifest."""
    from skyscore.batch.pipeline import score_path

    accumulator = DriftAccumulator(predictor.card)
    report = score_path(
        input_path,
        output_path,
        predictor,
        observers=[accumulator, *observers],
        manifest_extra=lambda _: {"drift": accumulator.result()},
    )
    drift = accumulator.result()
    if metrics is not None:
        publish_batch(metrics, report, drift)
    if report_html:
        write_batch_report(Path(output_path), predictor)
    return report, drift


def write_batch_report(output_path: Path, predictor: Predictor) -> Path:
    """``OUTPUT.report.html`` from ``OUTPUT.manifest.json``."""
    import json

    from skyscore.monitoring.report import batch_report_html, write_report

    manifest = json.loads(output_path.with_name(output_path.name + ".manifest.json").read_text())
    return write_report(
        output_path.with_name(output_path.name + ".report.html"),
        batch_report_html(manifest, predictor.card),
    )
