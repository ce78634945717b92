"""What the tests need from the machine (emulators, tools, a browser): one rule for all of them.
Under ``CI=true`` a missing one is a failure, never a skip; on a developer's machine it skips
with how to get it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> NoReturn:
    """Fail (CI) or skip (elsewhere) the test that needs what is missing."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: it must run in CI)")
    pytest.skip(reason)


def tool(name: str, *candidates: Path) -> str:
    """A command-line tool: ``$SKYSCORE_<NAME>``, then PATH, then ``candidates``."""
    found = os.environ.get(f"SKYSCORE_{name.upper()}") or shutil.which(name)
    for candidate in candidates:
        if not found and candidate.exists():
            found = str(candidate)
    if not found:
        places = ", ".join(map(str, candidates)) or "nowhere else"
        missing(f"{name} is not installed (looked on PATH and in {places})")
    return found
