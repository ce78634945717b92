"""HTML reports: content, escaping, odd inputs, atomic writes, and a real headless-browser render."""

from __future__ import annotations

import html
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from needs import missing
from skyscore.model.card import CategoricalBaseline, Feature, ModelCard, NumericBaseline
from skyscore.model.predictor import Predictor
from skyscore.model.schema import Batch
from skyscore.monitoring.drift import DriftAccumulator
from skyscore.monitoring.report import (
    BASELINE_COLOUR,
    CURRENT_COLOUR,
    STATUS_COLOURS,
    batch_report_html,
    promotion_report_html,
    write_report,
)
from skyscore.training.datasets import synthetic_arrays
from skyscore.training.train import TrainResult

SCREENSHOT_SIZE = (1280, 2000)


def _drift_manifest(predictor: Predictor, rows: int = 2000, shift: float = 0.8) -> dict[str, Any]:
    """A scored batch's manifest: shifted synthetic rows, some unseen categories and NaNs."""
    numeric, categorical, _ = synthetic_arrays(rows, seed=7, shift=shift)
    categorical = categorical.astype(object)
    categorical[:40, 0] = "atlantis"  # unseen region
    numeric[:100, 7] = np.nan  # 5% missing in f07
    batch = Batch(np.arange(1, rows + 1, dtype=np.int64), numeric, categorical)
    accumulator = DriftAccumulator(predictor.card)
    accumulator.observe(batch, predictor.predict_proba(batch))
    return {
        "input": "s3://bucket/incoming/2024-06-01.csv",
        "output": "s3://bucket/scored/2024-06-01.jsonl",
        "rows_read": rows + 3,
        "rows_scored": rows,
        "rows_failed": 3,
        "model": {"name": predictor.card.name, "version": predictor.card.version},
        "finished_at": "2024-06-01T12:00:00Z",
        "drift": accumulator.result(),
    }


@pytest.fixture(scope="module")
def manifest(hgb_predictor: Predictor) -> dict[str, Any]:
    return _drift_manifest(hgb_predictor)


@pytest.fixture(scope="module")
def report(manifest: dict[str, Any], hgb_predictor: Predictor) -> str:
    return batch_report_html(manifest, hgb_predictor.card)


