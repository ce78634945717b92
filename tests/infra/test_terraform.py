"""Every Terraform module, checked offline: ``terraform fmt -check``, and checkov with no failed
check and a reason for every skip (``validate``/``plan`` need providers, which cannot be
downloaded here). The modules' own wiring tests live beside their cloud's function tests."""

from __future__ import annotations

import pytest

from terraform import ROOT, checkov_summary, fmt_check, module_text, skip_reasons

# module, and the least it must hold (so an empty or unparsed module cannot pass)
MODULES = {"azure": (20, 30), "gcp": (40, 40)}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_terraform_fmt(module: str) -> None:
    answer = fmt_check(ROOT / "infra" / module)
    assert answer.returncode == 0, answer.stdout + answer.stderr


@pytest.mark.parametrize("module", sorted(MODULES))
def test_checkov_passes_with_a_reason_for_every_skip(module: str) -> None:
    directory = ROOT / "infra" / module
    summary, failed = checkov_summary(directory)
    assert failed == [] and summary["failed"] == 0
    least_passed, least_resources = MODULES[module]
    assert summary["passed"] >= least_passed and summary["resource_count"] >= least_resources
    skips = skip_reasons(module_text(directory))
    assert skips and all(reason and len(reason.strip()) > 20 for _, reason in skips), skips
    assert summary["skipped"] == len(skips)
