"""Self-contained HTML reports: a scored batch's drift, and a promotion decision.

One file each, no external assets, no JavaScript: a report is attached to a run's outputs or
mailed around and must open anywhere, offline, years later. Charts are inline SVG drawn here
(numpy + stdlib only, so this works where models are served); every piece of text that came
from data (feature names, categories, paths, reasons) goes through :func:`html.escape`.
"""

from __future__ import annotations

import html
import itertools
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skyscore.clock import iso, utc
from skyscore.model.card import CategoricalBaseline, Feature, ModelCard, NumericBaseline

# Same thresholds as skyscore.monitoring.drift (not imported: keep this module free of the inference path).
PSI_WARN = 0.1
PSI_ALARM = 0.25
UNSEEN = "__unseen__"

BASELINE_COLOUR = "#9aa5b1"
CURRENT_COLOUR = "#2563eb"
CANDIDATE_COLOUR = "#2563eb"
STATUS_COLOURS = {  # (text, background)
    "ok": ("#166534", "#dcfce7"),
    "warn": ("#9a3412", "#ffedd5"),
    "drift": ("#991b1b", "#fee2e2"),
    "unknown": ("#374151", "#e5e7eb"),
}
# Metrics where a smaller value is better; everything else is "higher is better".
_LOWER_IS_BETTER = ("loss", "error", "mse", "mae", "rmse", "brier")
# Decision keys that may carry schema-compatibility notes (a string or a list of strings).
_SCHEMA_KEYS = ("schema", "schema_notes", "schema_problems", "schema_changes")

_CSS = """
*{box-sizing:border-box}
body{font-family:-apple-system,"Segoe UI","Liberation Sans","DejaVu Sans",Arial,sans-serif;
margin:0;padding:24px 32px;color:#111827;background:#f9fafb;font-size:14px;line-height:1.4}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px}
h3{font-size:14px;margin:0 0 4px;word-break:break-all}
.sub{color:#4b5563;margin:0 0 16px}
table{border-collapse:collapse;background:#fff;border:1px solid #e5e7eb}
th,td{padding:5px 10px;border-bottom:1px solid #e5e7eb;text-align:left;vertical-align:top}
th{background:#f3f4f6;font-weight:600}td.num,th.num{text-align:right;
font-variant-numeric:tabular-nums}
.kv th{width:130px}.row{display:flex;gap:20px;align-items:flex-start;flex-wrap:wrap}
table.compact td,table.compact th{padding:2px 8px}table.compact td svg{vertical-align:middle}.kv td{word-break:break-all}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:14px}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:6px;padding:10px 12px}
.meta{color:#4b5563;font-size:12px;margin:0 0 4px}
.legend span{display:inline-block;margin-right:14px;font-size:12px;color:#374151}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:-1px}
.note{background:#fff;border-left:4px solid #9ca3af;padding:8px 12px;margin:8px 0}
.verdict{font-size:20px;font-weight:700;padding:10px 16px;border-radius:6px;margin:10px 0}
.better{color:#166534}.worse{color:#991b1b}
svg text{font-family:inherit}.card svg{max-width:100%;height:auto}
"""


# --------------------------------------------------------------------------------------------
# small helpers


def _e(value: object) -> str:
    """Escape anything for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def _num(value: object) -> float | None:
    """A finite float, or ``None`` for anything else (manifests are read leniently)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def _fmt(value: object, digits: int = 3) -> str:
    """Fixed-point number, an em dash for missing/non-numbers."""
    number = _num(value)
    return "—" if number is None else f"{number:.{digits}f}"


def _pct(value: object) -> str:
    """A share as a percentage."""
    number = _num(value)
    return "—" if number is None else f"{100.0 * number:.1f}%"


def _count(value: object) -> str:
    """An integer with thousands separators, or the value as text."""
    number = _num(value)
    if number is None:
        return "—" if value is None else _e(value)
    return f"{int(number):,}" if number.is_integer() else f"{number:,.2f}"


def _level(psi: float | None) -> str:
    """``ok``/``warn``/``drift`` as in :func:`skyscore.monitoring.drift.level`; ``unknown`` if no PSI."""
    if psi is None:
        return "unknown"
    if psi >= PSI_ALARM:
        return "drift"
    if psi >= PSI_WARN:
        return "warn"
    return "ok"