def _svgs(page: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", page, flags=re.S)


# --------------------------------------------------------------------------------------------
# batch report


def test_batch_report_shows_every_feature_with_its_psi(
    report: str, manifest: dict[str, Any]
) -> None:
    features = manifest["drift"]["features"]
    assert len(features) == 33
    for name, info in features.items():
        assert f"<h3>{html.escape(name)} " in report  # its chart card
        assert f"{info['psi']:.3f}" in report
    assert "s3://bucket/incoming/2024-06-01.csv" in report
    assert "2,003" in report and "2,000" in report  # rows read, rows scored
    assert manifest["model"]["version"] in report
    assert "2024-06-01T12:00:00Z" in report


def test_batch_report_has_an_svg_per_chart_and_each_is_well_formed_xml(
    report: str, manifest: dict[str, Any]
) -> None:
    svgs = _svgs(report)
    features = manifest["drift"]["features"]
    # one distribution chart + one PSI bar per feature, plus the prediction chart
    assert len(svgs) == 2 * len(features) + 1
    for svg in svgs:
        ET.fromstring(svg)  # raises on unescaped text or broken markup
    assert "<script" not in report.lower()  # no JavaScript at all
    assert "http://" not in report.replace("http://www.w3.org/2000/svg", "")  # no assets


def test_batch_report_sorts_features_by_psi_and_colours_them(
    report: str, manifest: dict[str, Any]
) -> None:
    features = manifest["drift"]["features"]
    by_psi = sorted(features, key=lambda n: -features[n]["psi"])
    positions = [report.index(f"<h3>{html.escape(n)} ") for n in by_psi]
    assert positions == sorted(positions)
    levels = {
        "drift" if i["psi"] >= 0.25 else "warn" if i["psi"] >= 0.1 else "ok"
        for i in features.values()
    }
    assert "drift" in levels and "ok" in levels  # shift moves numerics, not categories
    for level in levels:
        assert STATUS_COLOURS[level][1] in report


def test_batch_report_shows_unseen_categories_missing_and_predictions(
    report: str, manifest: dict[str, Any], hgb_predictor: Predictor
) -> None:
    assert "(unseen)" in report
    region = manifest["drift"]["features"]["region"]
    assert region["counts"]["__unseen__"] == 40
    assert "5.0%" in report  # f07 missing rate
    assert f"{manifest['drift']['prediction_psi']:.3f}" in report
    for label in hgb_predictor.card.class_names:
        assert f"<td>{html.escape(label)}</td>" in report
    assert BASELINE_COLOUR in report and CURRENT_COLOUR in report


def _hostile_card(card: ModelCard) -> ModelCard:
    bad_numeric = "<script>alert(1)</script>"
    bad_categorical = "a&b\"c'<i>"
    features = [
        Feature(
            name=bad_numeric,
            kind="numeric",
            baseline=NumericBaseline(
                edges=[-1.0, 0.0, 1.0],
                frequencies=[0.25, 0.25, 0.25, 0.25],
                missing_rate=0.0,
                min=-3.0,
                max=3.0,
                mean=0.0,
                std=1.0,
            ),
        ),
        Feature(
            name=bad_categorical,
            kind="categorical",
            categories=["<img src=x onerror=alert(2)>", "ok"],
            baseline=CategoricalBaseline(
                frequencies={"<img src=x onerror=alert(2)>": 0.5, "ok": 0.5}, missing_rate=0.0
            ),
        ),
    ]
    return msgspec.structs.replace(card, name="x</title><b>", features=features)


def test_hostile_names_are_escaped(hgb_predictor: Predictor) -> None:
    card = _hostile_card(hgb_predictor.card)
    batch = Batch(
        np.arange(1, 5, dtype=np.int64),
        np.asarray([[-2.0], [0.5], [5.0], [np.nan]], dtype=np.float32),
        np.asarray([["<img src=x onerror=alert(2)>"], ["ok"], ["<svg onload=x>"], [""]], object),
    )
    accumulator = DriftAccumulator(card)
    accumulator.observe(batch, np.asarray([[0.9, 0.1]] * 4, dtype=np.float32))
    manifest = {
        "input": '"><script>alert(3)</script>',
        "model": {"name": "<b>m</b>", "version": "1<br>"},
        "drift": accumulator.result(),
    }
    page = batch_report_html(manifest, card)
    lowered = page.lower()
    for raw in ("<script", "<img", "<svg onload", "<b>", "<br>", "<i>", "</title><b>"):
        assert raw not in lowered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "a&amp;b&quot;c&#x27;&lt;i&gt;" in page
    for svg in _svgs(page):
        ET.fromstring(svg)


def test_empty_batch_renders(hgb_predictor: Predictor) -> None:
    card = hgb_predictor.card
    drift = DriftAccumulator(card).result()  # nothing observed
    page = batch_report_html({"rows_read": 0, "rows_scored": 0, "drift": drift}, card)
    assert "No rows were scored" in page
    assert "nan" not in page.lower().replace("nan-", "")
    assert len(_svgs(page)) == 2 * len(card.features) + 1
    for name in card.numeric_features + card.categorical_features:
        assert html.escape(name) in page


def test_lenient_about_missing_manifest_keys(hgb_predictor: Predictor) -> None:
    card = hgb_predictor.card
    page = batch_report_html({}, card)
    assert card.name in page and card.version in page
    assert "no drift information" in page
    page = batch_report_html({"model": "fraud-model", "drift": {"features": {}}}, card)
    assert "fraud-model" in page
    partial = {"drift": {"features": {"f00": {"psi": None}, "mystery": {"kind": "numeric"}}}}
    page = batch_report_html(partial, card)
    assert "mystery" in page and "f00" in page


# --------------------------------------------------------------------------------------------
# promotion report


def _decision(action: str) -> dict[str, Any]:
    return {
        "action": action,
        "reason": "no_worse_than_current: roc_auc <dropped> & more",
        "candidate_version": "2",
        "current_version": "1",
        "margin": 0.005,
        "metrics": {
            "candidate": {"roc_auc": 0.8123, "accuracy": 0.9, "log_loss": 0.25},
            "current": {"roc_auc": 0.8456, "accuracy": 0.91, "log_loss": 0.3},
        },
        "checks": [
            {"name": "onnx_parity", "passed": True, "detail": "max diff 1.2e-07"},
            {"name": "schema_compatible", "passed": True, "detail": "same features"},
            {"name": "no_worse_than_current", "passed": False, "detail": "roc_auc dropped"},
        ],
    }


def test_promotion_report_rejected(hgb_model: TrainResult) -> None:
    current = hgb_model.card
    candidate = msgspec.structs.replace(current, version="2", created_at="2030-01-01T00:00:00Z")
    page = promotion_report_html(_decision("rejected"), current, candidate)
    assert "REJECTED" in page
    assert "roc_auc &lt;dropped&gt; &amp; more" in page
    assert "0.8123" in page and "0.8456" in page
    assert "-0.0333" in page  # roc_auc delta, worse
    assert '<span class="better">-0.0500</span>' in page  # log_loss went down: better
    assert '<span class="worse">-0.0333</span>' in page
    assert current.version in page and "2030-01-01T00:00:00Z" in page
    assert "no_worse_than_current" in page and "failed" in page
    assert "Schema compatibility" in page and "same features" in page
    assert len(_svgs(page)) == 3  # one chart per metric
    for svg in _svgs(page):
        ET.fromstring(svg)


def test_promotion_report_first_model_and_gate_shaped_decision(hgb_model: TrainResult) -> None:
    candidate = hgb_model.card
    decision = {"passed": True, "reason": "all checks passed", "checks": []}
    page = promotion_report_html(decision, None, candidate)
    assert "PROMOTED" in page
    assert "(none in production)" in page
    # metrics fall back to the card's own hold-out numbers
    assert "each model card" in page
    for name, value in candidate.metrics.items():
        assert name in page and f"{value:.4f}" in page


def test_promotion_report_diffs_schemas_when_decision_has_no_notes(hgb_model: TrainResult) -> None:
    current = hgb_model.card
    candidate = msgspec.structs.replace(current, version="3", features=current.features[:-1])
    dropped = current.features[-1].name
    page = promotion_report_html({"action": "rejected", "reason": "schema"}, current, candidate)
    assert f"feature {dropped} removed" in page
    page = promotion_report_html(
        {"action": "rejected", "schema_problems": ["feature '<x>' removed"]}, current, candidate
    )
    assert "feature &#x27;&lt;x&gt;&#x27; removed" in page


# --------------------------------------------------------------------------------------------
# writing


def test_write_report_is_atomic_and_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "dir" / "report.html"
    assert write_report(target, "<p>one</p>") == target
    assert target.read_text(encoding="utf-8") == "<p>one</p>"
    write_report(target, "<p>two — ü</p>")
    assert target.read_text(encoding="utf-8") == "<p>two — ü</p>"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]  # no temp left


