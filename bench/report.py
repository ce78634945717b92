"""How every bench prints: Markdown tables, copied into notes as they are."""

from __future__ import annotations

import sys

import numpy as np


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """Print a Markdown table under a ``###`` title."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()


def percentile(samples: list[float], q: float) -> float:
    """q-th percentile of samples."""
    return float(np.percentile(np.asarray(samples), q))
