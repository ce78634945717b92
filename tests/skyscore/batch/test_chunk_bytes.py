"""Chunks of wide tables are cut by bytes, not rows: same output, bounded memory."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from skyscore.batch import pipeline
from skyscore.batch.pipeline import MIN_CHUNK_ROWS, chunk_rows_for, score_stream
from skyscore.model.predictor import Predictor


def test_rows_per_chunk_follow_the_bytes_per_line() -> None:
    short = b"a,b\n" + b"1,2\n" * 20_000
    assert chunk_rows_for(short[: 64 << 10], 16_384, complete=False) == 16_384
    wide = b"x" * 1_999 + b"\n"  # 2,000 bytes a line: 8 MiB is 4,194 lines
    head = (wide * 40)[: 64 << 10]
    assert chunk_rows_for(head, 16_384, complete=False) == (8 << 20) // 2_000
    assert chunk_rows_for(head, 1_000, complete=False) == 1_000  # never more than asked
    # a line longer than the head: at least MIN_CHUNK_ROWS, whatever the estimate
    assert chunk_rows_for(b"y" * (64 << 10), 16_384, complete=False) == MIN_CHUNK_ROWS
    # the whole file in the head: nothing to bound
    assert chunk_rows_for(wide * 3, 16_384, complete=True) == 16_384


def test_byte_sized_chunks_give_the_same_output(
    demo_predictor: Predictor, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table with long lines (a wide text column the model does not read): the same
    output bytes whether its chunks are cut at a byte budget or at the row count."""
    lines = (data_dir / "breast_cancer.csv").read_bytes().splitlines()
    note = b"n" * 3_000
    data = b"\n".join([lines[0] + b",note", *(line + b"," + note for line in lines[1:] * 4)])
    outputs, chunks = [], []
    for budget in (1 << 40, 256 << 10):
        monkeypatch.setattr(pipeline, "CHUNK_BYTES", budget)
        monkeypatch.setattr(pipeline, "MIN_CHUNK_ROWS", 16)
        out = io.BytesIO()
        report = score_stream(io.BytesIO(data), out, fmt="csv", predictor=demo_predictor)
        assert report.rows_scored == 4 * (len(lines) - 1)
        outputs.append(out.getvalue())
        chunks.append(report.chunks)
    assert outputs[0] == outputs[1]
    assert chunks[0] == 1 and chunks[1] > 20  # ~85 rows of 3 kB per 256 kB chunk
