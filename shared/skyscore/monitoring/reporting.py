"""Glue between stored records and the HTML reports: find the card a manifest names, or the
latest promotion decision of a model, and render it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyscore.errors import ModelNotFound, NotFound

if TYPE_CHECKING:
    from skyscore.model.registry import ModelRegistry

DECISION_ACTIONS = ("promoted", "rejected")


def batch_report_for(manifest_path: Path, registry: ModelRegistry) -> str:
    """The drift report of a scored file, from its manifest and the model version it names."""
    from skyscore.monitoring.report import batch_report_html

    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise NotFound(f"no manifest at {manifest_path}") from None
    model = manifest.get("model") or {}
    card = registry.card(str(model.get("name")), str(model.get("version")))
    return batch_report_html(manifest, card)


def latest_decision(name: str, registry: ModelRegistry) -> dict[str, Any]:
    """The newest promotion or rejection in a model's history, shaped for the report."""
    for event in reversed(registry.history(name)):
        if event.get("action") not in DECISION_ACTIONS:
            continue
        details = event.get("details") or {}
        gate = details.get("gate") or {}
        return {
            "action": event["action"],
            "reason": event.get("reason", ""),
            "at": event.get("at"),
            "candidate_version": details.get("candidate_version", event.get("version")),
            "current_version": details.get("current_version", event.get("previous")),
            "metrics": gate.get("metrics") or {},
            "checks": gate.get("checks") or [],
            "rows": gate.get("rows"),
            "metric": details.get("metric"),
            "margin": details.get("margin"),
        }
    raise ModelNotFound(f"model {name!r} has no promotion decision yet")


def promotion_report_for(name: str, registry: ModelRegistry) -> str:
    """The report of a model's latest promotion decision, both cards side by side."""
    from skyscore.monitoring.report import promotion_report_html

    decision = latest_decision(name, registry)
    candidate = registry.card(name, str(decision["candidate_version"]))
    current_version = decision.get("current_version")
    current = registry.card(name, str(current_version)) if current_version else None
    return promotion_report_html(decision, current, candidate)