# --------------------------------------------------------------------------------------------
# real browser


def _chromium() -> str:
    """The Chromium binary, or skip (locally) / fail (CI) with how to install it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    missing("chromium not found on PATH; install it with scripts/ensure-chromium.sh")


def decode_png(data: bytes) -> np.ndarray:
    """RGB pixels of an 8-bit, non-interlaced RGB/RGBA PNG (what Chromium writes); stdlib + numpy."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    pos, chunks, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in PNG chunk {kind!r}"
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    assert header is not None, "PNG without IHDR"
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and interlace == 0 and colour in (2, 6), f"unexpected PNG {header}"
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    raw = np.frombuffer(zlib.decompress(b"".join(chunks)), dtype=np.uint8)
    assert raw.size == height * (stride + 1), "truncated PNG data"
    lines = raw.reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.uint8)
    prior = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        filter_type, line = int(lines[y, 0]), lines[y, 1:]
        if filter_type == 0:  # None
            current = line.copy()
        elif filter_type == 1:  # Sub: running sum per channel, mod 256
            current = np.cumsum(line.reshape(width, bpp), axis=0, dtype=np.uint8).reshape(-1)
        elif filter_type == 2:  # Up
            current = line + prior
        else:  # Average / Paeth: sequential within the row
            f, b, r = line.tolist(), prior.tolist(), [0] * stride
            for i in range(stride):
                a = r[i - bpp] if i >= bpp else 0
                if filter_type == 3:
                    predicted = (a + b[i]) >> 1
                else:
                    c = b[i - bpp] if i >= bpp else 0
                    p = a + b[i] - c
                    pa, pb, pc = abs(p - a), abs(p - b[i]), abs(p - c)
                    predicted = a if pa <= pb and pa <= pc else b[i] if pb <= pc else c
                r[i] = (f[i] + predicted) & 0xFF
            current = np.asarray(r, dtype=np.uint8)
        out[y] = current
        prior = current
    return out.reshape(height, width, bpp)[:, :, :3]


def _pixels_of(image: np.ndarray, colour: str) -> int:
    rgb = np.asarray([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)
    return int(np.all(image == rgb, axis=2).sum())


@pytest.mark.slow
def test_batch_report_renders_in_headless_chromium(
    tmp_path: Path, manifest: dict[str, Any], hgb_predictor: Predictor
) -> None:
    binary = _chromium()
    page = write_report(tmp_path / "report.html", batch_report_html(manifest, hgb_predictor.card))
    shot = tmp_path / "report.png"
    width, height = SCREENSHOT_SIZE
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--window-size={width},{height}",
        f"--screenshot={shot}",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0 and shot.is_file(), (
        f"chromium exited {done.returncode} without a screenshot: {done.stderr[-2000:]}"
    )
    image = decode_png(shot.read_bytes())
    assert image.shape == (height, width, 3)
    colours = np.unique(image.reshape(-1, 3), axis=0)
    assert len(colours) > 50, f"screenshot looks blank ({len(colours)} distinct colours)"
    # the charts really drew: plenty of pixels in exactly the two bar colours
    assert _pixels_of(image, CURRENT_COLOUR) > 2_000
    assert _pixels_of(image, BASELINE_COLOUR) > 2_000
    assert _pixels_of(image, STATUS_COLOURS["drift"][1]) > 500  # drift badges
