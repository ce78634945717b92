"""The reference payloads the AWS handlers are tested with are verbatim public files: each copy
must still hash to the git blob recorded in SOURCES.md."""

from __future__ import annotations

import hashlib
import re

from aws_moto import REFERENCE_EVENTS


def git_blob(data: bytes) -> str:
    """``git hash-object`` of a file's bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def test_copies_are_verbatim() -> None:
    sources = (REFERENCE_EVENTS.parent / "SOURCES.md").read_text()
    recorded = dict(re.findall(r"^\| (aws/[\w.-]+\.json) \|.*\| ([0-9a-f]{40}) \|$", sources, re.M))
    copies = sorted(REFERENCE_EVENTS.glob("*.json"))
    assert len(copies) == len(recorded) == 11
    for path in copies:
        assert git_blob(path.read_bytes()) == recorded[f"aws/{path.name}"], path.name
