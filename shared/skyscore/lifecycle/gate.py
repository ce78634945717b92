"""The quality gate: a candidate replaces production only if it is verified, compatible and no
worse on the same held-out rows.

Checks, in order: the ONNX parity recorded at training time; schema compatibility with the
current model (or a declared change); and the candidate's held-out metric against the current
model's on the *same* rows, within a margin. Metrics are computed with numpy from ONNX outputs,
so the gate runs where the models are served.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from skyscore.model.card import ModelCard
from skyscore.model.predictor import Predictor

PARITY_TOLERANCE = 1e-4
# Which way is better for each metric the gate can compare on.
HIGHER_IS_BETTER = {"roc_auc": True, "accuracy": True, "f1_macro": True, "log_loss": False}


@dataclass(frozen=True, slots=True)
class GateConfig:
    """How strict the gate is."""

    metric: str = "roc_auc"
    margin: float = 0.005  # the candidate may be this much worse and still pass
    parity_tolerance: float = PARITY_TOLERANCE
    allow_schema_change: bool = False
    min_rows: int = 20


@dataclass(frozen=True, slots=True)
class Check:
    """One named check and its outcome."""

    name: str
    passed: bool
    detail: str


@dataclass(slots=True)
class GateResult:
    """The verdict with everything needed to explain it later."""

    passed: bool
    reason: str
    checks: list[Check] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        """For the registry's decision record."""
        return asdict(self)


def schema_problems(current: ModelCard, candidate: ModelCard) -> list[str]:
    """Differences that would break callers of the current model (new categories are fine)."""
    problems = []
    old = {f.name: f.kind for f in current.features}
    new = {f.name: f.kind for f in candidate.features}
    for name in old.keys() - new.keys():
        problems.append(f"feature {name!r} removed")
    for name in new.keys() - old.keys():
        problems.append(f"feature {name!r} added")
    for name in old.keys() & new.keys():
        if old[name] != new[name]:
            problems.append(f"feature {name!r} changed from {old[name]} to {new[name]}")
    if [str(c) for c in current.classes] != [str(c) for c in candidate.classes]:
        problems.append(f"classes changed from {current.classes} to {candidate.classes}")
    if current.id_column != candidate.id_column:
        problems.append(f"id column changed from {current.id_column!r} to {candidate.id_column!r}")
    return problems


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Binary ROC AUC by the rank-sum (Mann-Whitney U) formula, ties averaged."""
    positive = positive.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(scores)]))
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def evaluate(
    probabilities: np.ndarray, labels: np.ndarray, class_names: list[str]
) -> dict[str, float]:
    """accuracy, f1_macro, log_loss and (one-vs-rest macro) roc_auc of probabilities vs labels."""
    truth = np.asarray([str(v) for v in labels])
    index = {name: i for i, name in enumerate(class_names)}
    known = np.asarray([t in index for t in truth])
    truth, probabilities = truth[known], probabilities[known]
    y = np.asarray([index[t] for t in truth], dtype=np.int64)
    predicted = probabilities.argmax(axis=1)
    clipped = np.clip(probabilities.astype(np.float64), 1e-7, 1.0)
    clipped /= clipped.sum(axis=1, keepdims=True)
    f1s = []
    for k in range(len(class_names)):
        tp = np.sum((predicted == k) & (y == k))
        fp = np.sum((predicted == k) & (y != k))
        fn = np.sum((predicted != k) & (y == k))
        f1s.append(2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0)
    metrics = {
        "accuracy": float(np.mean(predicted == y)) if len(y) else float("nan"),
        "f1_macro": float(np.mean(f1s)),
        "log_loss": float(-np.mean(np.log(clipped[np.arange(len(y)), y])))
        if len(y)
        else float("nan"),
    }
    if len(class_names) == 2:
        metrics["roc_auc"] = roc_auc(y == 1, probabilities[:, 1])
    else:
        aucs = [roc_auc(y == k, probabilities[:, k]) for k in range(len(class_names))]
        metrics["roc_auc"] = float(np.nanmean(aucs)) if not all(np.isnan(aucs)) else float("nan")
    return metrics


def quality_gate(
    candidate: Predictor,
    current: Predictor | None,
    numeric: np.ndarray,
    categorical: np.ndarray,
    labels: np.ndarray,
    config: GateConfig | None = None,
) -> GateResult:
    """Decide whether ``candidate`` may replace ``current`` (``None``: nothing in production)."""
    config = config or GateConfig()
    checks: list[Check] = []
    parity = candidate.card.onnx.parity_max_abs_diff
    checks.append(
        Check(
            "onnx_parity",
            parity <= config.parity_tolerance,
            f"max |p_onnx - p_sklearn| = {parity:.2e} (tolerance {config.parity_tolerance:g})",
        )
    )
    problems: list[str] = []
    if current is not None:
        problems = schema_problems(current.card, candidate.card)
        ok = not problems or config.allow_schema_change
        detail = "; ".join(problems) if problems else "same features, kinds and classes"
        if problems and config.allow_schema_change:
            detail = "declared schema change: " + detail
        checks.append(Check("schema_compatible", ok, detail))

    rows = int(labels.shape[0])
    metrics: dict[str, dict[str, float]] = {}
    if rows < config.min_rows:
        checks.append(
            Check("holdout_rows", False, f"{rows} held-out rows; at least {config.min_rows} needed")
        )
    else:
        metrics["candidate"] = evaluate(
            candidate.predict_arrays(numeric, categorical), labels, candidate.class_names
        )
        name = (
            config.metric
            if not np.isnan(metrics["candidate"].get(config.metric, np.nan))
            else "accuracy"
        )
        if current is not None:
            if problems:  # the current model cannot read the candidate's tensors
                metrics["current"] = dict(current.card.metrics)
                where = "the current model's own held-out metric (schemas differ)"
            else:
                metrics["current"] = evaluate(
                    current.predict_arrays(numeric, categorical), labels, current.class_names
                )
                where = f"the same {rows} held-out rows"
            new = metrics["candidate"][name]
            old = metrics["current"].get(name, float("nan"))
            delta = (new - old) if HIGHER_IS_BETTER[name] else (old - new)
            checks.append(
                Check(
                    "no_worse_than_current",
                    bool(delta >= -config.margin) or bool(np.isnan(old)),
                    f"{name}: candidate {new:.4f} vs current {old:.4f} on {where} "
                    f"(margin {config.margin:g})",
                )
            )
        else:
            checks.append(Check("no_worse_than_current", True, "no model in production yet"))
    failed = [c for c in checks if not c.passed]
    reason = (
        "; ".join(f"{c.name}: {c.detail}" for c in failed)
        if failed
        else "all checks passed: " + "; ".join(c.detail for c in checks)
    )
    return GateResult(passed=not failed, reason=reason, checks=checks, metrics=metrics, rows=rows)