def _badge(status: str, text: str | None = None) -> str:
    fg, bg = STATUS_COLOURS.get(status, STATUS_COLOURS["unknown"])
    return f'<span class="badge" style="color:{fg};background:{bg}">{_e(text or status)}</span>'


def _shares(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Counts (or shares) normalised to sum to one; all zeros stays all zeros."""
    array = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    array = np.maximum(array, 0.0)
    total = float(array.sum())
    return array / total if total > 0 else array


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _document(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n"
        f'<p class="meta">Generated by skyscore at {_e(_now())}.</p>\n</body></html>\n'
    )


def _now() -> str:
    return iso(utc(), "seconds")


def _kv_table(rows: Sequence[tuple[str, str]]) -> str:
    """Two-column table; values are already-escaped HTML."""
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _legend(items: Sequence[tuple[str, str]]) -> str:
    spans = "".join(f'<span><i style="background:{c}"></i>{_e(t)}</span>' for t, c in items)
    return f'<div class="legend">{spans}</div>'


# --------------------------------------------------------------------------------------------
# SVG charts


def paired_bars_svg(
    labels: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[float] | np.ndarray]],
    *,
    edges: Sequence[str] | None = None,
    width: int = 400,
    height: int = 190,
    percent: bool = True,
) -> str:
    """Grouped vertical bars, one group per label, one bar per series ``(name, colour, values)``.

    With ``edges`` (``len(labels) - 1`` texts) the axis is labelled at the boundaries between
    groups, as a histogram; otherwise under each group. Axis labels are rotated when they would
    collide and shortened when long; every bar has a ``<title>`` tooltip with the full label.
    """
    n = len(labels)
    if n == 0 or not series:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="40" role="img">'
            '<text x="4" y="24" font-size="12" fill="#6b7280">no data</text></svg>'
        )
    data = [np.nan_to_num(np.asarray(v, dtype=np.float64), nan=0.0) for _, _, v in series]
    top = _nice_ceiling(max(float(max((d.max() for d in data if d.size), default=0.0)), 1e-12))
    boundaries = edges is not None and len(edges) == n - 1
    axis = [_clip(t, 16) for t in (edges if edges is not None and boundaries else labels)]
    longest = max((len(t) for t in axis), default=1)
    left, right, top_pad = 40, 14, 8
    slot = (width - left - right) / n
    rotate = longest * 5.8 > slot * (0.95 if not boundaries else 1.0)
    bottom = int(min(80, 14 + longest * 4.4)) if rotate else 20
    plot_h = height - top_pad - bottom
    base_y = top_pad + plot_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" font-size="10">'
    ]
    for tick in np.linspace(0.0, top, 3):
        y = float(top_pad + plot_h * (1 - tick / top))
        text = f"{tick * 100:.3g}%" if percent else f"{tick:.3g}"
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
            f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end" fill="#6b7280">{text}</text>'
        )
    bar_w = slot * 0.8 / len(series)
    for i, label in enumerate(labels):
        x0 = left + i * slot + slot * 0.1
        for k, (name, colour, _) in enumerate(series):
            value = float(data[k][i]) if i < data[k].size else 0.0
            h = plot_h * max(value, 0.0) / top
            shown = f"{value * 100:.1f}%" if percent else f"{value:.4g}"
            parts.append(
                f'<rect x="{x0 + k * bar_w:.1f}" y="{base_y - h:.1f}" '
                f'width="{max(bar_w - 1, 1):.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{_e(label)} — {_e(name)}: {shown}</title></rect>"
            )
    positions = [left + (i + 1) * slot for i in range(n - 1)] if boundaries else None
    for i, text in enumerate(axis):
        x = float(positions[i] if positions else left + (i + 0.5) * slot)
        y = float(base_y + 12)
        if positions:
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base_y}" y2="{base_y + 4}" '
                'stroke="#6b7280"/>'
            )
        if rotate:
            parts.append(
                f'<text x="{x + 3:.1f}" y="{y + 1:.1f}" text-anchor="end" fill="#374151" '
                f'transform="rotate(-40 {x + 3:.1f} {y + 1:.1f})">{_e(text)}</text>'
            )
        else:
            parts.append(
                f'<text x="{x:.1f}" y="{y + 2:.1f}" text-anchor="middle" fill="#374151">'
                f"{_e(text)}</text>"
            )
    parts.append(
        f'<line x1="{left}" x2="{width - right}" y1="{base_y}" y2="{base_y}" stroke="#9ca3af"/>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _clip(text: str, limit: int) -> str:
    """Shorten an axis label; the tooltip keeps the full text."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _nice_ceiling(value: float) -> float:
    """Round an axis maximum up to 1, 2, 2.5 or 5 times a power of ten."""
    exponent = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        candidate = step * 10.0**exponent
        if candidate >= value * (1 - 1e-9):
            return candidate
    return 10.0 ** (exponent + 1)


def _psi_cell_svg(value: float | None, top: float, width: int = 130, height: int = 14) -> str:
    """A table-cell PSI bar on a shared scale, with the warn/drift thresholds as ticks."""
    status = _level(value)
    fg, bg = STATUS_COLOURS[status]
    scale = (width - 2) / top
    w = 0.0 if value is None else min(max(value, 0.0), top) * scale
    ticks = "".join(
        f'<line x1="{1 + t * scale:.1f}" x2="{1 + t * scale:.1f}" y1="0" y2="{height}" '
        f'stroke="{STATUS_COLOURS[s][0]}" stroke-dasharray="2 2"/>'
        for t, s in ((PSI_WARN, "warn"), (PSI_ALARM, "drift"))
        if t < top
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">'
        f'<rect x="1" y="2" width="{max(w, 1):.1f}" height="{height - 4}" fill="{bg}" '
        f'stroke="{fg}"><title>PSI {_fmt(value)} ({status})</title></rect>{ticks}</svg>'
    )


def _metric_bars_svg(
    current: float | None, candidate: float | None, width: int = 260, height: int = 56
) -> str:
    """Two horizontal bars (current vs candidate) on a shared scale starting at zero."""
    left, right = 70, 56
    values = [abs(v) for v in (current, candidate) if v is not None]
    top = _nice_ceiling(max([*values, 1e-12]))
    scale = (width - left - right) / top
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" font-size="11">'
    ]
    for i, (name, colour, value) in enumerate(
        (("current", BASELINE_COLOUR, current), ("candidate", CANDIDATE_COLOUR, candidate))
    ):
        y = 6 + i * 24
        w = 0.0 if value is None else abs(value) * scale
        parts.append(
            f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" fill="#374151">{name}</text>'
            f'<rect x="{left}" y="{y}" width="{max(w, 1):.1f}" height="18" fill="{colour}">'
            f"<title>{name}: {_fmt(value, 4)}</title></rect>"
            f'<text x="{left + max(w, 1) + 4:.1f}" y="{y + 13}" fill="#111827">'
            f"{_fmt(value, 4)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# batch report


def _edge_texts(edges: Sequence[float]) -> list[str]:
    """Bin edges rounded to the precision their spacing needs (no ``0.00405`` next to ``2.5``)."""
    values = np.asarray(edges, dtype=np.float64)
    steps = np.diff(values)
    steps = steps[steps > 0]
    step = float(np.median(steps)) if steps.size else max(abs(float(values.max())), 1.0)
    decimals = int(min(max(1 - math.floor(math.log10(step)), 0), 6))
    return [f"{round(float(v), decimals) + 0.0:.{decimals}f}" for v in values]


def _numeric_labels(baseline: NumericBaseline | None, bins: int) -> tuple[list[str], list[str]]:
    """(bin range labels for tooltips, boundary texts for the axis); outer bins are open."""
    if baseline is None or len(baseline.edges) != bins - 1 or bins < 2:
        return [f"bin {i + 1}" for i in range(bins)], []
    edges = _edge_texts(baseline.edges)
    middle = [f"[{a}, {b})" for a, b in itertools.pairwise(edges)]
    return [f"< {edges[0]}", *middle, f"≥ {edges[-1]}"], edges


def _feature_chart(
    name: str, info: Mapping[str, Any], card_feature: Feature | None
) -> tuple[list[str], list[str] | None, np.ndarray, np.ndarray]:
    """(labels, bin edges or None, baseline shares, current shares) for one feature's chart."""
    baseline = getattr(card_feature, "baseline", None)
    counts = info.get("counts")
    kind = info.get("kind") or getattr(card_feature, "kind", None)
    if kind == "categorical" or isinstance(counts, Mapping):
        freqs = dict(baseline.frequencies) if isinstance(baseline, CategoricalBaseline) else {}
        current = {str(k): v for k, v in _mapping(counts).items()}
        names = [*freqs, *(k for k in current if k not in freqs and k != UNSEEN)]
        if UNSEEN in current or freqs:
            names.append(UNSEEN)
        labels = ["(unseen)" if n == UNSEEN else n for n in names]
        base = np.asarray([float(freqs.get(n, 0.0)) for n in names])
        now = _shares([_num(current.get(n)) or 0.0 for n in names])
        return labels, None, _shares(base), now
    numeric = baseline if isinstance(baseline, NumericBaseline) else None
    values = [_num(c) or 0.0 for c in counts] if isinstance(counts, Sequence) else []
    bins = len(values) or (len(numeric.frequencies) if numeric else 0)
    base = np.zeros(bins)
    if numeric is not None and len(numeric.frequencies) == bins:
        base = np.asarray(numeric.frequencies, dtype=np.float64)
    now = _shares(values) if values else np.zeros(bins)
    labels, edges = _numeric_labels(numeric, bins)
    return labels, edges or None, _shares(base), now


def _prediction_panel(drift: Mapping[str, Any], card: ModelCard) -> str:
    """Predicted class shares of this batch next to the card's held-out shares."""
    predicted = {str(k): v for k, v in _mapping(drift.get("prediction_counts")).items()}
    baseline_classes = (
        dict(card.prediction_baseline.class_frequencies) if card.prediction_baseline else {}
    )
    classes = [*card.class_names]
    classes += [c for c in [*baseline_classes, *predicted] if c not in classes]
    if not classes:
        return ""
    base = _shares([float(baseline_classes.get(c, 0.0)) for c in classes])
    now = _shares([_num(predicted.get(c)) or 0.0 for c in classes])
    total = sum(_num(v) or 0.0 for v in predicted.values())
    table = "".join(
        f"<tr><td>{_e(c)}</td><td class=num>{_pct(b) if baseline_classes else '—'}</td>"
        f"<td class=num>{_pct(a)}</td><td class=num>{_count(predicted.get(c, 0))}</td></tr>"
        for c, b, a in zip(classes, base, now, strict=True)
    )
    series: list[tuple[str, str, Sequence[float] | np.ndarray]] = [
        ("this batch", CURRENT_COLOUR, now)
    ]
    if baseline_classes:
        series.insert(0, ("baseline (held-out)", BASELINE_COLOUR, base))
    psi = _num(drift.get("prediction_psi"))
    return (
        f'<div class="card"><h3>Predictions {_badge(_level(psi), f"PSI {_fmt(psi)}")}</h3>'
        f'<p class="meta">share of each predicted class · {_count(total)} predictions</p>'
        + _legend([(n, c) for n, c, _ in series])
        + paired_bars_svg(classes, series, width=360, height=150)
        + '<table class="compact"><tr><th>Class</th><th class=num>Baseline</th>'
        f"<th class=num>This batch</th><th class=num>Count</th></tr>{table}</table></div>"
    )


def _summary_table(order: Sequence[str], features: Mapping[str, Any]) -> str:
    """One row per feature, worst first, with a PSI bar on a scale shared by all rows."""
    psis = [_num(_mapping(features[n]).get("psi")) for n in order]
    top = _nice_ceiling(max([PSI_ALARM * 1.2, *(p for p in psis if p is not None)]))
    head = (
        "<tr><th>Feature</th><th>Kind</th><th class=num>PSI</th><th>Status</th>"
        f"<th>PSI (0 to {top:g})</th><th class=num>Missing</th>"
        "<th class=num>Baseline missing</th><th class=num>Out of range / unseen</th></tr>"
    )
    body = []
    for name, psi in zip(order, psis, strict=True):
        info = _mapping(features[name])
        body.append(
            f"<tr><td>{_e(name)}</td><td>{_e(info.get('kind') or '—')}</td>"
            f"<td class=num>{_fmt(psi)}</td><td>{_badge(_level(psi))}</td>"
            f"<td>{_psi_cell_svg(psi, top)}</td>"
            f"<td class=num>{_pct(info.get('missing_rate'))}</td>"
            f"<td class=num>{_pct(info.get('baseline_missing_rate'))}</td>"
            f"<td class=num>{_pct(info.get('out_of_range_rate'))}</td></tr>"
        )
    return f'<table class="compact">{head}{"".join(body)}</table>'


def _feature_cards(order: Sequence[str], features: Mapping[str, Any], card: ModelCard) -> str:
    """A paired baseline-vs-batch bar chart per feature, worst first."""
    by_name = {f.name: f for f in card.features}
    cards = []
    for name in order:
        info = _mapping(features[name])
        labels, edges, base, now = _feature_chart(name, info, by_name.get(name))
        psi = _num(info.get("psi"))
        chart = paired_bars_svg(
            labels,
            [("baseline", BASELINE_COLOUR, base), ("this batch", CURRENT_COLOUR, now)],
            edges=edges,
        )
        unseen = "unseen" if info.get("kind") == "categorical" else "out of range"
        cards.append(
            f'<div class="card"><h3>{_e(name)} {_badge(_level(psi), f"PSI {_fmt(psi)}")}</h3>'
            f'<p class="meta">{_e(info.get("kind") or "—")} · missing '
            f"{_pct(info.get('missing_rate'))} (baseline "
            f"{_pct(info.get('baseline_missing_rate'))}) · {unseen} "
            f"{_pct(info.get('out_of_range_rate'))}</p>{chart}</div>"
        )
    return f'<div class="grid">{"".join(cards)}</div>'


def batch_report_html(manifest: Mapping[str, Any], card: ModelCard) -> str:
    """The drift report of one scored batch, as one self-contained HTML page.

    ``manifest`` is the batch's run manifest (``drift`` from
    :meth:`skyscore.monitoring.drift.DriftAccumulator.result` plus run facts); missing keys are shown
    as dashes rather than failing, so a partial manifest still gets a report.
    """
    drift = _mapping(manifest.get("drift"))
    features = _mapping(drift.get("features"))
    model = manifest.get("model")
    model_name = _mapping(model).get("name") or (model if isinstance(model, str) else card.name)
    model_version = _mapping(model).get("version") or drift.get("model_version") or card.version
    status = str(drift.get("status") or "unknown")
    title = f"Batch report — {model_name} (version {model_version})"
    source = manifest.get("input") or manifest.get("input_uri") or "—"
    facts: list[tuple[str, str]] = [
        ("Input", _e(source)),
        ("Output", _e(manifest.get("output") or manifest.get("output_uri") or "—")),
        ("Rows read", _count(manifest.get("rows_read"))),
        ("Rows scored", _count(manifest.get("rows_scored", drift.get("rows")))),
        ("Rows failed", _count(manifest.get("rows_failed"))),
        ("Model", f"{_e(model_name)} version {_e(model_version)}"),
        ("Model created", _e(card.created_at)),
        ("Started", _e(manifest.get("started_at") or "—")),
        ("Finished", _e(manifest.get("finished_at") or "—")),
        ("Drift status", _badge(status) if drift else "no drift data in manifest"),
    ]
    if manifest.get("duration_s") is not None:
        facts.insert(-1, ("Duration", f"{_fmt(manifest.get('duration_s'), 2)} s"))

    out = [f"<h1>{_e(title)}</h1>", f'<p class="sub">{_e(source)}</p>']
    panel = _prediction_panel(drift, card) if drift else ""
    out.append(f'<div class="row"><div>{_kv_table(facts)}</div>{panel}</div>')
    if drift.get("model_version") not in (None, card.version):
        out.append(
            '<p class="note">Drift was computed against model version '
            f"{_e(drift.get('model_version'))}, but this report's card is version "
            f"{_e(card.version)}; baselines below are from the card.</p>"
        )
    if not drift:
        out.append('<p class="note">This manifest carries no drift information.</p>')
        return _document(title, "\n".join(out))
    if not _num(drift.get("rows")):
        out.append(
            '<p class="note">No rows were scored in this batch: current distributions are '
            "empty and every PSI is 0.</p>"
        )

    order = sorted(
        (str(n) for n in features),
        key=lambda n: (-(_num(_mapping(features[n]).get("psi")) or -1.0), n),
    )
    max_psi, prediction_psi = _num(drift.get("max_psi")), _num(drift.get("prediction_psi"))
    out.append("<h2>Drift summary</h2>")
    out.append(
        f"<p>Max feature PSI {_badge(_level(max_psi), _fmt(max_psi))}"
        f" ({_e(drift.get('max_psi_feature') or '—')}); prediction PSI "
        f"{_badge(_level(prediction_psi), _fmt(prediction_psi))}."
        f" PSI below {PSI_WARN:g} is ok, from {PSI_WARN:g} warn, from {PSI_ALARM:g} drift"
        " (dashed lines in the bars). Features are sorted by PSI, worst first.</p>"
    )
    if not order:
        out.append('<p class="note">The card has no feature baselines to compare with.</p>')
        return _document(title, "\n".join(out))
    out.append(_summary_table(order, features))
    out.append("<h2>Feature distributions</h2>")
    out.append(_legend([("baseline (training)", BASELINE_COLOUR), ("this batch", CURRENT_COLOUR)]))
    out.append(
        '<p class="meta">Numeric bins are the training deciles (outer bins open-ended); '
        "shares are of non-missing values.</p>"
    )
    out.append(_feature_cards(order, features, card))
    return _document(title, "\n".join(out))


# --------------------------------------------------------------------------------------------
# promotion report


def _lower_is_better(metric: str) -> bool:
    return any(word in metric.lower() for word in _LOWER_IS_BETTER)


def _verdict(decision: Mapping[str, Any]) -> str:
    """``promoted``/``rejected`` from ``action`` or a gate's ``passed`` flag."""
    action = decision.get("action")
    if isinstance(action, str) and action:
        return action
    passed = decision.get("passed")
    if isinstance(passed, bool):
        return "promoted" if passed else "rejected"
    return "unknown"


def _checks(decision: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    raw = decision.get("checks")
    if raw is None:
        raw = _mapping(decision.get("details")).get("checks")
    return [c for c in raw if isinstance(c, Mapping)] if isinstance(raw, list) else []


def _schema_notes(
    decision: Mapping[str, Any], current: ModelCard | None, candidate: ModelCard
) -> tuple[list[str], str]:
    """Schema notes from the decision if it has any, else a diff of the two cards."""
    for key in _SCHEMA_KEYS:
        value = decision.get(key)
        if isinstance(value, str) and value:
            return [value], "from the decision"
        if isinstance(value, list) and value:
            return [str(v) for v in value], "from the decision"
    for check in _checks(decision):
        if "schema" in str(check.get("name", "")):
            return [str(check.get("detail", ""))], "from the decision's schema check"
    if current is None:
        return [], ""
    old = {f.name: f.kind for f in current.features}
    new = {f.name: f.kind for f in candidate.features}
    notes = [f"feature {n} removed" for n in old if n not in new]
    notes += [f"feature {n} added" for n in new if n not in old]
    notes += [f"feature {n}: {old[n]} → {new[n]}" for n in old if n in new and old[n] != new[n]]
    if current.class_names != candidate.class_names:
        notes.append(f"classes {current.class_names} → {candidate.class_names}")
    return notes or ["same features, kinds and classes"], "computed from the two cards"


def _versions_table(
    decision: Mapping[str, Any], current: ModelCard | None, candidate: ModelCard
) -> str:
    """Version, creation time and provenance of both models, side by side."""

    def facts(card: ModelCard | None) -> list[object]:
        if card is None:
            return ["(none in production)", "—", "—", "—", "—"]
        return [
            card.version,
            card.created_at,
            card.training.estimator,
            f"{card.training.rows:,} ({card.training.holdout_rows:,} held out)",
            card.onnx.sha256[:12],
        ]

    old = facts(current)
    if current is None and decision.get("current_version"):
        old[0] = decision["current_version"]
    labels = ["Version", "Created", "Estimator", "Training rows", "ONNX sha256"]
    body = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(o)}</td><td>{_e(n)}</td></tr>"
        for k, o, n in zip(labels, old, facts(candidate), strict=True)
    )
    head = "<tr><th></th><th>Current (production)</th><th>Candidate</th></tr>"
    return f"<table>{head}{body}</table>"


