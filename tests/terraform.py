"""Terraform read offline (no providers can be downloaded here): the text of a module's files,
its resource blocks, and the two checks every module passes, ``terraform fmt -check`` and
checkov with no failed check and a reason for every skip."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from needs import tool

ROOT = Path(__file__).resolve().parents[1]


def module_text(directory: Path) -> str:
    """All ``*.tf`` files of a module, in name order."""
    return "\n".join(path.read_text() for path in sorted(directory.glob("*.tf")))


def blocks(text: str, kind: str) -> dict[str, str]:
    """Each top-level ``resource "<kind>" "<name>" { ... }`` block's text by name."""
    out = {}
    for match in re.finditer(rf'^resource "{kind}" "(\w+)" {{\n(.*?)^}}', text, re.M | re.S):
        out[match.group(1)] = match.group(2)
    return out


def fmt_check(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("terraform"), "fmt", "-check", "-recursive", "-diff", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def checkov_summary(target: Path, framework: str = "terraform") -> tuple[dict[str, Any], list[str]]:
    """checkov's summary of a module (a folder) or one file, and its failed checks, one line
    each."""
    checkov = tool(
        "checkov",
        ROOT / ".venv" / "bin" / "checkov",
        ROOT / ".venv" / "tools" / "checkov" / "bin" / "checkov",
    )
    answer = subprocess.run(
        [
            checkov,
            *("-d" if target.is_dir() else "-f", str(target)),
            *("--framework", framework, "--output", "json"),
            *("--quiet", "--skip-download", "--soft-fail"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    report = json.loads(answer.stdout[answer.stdout.index("{") :])
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range']})"
        for c in report["results"]["failed_checks"]
    ]
    return report["summary"], failed


def skip_reasons(text: str) -> list[tuple[str, str]]:
    """Each ``#checkov:skip=CHECK:reason`` of the module."""
    return re.findall(r"#checkov:skip=([A-Z0-9_]+)(?::(.*))?", text)
