"""The demo table as the clouds' upload tests send it: every cloud scores the same bytes."""

from __future__ import annotations

import csv
import io
from pathlib import Path


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
