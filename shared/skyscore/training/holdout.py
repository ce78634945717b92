"""Deterministic held-out rows: a row is held out when the hash of its feature values says so.

Training holds these rows out, and the quality gate later picks exactly the same rows out of the
same labelled data, with no record of indices needed, so a candidate and the current model are
compared on rows the candidate never saw. Identical rows always fall on the same side (no leakage
through duplicates). numpy + zlib only: the gate runs on the inference path.
"""

from __future__ import annotations

import zlib

import numpy as np

BUCKETS = 1000


def row_hashes(numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
    """crc32 of each row's float32 bytes and its categories (stable across processes)."""
    numeric = np.ascontiguousarray(numeric, dtype=np.float32)
    raw = numeric.view(np.uint8).reshape(numeric.shape[0], -1)
    out = np.empty(numeric.shape[0], dtype=np.uint32)
    for i in range(numeric.shape[0]):
        text = "\x1f".join(str(v) for v in categorical[i]).encode() if categorical.size else b""
        out[i] = zlib.crc32(text, zlib.crc32(raw[i].tobytes()))
    return out


def holdout_mask(numeric: np.ndarray, categorical: np.ndarray, fraction: float = 0.2) -> np.ndarray:
    """True for the rows held out of training (about ``fraction`` of them)."""
    return (row_hashes(numeric, categorical) % BUCKETS) < round(fraction * BUCKETS)
