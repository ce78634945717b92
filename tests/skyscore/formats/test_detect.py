"""Format detection by extension, and the content check that catches a misnamed file."""

from __future__ import annotations

import gzip

import pytest

from skyscore.errors import FormatMismatch, UnsupportedFormat
from skyscore.formats import FORMATS, check_content, decoder_for, detect_format, format_for


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("data.csv", "csv"),
        ("DATA.CSV", "csv"),
        ("dir.v2/part-0001.jsonl", "jsonl"),
        ("x.ndjson", "jsonl"),
        ("x.json", "json"),
        ("x.parquet", "parquet"),
        ("archive.2024.csv", "csv"),
    ],
)
def test_detect_format_by_extension(name: str, fmt: str) -> None:
    assert detect_format(name) == fmt
    assert decoder_for(fmt) is FORMATS[fmt]


@pytest.mark.parametrize("name", ["data.xlsx", "data.csv.gz", "data", "data.txt"])
def test_unknown_extensions_are_unsupported_and_named(name: str) -> None:
    with pytest.raises(UnsupportedFormat) as caught:
        detect_format(name)
    suffix = name.rsplit(".", 1)[-1] if "." in name else ""
    assert (f"'.{suffix}'" if suffix else "no file extension") in caught.value.detail
    assert caught.value.status == 415


def test_unknown_format_name() -> None:
    with pytest.raises(UnsupportedFormat, match="xml"):
        format_for("xml")


PARQUET_HEAD = b"PAR1\x15\x04\x15\x80\x01"


@pytest.mark.parametrize(
    ("fmt", "head", "says"),
    [
        ("csv", PARQUET_HEAD, "Parquet magic"),
        ("jsonl", PARQUET_HEAD, "Parquet magic"),
        ("csv", gzip.compress(b"a,b\n1,2\n"), "gzip"),
        ("csv", b"PK\x03\x04rest", "ZIP"),
        ("csv", b"a,b\n1,\x002\n", "NUL byte at offset 6"),
        ("csv", "a,b\n1,2\n".encode("utf-16"), "UTF-16"),
        ("csv", b"a,b\n1,\xff2\n", "not UTF-8"),
        ("csv", b'{"a": 1}\n', "like JSON"),
        ("json", b'{"a": 1}', "array of objects"),
        ("json", b"a,b\n", "expected a JSON array"),
        ("json", b"   ", "empty"),
        ("jsonl", b'[{"a": 1}]', "JSON array"),
        ("jsonl", b"a,b\n1,2\n", "must start with '{'"),
        ("parquet", b"a,b\n1,2\n", "PAR1"),
        ("parquet", b"", "empty"),
    ],
)
def test_content_that_contradicts_the_extension(fmt: str, head: bytes, says: str) -> None:
    with pytest.raises(FormatMismatch) as caught:
        check_content(fmt, head, name="scores.in")
    label = FORMATS[fmt].label
    assert caught.value.detail.startswith(f"scores.in does not look like {label}: ")
    assert says in caught.value.detail
    assert caught.value.status == 415


@pytest.mark.parametrize(
    ("fmt", "head"),
    [
        ("csv", b"\xef\xbb\xbfid,x\n1,2\n"),
        ("csv", "id,name\n1,café\n".encode()[:-3]),  # a character cut by the block end is fine
        ("csv", b""),
        ("jsonl", b'\n{"x": 1}\n{"x": 2'),
        ("jsonl", b""),
        ("json", b' \n[{"x": 1}, {"x"'),
        ("parquet", PARQUET_HEAD),
    ],
)
def test_plausible_content_passes(fmt: str, head: bytes) -> None:
    check_content(fmt, head, name="ok")
