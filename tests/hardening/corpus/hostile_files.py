"""The hostile inputs that are binary or big, written at test time (never committed).

Each function writes one file into a directory and returns its path; the committed text files
of this folder are the rest of the corpus. Sizes are chosen so each file is quick to write but
still says what it stands for: a gzip "bomb" that inflates 4,000-fold, a sparse file of a
gigabyte that takes no disk, JSON nested 20,000 levels (msgspec gives up past ~10,000).
"""

from __future__ import annotations

import gzip
import io
import os
import zipfile
import zlib
from pathlib import Path

HEADER = b"x1,x2,color\n"
GOOD = b"0.5,0.25,red\n"
GOOD_RECORD = b'{"x1": 0.5, "x2": 0.25, "color": "red"}'
DEEP_LEVELS = 20_000
SNIFF_PAST = 70_000  # bytes of good rows that put a bad byte past the 64 KiB content check


def late_rows() -> int:
    """How many good rows :func:`late_bad_bytes` writes before its bad ones."""
    return SNIFF_PAST // len(GOOD) + 1


def utf16(directory: Path) -> Path:
    path = directory / "utf16.csv"
    path.write_bytes((HEADER + GOOD * 3).decode().encode("utf-16"))
    return path


def latin1_head(directory: Path) -> Path:
    path = directory / "latin1.csv"
    path.write_bytes(HEADER + GOOD + "0.5,0.25,rouge-foncé\n".encode("latin-1"))
    return path


def late_bad_bytes(directory: Path) -> Path:
    """Good rows past the content check, then a latin-1 byte, a NUL, good rows: row errors."""
    path = directory / "late_bad_bytes.csv"
    body = GOOD * late_rows()
    body += "0.5,0.25,rouge-foncé\n".encode("latin-1")  # row late_rows() + 1: color
    body += b"0.5,0.\x0025,red\n"  # row late_rows() + 2: x2
    body += GOOD * 2
    path.write_bytes(HEADER + body)
    return path


def nul_head(directory: Path) -> Path:
    path = directory / "nul_head.csv"
    path.write_bytes(HEADER + GOOD + b"0.5,\x00,red\n" + GOOD)
    return path


def gzip_named_csv(directory: Path) -> Path:
    path = directory / "really_gzip.csv"
    path.write_bytes(gzip.compress(HEADER + GOOD * 10))
    return path


def gzip_bomb(directory: Path, inflated: int = 256 << 20) -> Path:
    """A ``.csv`` that is a gzip stream of ``inflated`` bytes of a header plus zeros."""
    path = directory / "bomb.csv"
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip container
    block = bytes(1 << 20)
    with path.open("wb") as handle:
        handle.write(compressor.compress(HEADER))
        for _ in range(inflated // len(block)):
            handle.write(compressor.compress(block))
        handle.write(compressor.flush())
    return path


def zip_bomb(directory: Path, inflated: int = 256 << 20) -> Path:
    """A ``.csv`` that is a ZIP archive holding one ``inflated``-byte member of zeros."""
    path = directory / "bomb_zip.csv"
    block = bytes(1 << 20)
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open("data.csv", "w", force_zip64=True) as member,
    ):
        for _ in range(inflated // len(block)):
            member.write(block)
    return path


def sparse_after_rows(directory: Path, size: int = 1 << 30) -> Path:
    """Good rows past the content check, then a hole of zeros to ``size`` bytes (no disk)."""
    path = directory / "sparse.csv"
    with path.open("wb") as handle:
        handle.write(HEADER + GOOD * late_rows())
        handle.truncate(size)
    return path


def sparse_parquet(directory: Path, size: int = 1 << 30) -> Path:
    """``PAR1`` and then a gigabyte of nothing: not a Parquet file at all."""
    path = directory / "sparse.parquet"
    with path.open("wb") as handle:
        handle.write(b"PAR1")
        handle.truncate(size)
    return path


def deep_jsonl(directory: Path) -> Path:
    """A good record, one nested :data:`DEEP_LEVELS` deep (an extra field), a good record."""
    path = directory / "deep.jsonl"
    deep = b'{"x1": 0.5, "x2": 0.25, "color": "red", "z": ' + nested() + b"}"
    path.write_bytes(b"\n".join([GOOD_RECORD, deep, GOOD_RECORD]) + b"\n")
    return path


def deep_json(directory: Path) -> Path:
    """The same three records as a JSON array; the deep one is its own element's value."""
    path = directory / "deep.json"
    deep = b'{"x1": ' + nested() + b', "x2": 0.25, "color": "red"}'
    path.write_bytes(b"[" + b",\n".join([GOOD_RECORD, deep, GOOD_RECORD]) + b"]\n")
    return path


def nested(levels: int = DEEP_LEVELS) -> bytes:
    return b"[" * levels + b"]" * levels


def long_names(directory: Path) -> Path:
    """A 100,000-character extra column name and a 1 MB category value."""
    path = directory / "long_names.csv"
    name = b"n" * 100_000
    path.write_bytes(
        b"x1,x2,color,"
        + name
        + b"\n"
        + b"0.5,0.25,red,1\n"
        + b"0.5,0.25,"
        + b"c" * (1 << 20)
        + b",2\n"
    )
    return path


def parquet_wrong_types(directory: Path) -> Path:
    """A numeric feature stored as strings: a file-level error naming the column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = directory / "wrong_types.parquet"
    pq.write_table(
        pa.table({"x1": ["0.5", "1"], "x2": [0.25, 0.5], "color": ["red", "blue"]}), path
    )
    return path


def parquet_bad_values(directory: Path) -> Path:
    """Right types, hostile values: inf and a float64 beyond float32 are row errors."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = directory / "bad_values.parquet"
    table = pa.table(
        {
            "x1": [0.5, float("inf"), 0.5, 1e300, None, 0.1],
            "x2": [0.25, 0.25, float("-inf"), 0.25, 0.25, 0.2],
            "color": ["red", "red", "red", None, "red", "blue"],
            "extra": [1, 2, 3, 4, 5, 6],
        }
    )
    pq.write_table(table, path)
    return path


def parquet_truncated(directory: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(
        pa.table({"x1": [0.5] * 100, "x2": [0.25] * 100, "color": ["red"] * 100}), buffer
    )
    data = buffer.getvalue()
    path = directory / "truncated.parquet"
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def parquet_footer_garbage(directory: Path) -> Path:
    """The footer length points past the start of the file: a corrupt index, not a crash."""
    path = directory / "footer.parquet"
    path.write_bytes(b"PAR1" + os.urandom(64) + (2**31 - 1).to_bytes(4, "little") + b"PAR1")
    return path
