"""Example datasets: the demo's real public data and a synthetic table for benchmarks.

``breast_cancer_frame`` and ``multiclass_frame`` need scikit-learn (it ships the data);
``synthetic_frame`` needs only numpy and writes the ~30 numeric + 3 categorical shape the
benchmarks ask for.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

DEMO_TARGET = "diagnosis"
DEMO_ID = "patient_id"
SYNTHETIC_TARGET = "fraud"
SYNTHETIC_ID = "id"
REGIONS = ("north", "south", "east", "west", "central")
CHANNELS = ("web", "app", "store")
TIERS = ("basic", "plus", "gold", "platinum")


def breast_cancer_frame() -> pd.DataFrame:
    """scikit-learn's Wisconsin breast cancer data (569 rows, 30 numeric features), plus
    ``size_band`` (a categorical made from the mean radius) and a ``patient_id``.

    ``diagnosis`` is ``malignant`` or ``benign`` so predictions read naturally.
    """
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.copy()
    radius = frame["mean radius"]
    frame.insert(0, DEMO_ID, [f"P{i:04d}" for i in range(len(frame))])
    frame["size_band"] = np.where(radius < 12, "small", np.where(radius < 16, "medium", "large"))
    names = np.asarray(bunch.target_names)
    frame[DEMO_TARGET] = names[frame.pop("target").to_numpy()]
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    return frame


MULTICLASS_TARGET = "target"


def multiclass_frame(name: str) -> pd.DataFrame:
    """A multiclass table scikit-learn ships: ``iris`` (150 rows, 4 numeric features, classes
    named ``setosa``/``versicolor``/``virginica``) or ``wine`` (178 rows, 13 numeric features,
    integer classes 0-2), so both kinds of class label are covered. Target: ``target``."""
    from sklearn.datasets import load_iris, load_wine

    loaders = {"iris": load_iris, "wine": load_wine}
    if name not in loaders:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(loaders)}")
    bunch = loaders[name](as_frame=True)
    frame = bunch.frame.copy()
    codes = frame.pop("target").to_numpy()
    frame[MULTICLASS_TARGET] = np.asarray(bunch.target_names)[codes] if name == "iris" else codes
    frame.columns = [
        str(c).replace(" (cm)", "").replace(" ", "_").replace("/", "_") for c in frame.columns
    ]
    return frame


def synthetic_columns() -> tuple[list[str], list[str]]:
    """Numeric and categorical column names of :func:`write_synthetic_csv`."""
    return [f"f{i:02d}" for i in range(30)], ["region", "channel", "tier"]


def synthetic_arrays(
    rows: int, *, seed: int = 0, shift: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(numeric float32 [rows, 30] rounded to 4 decimals, categorical str [rows, 3], label)."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(loc=shift, size=(rows, 30)).astype(np.float32)
    numeric[:, :5] *= 3.0
    numeric = np.round(numeric, 4).astype(np.float32)
    categorical = np.stack(
        [
            np.asarray(REGIONS)[rng.integers(0, len(REGIONS), rows)],
            np.asarray(CHANNELS)[rng.integers(0, len(CHANNELS), rows)],
            np.asarray(TIERS)[rng.integers(0, len(TIERS), rows)],
        ],
        axis=1,
    )
    logit = (
        0.8 * numeric[:, 0]
        - 0.6 * numeric[:, 1]
        + 0.5 * numeric[:, 2] * numeric[:, 3]
        + (categorical[:, 1] == "web") * 1.2
        - 3.5
    )
    label = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return numeric, categorical, label


def write_synthetic_csv(
    path: Path,
    rows: int,
    *,
    seed: int = 0,
    labelled: bool = True,
    shift: float = 0.0,
    block: int = 100_000,
) -> Path:
    """Write a synthetic table in blocks (bounded memory, any size)."""
    numeric_names, categorical_names = synthetic_columns()
    header = [SYNTHETIC_ID, *numeric_names, *categorical_names]
    if labelled:
        header.append(SYNTHETIC_TARGET)
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(",".join(header) + "\n")
        for start in range(0, rows, block):
            count = min(block, rows - start)
            numeric, categorical, label = synthetic_arrays(count, seed=seed + start, shift=shift)
            ids = np.arange(start, start + count).astype(str)
            numeric_text = [",".join(f"{v:.4f}" for v in row) for row in numeric.tolist()]
            lines = []
            for i in range(count):
                parts = [ids[i], numeric_text[i], ",".join(categorical[i])]
                if labelled:
                    parts.append(str(label[i]))
                lines.append(",".join(parts))
            handle.write("\n".join(lines) + "\n")
    return path