def _metrics_section(
    decision: Mapping[str, Any], current: ModelCard | None, candidate: ModelCard
) -> str:
    """Metrics side by side with deltas coloured by which direction is better."""
    metrics = _mapping(decision.get("metrics"))
    new_metrics = _mapping(metrics.get("candidate"))
    old_metrics = _mapping(metrics.get("current"))
    source = "gate evaluation on the same held-out rows"
    if not new_metrics:
        new_metrics = candidate.metrics
        old_metrics = current.metrics if current is not None else {}
        source = "each model card's own held-out metrics (not the same rows)"
    margin = _num(decision.get("margin"))
    source += f"; margin {margin:g}" if margin is not None else ""
    rows_used = _num(decision.get("rows"))
    source += f"; {int(rows_used):,} rows" if rows_used is not None else ""
    out = [f'<p class="meta">Source: {_e(source)}.</p>']
    names = [*new_metrics, *(k for k in old_metrics if k not in new_metrics)]
    if not names:
        return out[0] + '<p class="note">No metrics recorded.</p>'
    out.append(_legend([("current", BASELINE_COLOUR), ("candidate", CANDIDATE_COLOUR)]))
    rows = []
    for name in names:
        old, new = _num(old_metrics.get(name)), _num(new_metrics.get(name))
        if old is not None and new is not None:
            delta = new - old
            better = -delta if _lower_is_better(name) else delta
            css = "better" if better > 0 else "worse" if better < 0 else ""
            delta_html = f'<span class="{css}">{delta:+.4f}</span>'
        else:
            delta_html = "—"
        direction = "lower is better" if _lower_is_better(name) else "higher is better"
        rows.append(
            f'<tr><td>{_e(name)}<br><span class="meta">{direction}</span></td>'
            f"<td class=num>{_fmt(old, 4)}</td><td class=num>{_fmt(new, 4)}</td>"
            f"<td class=num>{delta_html}</td><td>{_metric_bars_svg(old, new)}</td></tr>"
        )
    out.append(
        "<table><tr><th>Metric</th><th class=num>Current</th><th class=num>Candidate</th>"
        f"<th class=num>Δ (candidate &minus; current)</th><th>Chart</th></tr>{''.join(rows)}</table>"
    )
    return "".join(out)


