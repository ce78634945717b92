"""The JSON documents skyscore writes for people and tools to read (manifests, failure reports,
retrain state): one encoder, indented, with a final newline, so equal content is equal bytes."""

from __future__ import annotations

from typing import Any

import msgspec

_encoder = msgspec.json.Encoder(order="deterministic")


def pretty_json(document: Any) -> bytes:
    """``document`` as indented JSON with a trailing newline; keys in a stable order."""
    return msgspec.json.format(_encoder.encode(document), indent=2) + b"\n"
