"""The demo table as the clouds' tests send it (upload files, HTTP bodies), and the local
dataplane's answer to compare with: every cloud scores the same bytes."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any


def cancer_csv(data_dir: Path, bad_rows: bool = True) -> bytes:
    """The demo table without its label; with two bad rows (a text and an infinity)."""
    rows = list(csv.DictReader(io.StringIO((data_dir / "breast_cancer.csv").read_text())))
    for row in rows:
        row.pop("diagnosis")
    if bad_rows:
        rows[3]["mean_radius"] = "n/a"
        rows[10]["worst_area"] = "inf"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def predict_body(rows: int = 3) -> bytes:
    """A ``/predict`` body of the first ``rows`` demo patients."""
    from skyscore.training.datasets import breast_cancer_frame

    frame = breast_cancer_frame().drop(columns=["diagnosis"]).head(rows)
    return json.dumps({"instances": frame.to_dict(orient="records")}).encode()


def local(predictor: Any, method: str, path: str, body: bytes = b"", **headers: str) -> Any:
    """The local dataplane's response to a request, the model served as ``cancer``."""
    from skyscore.serving.dataplane import DataPlane, Request, StaticModelProvider

    plane = DataPlane(StaticModelProvider({"cancer": predictor}))
    return plane.handle(Request(method, path, headers, body))