def promotion_report_html(
    decision: Mapping[str, Any], current: ModelCard | None, candidate: ModelCard
) -> str:
    """Why a candidate was promoted or rejected, as one self-contained HTML page.

    Metrics come from ``decision["metrics"]`` (the gate's scores on the same held-out rows)
    when present, else from each card (each model's own hold-out: labelled as such).
    """
    verdict = _verdict(decision)
    title = f"Promotion report — {candidate.name} version {candidate.version}: {verdict}"
    good = verdict in ("promoted", "accepted")
    fg, bg = STATUS_COLOURS["ok" if good else "unknown" if verdict == "unknown" else "drift"]
    reason = decision.get("reason")
    out = [
        f"<h1>{_e(title)}</h1>",
        f'<div class="verdict" style="color:{fg};background:{bg}">{_e(verdict.upper())}</div>',
        f"<p><b>Reason:</b> {_e(reason) if reason else '—'}</p>",
        "<h2>Versions</h2>",
        _versions_table(decision, current, candidate),
        "<h2>Metrics</h2>",
        _metrics_section(decision, current, candidate),
    ]
    checks = _checks(decision)
    if checks:
        body = "".join(
            f"<tr><td>{_e(c.get('name', '—'))}</td><td>"
            + (_badge("ok", "passed") if c.get("passed") else _badge("drift", "failed"))
            + f"</td><td>{_e(c.get('detail', ''))}</td></tr>"
            for c in checks
        )
        out.append("<h2>Checks</h2>")
        out.append(f"<table><tr><th>Check</th><th>Result</th><th>Detail</th></tr>{body}</table>")
    notes, where = _schema_notes(decision, current, candidate)
    if notes:
        out.append("<h2>Schema compatibility</h2>")
        out.append(f'<p class="meta">{_e(where)}</p>')
        out.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    shown = {"action", "passed", "reason", "metrics", "margin", "checks", "rows", *_SCHEMA_KEYS}
    others = [
        (str(k), _e(v))
        for k, v in decision.items()
        if k not in shown and isinstance(v, str | int | float | bool)
    ]
    if others:
        out.append("<h2>Decision details</h2>")
        out.append(_kv_table(others))
    return _document(title, "\n".join(out))


# --------------------------------------------------------------------------------------------


def write_report(path: Path, html: str) -> Path:
    """Write a report atomically (temp file + rename), so a reader never sees half a page."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(html)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
