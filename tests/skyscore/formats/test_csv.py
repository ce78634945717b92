"""CSV decoding and encoding: values, row errors, quoting, fast path = slow path, bounded memory."""

from __future__ import annotations

import csv
import io
import math
import tracemalloc
from collections.abc import Iterator
from decimal import Decimal, localcontext
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skyscore.errors import InvalidInput
from skyscore.formats import csv as csv_format
from skyscore.formats import csv_json, csv_loadtxt
from skyscore.formats.base import (
    concat_batches,
    iter_counted_line_chunks,
    iter_line_chunks,
    parse_number,
)
from skyscore.formats.csv import EMPTY_SENTINEL, CsvEncoder, CsvFormat, CsvLayout, fill_empty_fields
from skyscore.formats.csv_arrow import find_pyarrow
from skyscore.formats.csv_loadtxt import LoadtxtPlan
from skyscore.model.schema import FLOAT32_MAX, Batch, InputSchema, RowError

SCHEMA = InputSchema(["x1", "x2"], ["color"], id_column="id")
HEADER = "id,x1,x2,color"
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode(
    text: str | bytes,
    schema: InputSchema = SCHEMA,
    *,
    chunk_rows: int = 65_536,
    block_size: int | None = None,
) -> tuple[Batch, list[RowError], list[int]]:
    """All chunks merged: (batch, errors, chunk sizes)."""
    data = text.encode() if isinstance(text, str) else text
    parts, errors, sizes = [], [], []
    fmt = CsvFormat(block_size=block_size)
    for batch, errs in fmt.decode(io.BytesIO(data), schema, chunk_rows=chunk_rows):
        parts.append(batch)
        errors.extend(errs)
        sizes.append(len(batch) + len(errs))
    return concat_batches(schema, parts), errors, sizes


def same_batch(a: Batch, b: Batch) -> bool:
    return (
        np.array_equal(a.rows, b.rows)
        and np.array_equal(a.numeric, b.numeric, equal_nan=True)
        and a.numeric.dtype == b.numeric.dtype == np.float32
        and a.categorical.tolist() == b.categorical.tolist()
        and a.ids == b.ids
    )


def refuse_loadtxt(self: LoadtxtPlan, lines: list[str]) -> np.ndarray:
    """Stand-in for the loadtxt path: its chunks fall back to the stdlib csv module."""
    raise ValueError("loadtxt path disabled")


def refuse_json(self: CsvLayout, data: bytes, n: int) -> None:
    """Stand-in for the JSON path: every chunk goes to loadtxt."""
    return None


def decode_with(text: str, paths: str, **kwargs: Any) -> tuple[Batch, list[RowError], list[int]]:
    """Decode using only some paths: "all", "loadtxt" (+ slow) or "slow"."""
    with pytest.MonkeyPatch.context() as patch:
        if paths != "all":
            patch.setattr(CsvLayout, "parse_json", refuse_json)
        if paths == "slow":
            patch.setattr(LoadtxtPlan, "loadtxt", refuse_loadtxt)
        patch.setattr(csv_loadtxt, "MIN_SEGMENT", 2)  # isolate bad lines down to single ones
        return decode(text, **kwargs)


# ------------------------------------------------------------------------------ happy path
def test_decodes_values_ids_and_row_numbers() -> None:
    batch, errors, _ = decode(f"{HEADER}\na,1.5,-2,red\nb,3,4e2,blue\n")
    assert errors == []
    assert batch.rows.tolist() == [1, 2]
    assert batch.numeric.dtype == np.float32
    assert batch.numeric.tolist() == [[1.5, -2.0], [3.0, 400.0]]
    assert batch.categorical.dtype == object
    assert batch.categorical.tolist() == [["red"], ["blue"]]
    assert batch.ids == ["a", "b"]


def test_header_order_and_extra_columns_do_not_matter() -> None:
    batch, errors, _ = decode("color,extra,x2,id,x1\nred,zz,2,a,1\n")
    assert errors == []
    assert batch.numeric.tolist() == [[1.0, 2.0]]
    assert batch.categorical.tolist() == [["red"]]
    assert batch.ids == ["a"]


def test_missing_id_column_gives_none_ids() -> None:
    batch, errors, _ = decode("x1,x2,color\n1,2,red\n")
    assert errors == [] and batch.ids == [None]


def test_empty_fields_are_missing_values() -> None:
    text = f"{HEADER}\na,,2,\n,1,,red\nc,  ,3,blue\n"
    batch, errors, _ = decode(text)
    assert errors == []
    assert np.isnan(batch.numeric[0, 0]) and batch.numeric[0, 1] == 2
    assert batch.numeric[1, 0] == 1 and np.isnan(batch.numeric[1, 1])
    assert np.isnan(batch.numeric[2, 0])  # blank is empty too
    assert batch.categorical.tolist() == [[""], ["red"], ["blue"]]
    assert batch.ids == ["a", "", "c"]


def test_empty_fields_when_the_sentinel_is_also_real_text() -> None:
    text = f"{HEADER}\na,,2,{EMPTY_SENTINEL}\nb,{EMPTY_SENTINEL},1,red\n"
    batch, errors, _ = decode(text)
    assert batch.rows.tolist() == [1]
    assert batch.categorical.tolist() == [[EMPTY_SENTINEL]] and np.isnan(batch.numeric[0, 0])
    assert errors == [RowError(2, "x1", "number out of float32 range")]


def test_quoted_fields_with_commas_quotes_and_newlines() -> None:
    text = f'{HEADER}\n"a,1",1,2,"dark, red"\nb,"3",4,"say ""hi"""\nc,5,6,"two\nlines"\nd,7,8,x\n'
    batch, errors, _ = decode(text)
    assert errors == []
    assert batch.ids == ["a,1", "b", "c", "d"]
    assert batch.categorical.tolist() == [["dark, red"], ['say "hi"'], ["two\nlines"], ["x"]]
    assert batch.numeric.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert batch.rows.tolist() == [1, 2, 3, 4]


def test_quote_inside_an_unquoted_field_is_literal() -> None:
    batch, errors, _ = decode(f'{HEADER}\na,1,2,5"2\nb,3,4,x\n')
    assert errors == [] and batch.categorical.tolist() == [['5"2'], ["x"]]


def test_unterminated_quote_is_a_row_error_at_the_end() -> None:
    batch, errors, _ = decode(f'{HEADER}\na,1,2,red\nb,3,4,"open\n')
    assert batch.rows.tolist() == [1]
    assert errors == [RowError(2, None, "unterminated quoted field")]


def test_crlf_bom_blank_lines_and_no_final_newline() -> None:
    text = "\ufeff" + f"{HEADER}\r\n\r\na,1,2,red\r\n\r\nb,3,4,blue"
    batch, errors, _ = decode(text)
    assert errors == []
    assert batch.rows.tolist() == [1, 2]  # blank lines are not rows
    assert batch.categorical.tolist() == [["red"], ["blue"]]
    assert batch.ids == ["a", "b"]


def test_blank_lines_before_the_header_and_in_a_one_column_file() -> None:
    one = InputSchema(["x"], [])
    for text in ("\n\nx\n1\n\n2\n\n", "x\n1\n\n\n2"):
        batch, errors, _ = decode(text, one)
        assert errors == [] and batch.numeric.tolist() == [[1.0], [2.0]]
        assert batch.rows.tolist() == [1, 2]
    batch, errors, _ = decode(f"\n\n{HEADER}\na,1,2,red\n")
    assert errors == [] and batch.ids == ["a"]
    assert decode("x\n\n", one)[2] == [] and decode("x\n\n\n", one)[2] == []


def test_header_only_gives_no_chunks() -> None:
    batch, errors, sizes = decode(f"{HEADER}\n")
    assert len(batch) == 0 and errors == [] and sizes == []


# ----------------------------------------------------------------------------- row errors
@pytest.mark.parametrize(
    ("line", "column", "reason"),
    [
        ("b,1,2", None, "expected 4 fields, got 3"),
        ("b,1,2,red,extra", None, "expected 4 fields, got 5"),
        ("b,abc,2,red", "x1", "expected a number, got 'abc'"),
        ("b,1,1_0,red", "x2", "expected a number, got '1_0'"),
        ("b,nan,2,red", "x1", "non-finite number"),
        ("b,1,-Infinity,red", "x2", "non-finite number"),
        ("b,1e39,2,red", "x1", "number out of float32 range"),
        ("b,1,3.4028235e38,red", "x2", "number out of float32 range"),  # rounds to max in f32
        ("b,1,1e400,red", "x2", "non-finite number"),
    ],
)
def test_bad_rows_are_reported_and_good_rows_kept(
    line: str, column: str | None, reason: str
) -> None:
    text = f"{HEADER}\na,1,2,red\n{line}\nc,3,4,blue\n"
    batch, errors, _ = decode(text)
    assert errors == [RowError(2, column, reason)]
    assert batch.rows.tolist() == [1, 3]
    assert batch.ids == ["a", "c"]


def test_largest_float32_is_accepted() -> None:
    batch, errors, _ = decode(f"{HEADER}\na,{FLOAT32_MAX!r},-{FLOAT32_MAX!r},red\n")
    assert errors == [] and batch.numeric.tolist() == [[FLOAT32_MAX, -FLOAT32_MAX]]


def test_invalid_utf8_is_a_row_error() -> None:
    data = f"{HEADER}\na,1,2,red\n".encode() + b"b,1,2,r\xffd\n" + b"c,3,4,blue\n"
    batch, errors, _ = decode(data)
    assert errors == [RowError(2, None, "invalid UTF-8")]
    assert batch.ids == ["a", "c"]


def test_many_bad_rows_in_one_chunk() -> None:
    lines = [f"r{i},{i},{'x' if i % 3 == 0 else i},c" for i in range(1, 3001)]
    batch, errors, _ = decode(HEADER + "\n" + "\n".join(lines) + "\n")
    assert [e.row for e in errors] == list(range(3, 3001, 3))
    assert all(e.column == "x2" for e in errors)
    assert len(batch) == 2000 and batch.rows.tolist() == [i for i in range(1, 3001) if i % 3]


# --------------------------------------------------------------------------- file errors
def test_missing_model_column_is_a_file_error_naming_it() -> None:
    with pytest.raises(InvalidInput) as caught:
        decode("id,x1,color\na,1,red\n")
    assert caught.value.field == "x2"
    assert "x2" in caught.value.detail


def test_unknown_column_in_strict_mode() -> None:
    strict = InputSchema(["x1", "x2"], ["color"], id_column="id", strict=True)
    with pytest.raises(InvalidInput) as caught:
        decode(f"{HEADER},surprise\na,1,2,red,0\n", strict)
    assert caught.value.field == "surprise"
    batch, errors, _ = decode(f"{HEADER}\na,1,2,red\n", strict)
    assert errors == [] and len(batch) == 1


def test_duplicate_model_column() -> None:
    with pytest.raises(InvalidInput) as caught:
        decode("id,x1,x2,color,x1\na,1,2,red,3\n")
    assert caught.value.field == "x1"


def test_empty_file_has_no_header() -> None:
    with pytest.raises(InvalidInput, match="no header"):
        decode("")
    with pytest.raises(InvalidInput, match="no header"):
        decode("\n\n")


# ---------------------------------------------------------------------------- chunking
def test_chunks_never_exceed_chunk_rows_and_rows_continue() -> None:
    lines = [f"r{i},{i},{i * 2},{'c' * (i % 7)}" for i in range(1, 1001)]
    text = HEADER + "\n" + "\n".join(lines) + "\n"
    batch, errors, sizes = decode(text, chunk_rows=64, block_size=1000)
    assert errors == []
    assert max(sizes) <= 64 and sum(sizes) == 1000
    assert batch.rows.tolist() == list(range(1, 1001))
    assert batch.numeric[:, 1].tolist() == [2.0 * i for i in range(1, 1001)]


def test_quoted_record_spanning_a_chunk_boundary() -> None:
    lines = [f'r{i},{i},1,"a\nb{i}"' for i in range(1, 41)]
    batch, errors, sizes = decode(HEADER + "\n" + "\n".join(lines) + "\n", chunk_rows=7)
    assert errors == []
    assert batch.categorical[:, 0].tolist() == [f"a\nb{i}" for i in range(1, 41)]
    assert max(sizes) <= 7


class _GeneratedCsv:
    """A readable stream producing ``rows`` CSV rows on demand (never all in memory)."""

    def __init__(self, rows: int) -> None:
        self._lines = self._generate(rows)
        self._buffer = b""

    @staticmethod
    def _generate(rows: int) -> Iterator[bytes]:
        yield b"id," + ",".join(f"f{j}" for j in range(10)).encode() + b",color\n"
        row = ",".join(f"{j * 1.25 - 3:.4f}" for j in range(10))
        for start in range(0, rows, 1000):
            block = [f"{i},{row},c{i % 5}" for i in range(start, min(start + 1000, rows))]
            yield ("\n".join(block) + "\n").encode()

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            more = next(self._lines, b"")
            if not more:
                break
            self._buffer += more
        if size < 0:
            size = len(self._buffer)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


def test_memory_stays_bounded_whatever_the_file_size() -> None:
    schema = InputSchema([f"f{j}" for j in range(10)], ["color"], id_column="id")
    rows = 120_000  # about 8 MB of CSV
    fmt = CsvFormat(block_size=64 << 10)
    tracemalloc.start()
    try:
        seen = 0
        biggest = 0
        for batch, errors in fmt.decode(_GeneratedCsv(rows), schema, chunk_rows=2_000):
            assert errors == []
            biggest = max(biggest, len(batch))
            seen += len(batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == rows and biggest <= 2_000
    assert peak < 4 << 20, f"peak traced memory {peak / 2**20:.1f} MiB"


@SETTINGS
@given(
    st.lists(st.text(alphabet="xy", max_size=5), max_size=60),
    st.booleans(),
    st.integers(1, 10),
    st.integers(1, 30),
    st.integers(0, 2),
)
def test_line_chunks_cut_exactly(
    lines: list[str], final_newline: bool, max_lines: int, block_size: int, extra_first: int
) -> None:
    data = "\n".join(lines).encode() + (b"\n" if final_newline and lines else b"")
    counted = list(
        iter_counted_line_chunks(
            io.BytesIO(data), max_lines, block_size=block_size, extra_first=extra_first
        )
    )
    chunks = [chunk for chunk, _ in counted]
    assert chunks == list(
        iter_line_chunks(
            io.BytesIO(data), max_lines, block_size=block_size, extra_first=extra_first
        )
    )
    assert [count for _, count in counted] == [chunk.count(b"\n") + 1 for chunk in chunks]
    got = [line for chunk in chunks for line in chunk.split(b"\n")]
    expected = data.split(b"\n") if data else []  # "a\n" is one line, "" is none
    if data.endswith(b"\n"):
        expected.pop()
    assert got == expected
    sizes = [chunk.count(b"\n") + 1 for chunk in chunks]
    limits = [max_lines + (extra_first if i == 0 else 0) for i in range(len(chunks))]
    assert all(size <= limit for size, limit in zip(sizes, limits, strict=True))
    assert sizes[:-1] == limits[:-1]  # every chunk but the last is full


# ----------------------------------------------------------------- fast path = slow path
def _agree(text: str) -> None:
    """``parse_number`` accepts exactly what loadtxt's float parser accepts, with equal values."""
    if not text.strip():
        return  # empty means missing: decided before parsing, on both paths
    try:
        ours: float | None = parse_number(text)
    except ValueError:
        ours = None
    try:
        theirs: float | None = float(
            np.loadtxt([text], dtype=np.float64, delimiter=",", comments=None, ndmin=1)[0]
        )
    except ValueError:
        theirs = None
    if ours is None or theirs is None:
        assert ours is theirs, text
    else:
        assert ours == theirs or (math.isnan(ours) and math.isnan(theirs)), text


@pytest.mark.parametrize(
    "text",
    [
        "1",
        " 2.5 ",
        "+1e3",
        "-.5",
        "1.",
        "inf",
        "-Infinity",
        "nan",
        "\xa03",
        "0x10",
        "1_0",
        "\u0661",
        "1 2",
        "e5",
        "--1",
        "1e",
        "\t-0\t",
        "1e400",
        "NaN",
    ],
)
def test_parse_number_matches_loadtxt_on_edge_cases(text: str) -> None:
    _agree(text)


@SETTINGS
@given(st.text(alphabet="0123456789.eE+-_ naifINFtyx\t\xa0\u0661", max_size=8))
def test_parse_number_agrees_with_loadtxt(text: str) -> None:
    _agree(text)


# The largest float32 prints as 3.4028235e+38, which as a double is above FLOAT32_MAX and so
# "out of float32 range" by schema.numeric_problem (the rule HTTP uses too): stay below it.
finite32 = st.floats(
    width=32, allow_nan=False, allow_infinity=False, min_value=-(2.0**127), max_value=2.0**127
)
category = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\x00"), max_size=6)
special = st.sampled_from(["", " ", "nan", "inf", "1e39", "x", " 7 ", '"3"', EMPTY_SENTINEL, "1_0"])
cell = st.one_of(
    finite32.map(lambda v: repr(float(v))),
    finite32.map(lambda v: f"{v:.9g}"),
    st.integers(-(10**12), 10**12).map(str),
    special,
)
plain = st.one_of(finite32.map(lambda v: f"{v:.9g}"), st.just(""))
table = st.lists(
    st.one_of(
        st.tuples(category, cell, cell, category),
        st.tuples(st.just("k"), plain, plain, st.sampled_from(["a", "", "b c"])),
    ),
    min_size=1,
    max_size=120,
)


def _write(rows: list[tuple[str, str, str, str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "x1", "x2", "color"])
    for ident, a, b, color in rows:
        # numbers go out raw (a quoted number is still a number), text is quoted as needed
        line = io.StringIO()
        csv.writer(line, lineterminator="").writerow([ident])
        tail = io.StringIO()
        csv.writer(tail, lineterminator="").writerow([color])
        out.write(f"{line.getvalue()},{a},{b},{tail.getvalue()}\n")
    return out.getvalue()


@SETTINGS
@given(table)
def test_all_paths_agree(rows: list[tuple[str, str, str, str]]) -> None:
    text = _write(rows)
    slow = decode_with(text, "slow", chunk_rows=50)
    for paths in ("all", "loadtxt"):
        fast = decode_with(text, paths, chunk_rows=50)
        assert same_batch(fast[0], slow[0]), paths
        assert fast[1] == slow[1], paths


def _json_number_agrees(text: str) -> None:
    try:
        value = csv_json.JSON_NUMBERS.decode(b"[" + text.encode() + b"]")[0]
    except msgspec.DecodeError:
        return  # outside JSON (or out of range): the loadtxt path reads it instead
    assert value == float(text) or (value == 0 and float(text) == 0), text


json_decimal = st.builds(
    lambda sign, whole, frac, exp: f"{sign}{whole}{frac}{exp}",
    st.sampled_from(["", "-"]),
    st.one_of(st.just("0"), st.from_regex(r"[1-9][0-9]{0,24}", fullmatch=True)),
    st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,25}", fullmatch=True)),
    st.one_of(st.just(""), st.integers(-340, 320).map(lambda e: f"e{e}")),
)


@SETTINGS
@given(json_decimal)
def test_json_numbers_round_like_float(text: str) -> None:
    _json_number_agrees(text)


@SETTINGS
@given(st.floats(allow_nan=False, allow_infinity=False, min_value=0.0), st.integers(-1, 1))
def test_json_numbers_round_halfway_cases_like_float(value: float, nudge: int) -> None:
    """The exact midpoint between two doubles (and its neighbours) is the hardest input."""
    upper = math.nextafter(value, math.inf)
    if not math.isfinite(upper):
        return
    with localcontext() as context:
        context.prec = 1200  # exact midpoints of doubles need up to ~1100 digits
        middle = (Decimal(value) + Decimal(upper)) / 2
    digits = format(middle, "f").rstrip("0").rstrip(".") if middle else "0"
    if nudge and "." in digits:
        last = int(digits[-1]) + nudge
        if 0 <= last <= 9:
            digits = digits[:-1] + str(last)
    _json_number_agrees(digits)


@pytest.mark.parametrize(
    "cell",
    [
        "1.5",
        "",
        "-0",
        "1E5",
        "12345678901234567890123",
        ".5",
        "+1",
        "01",
        "1.",
        " 2",
        "null",
        "nan",
        "abc",
        "1e400",
        "1e39",
    ],
)
def test_json_path_leaves_what_json_cannot_read_to_the_slow_path(
    cell: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = f"{HEADER}\na,{cell},1,red\nb,2,,x\nc,3,3\nd,4,4,y\n"
    used = []
    original = CsvLayout.parse_json

    def spy(self: CsvLayout, data: bytes, n: int) -> Any:
        result = original(self, data, n)
        used.append(result is not None)
        return result

    monkeypatch.setattr(CsvLayout, "parse_json", spy)
    got = decode(text)
    assert used == [True]
    expected = decode_with(text, "slow")
    assert same_batch(got[0], expected[0]) and got[1] == expected[1]
    assert RowError(3, None, "expected 4 fields, got 3") in got[1]


@pytest.mark.parametrize(
    "category", ["tab\there", "back\\slash", "caf\u00e9", "", " spaced ", "\u2028", "{[,]}"]
)
def test_json_path_strings_are_the_raw_field_text(category: str) -> None:
    line = f"a,1,2,{csv_format.csv_field(category)}"
    got = decode(f"{HEADER}\n{line}\n")
    assert got[1] == [] and got[0].categorical.tolist() == [[category]]
    assert same_batch(got[0], decode_with(f"{HEADER}\n{line}\n", "slow")[0])


@SETTINGS
@given(
    st.lists(
        st.tuples(finite32, finite32, category.filter(lambda c: c.strip() == c)),
        min_size=1,
        max_size=50,
    )
)
def test_valid_tables_round_trip_exactly(rows: list[tuple[float, float, str]]) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "x1", "x2", "color"])
    for i, (a, b, color) in enumerate(rows):
        writer.writerow([f"id{i}", f"{a:.9g}", str(np.float32(b)), color])
    batch, errors, _ = decode(out.getvalue(), chunk_rows=8)
    assert errors == []
    expected = np.array([[a, b] for a, b, _ in rows], dtype=np.float32)
    assert np.array_equal(batch.numeric, expected)
    assert batch.categorical[:, 0].tolist() == [c for _, _, c in rows]
    assert batch.ids == [f"id{i}" for i in range(len(rows))]
    assert batch.rows.tolist() == list(range(1, len(rows) + 1))


BAD_CELLS = {
    "word": ("x1", "expected a number, got 'oops'", "oops"),
    "nan": ("x1", "non-finite number", "nan"),
    "huge": ("x2", "number out of float32 range", "1e39"),
}


@SETTINGS
@given(
    st.integers(1, 200),
    st.lists(
        st.tuples(st.integers(0, 199), st.sampled_from([*BAD_CELLS, "short", "long"])), max_size=15
    ),
    st.integers(1, 64),
)
def test_injected_bad_rows_are_found_and_good_rows_kept(
    n: int, bad: list[tuple[int, str]], chunk_rows: int
) -> None:
    kinds = {i: kind for i, kind in bad if i < n}
    lines = []
    for i in range(n):
        a, b = f"{i}.5", f"{-i}"
        kind = kinds.get(i)
        line = f"r{i},{a},{b},c{i % 3}"
        if kind in BAD_CELLS:
            column, _, value = BAD_CELLS[kind]
            line = f"r{i},{value},{b},c" if column == "x1" else f"r{i},{a},{value},c"
        elif kind == "short":
            line = f"r{i},{a}"
        elif kind == "long":
            line += ",extra"
        lines.append(line)
    batch, errors, sizes = decode(HEADER + "\n" + "\n".join(lines) + "\n", chunk_rows=chunk_rows)
    expected = []
    for i in sorted(kinds):
        kind = kinds[i]
        if kind in BAD_CELLS:
            expected.append(RowError(i + 1, BAD_CELLS[kind][0], BAD_CELLS[kind][1]))
        else:
            expected.append(
                RowError(i + 1, None, f"expected 4 fields, got {2 if kind == 'short' else 5}")
            )
    assert errors == expected
    good = [i for i in range(n) if i not in kinds]
    assert batch.rows.tolist() == [i + 1 for i in good]
    assert batch.numeric.tolist() == [[i + 0.5, -i] for i in good]
    assert batch.ids == [f"r{i}" for i in good]
    assert max(sizes) <= chunk_rows


def test_fill_empty_fields() -> None:
    s = EMPTY_SENTINEL.encode()
    assert (
        fill_empty_fields(b",a,,b,\n,\nc")
        == s + b",a," + s + b",b," + s + b"\n" + s + b"," + s + b"\nc"
    )
    assert fill_empty_fields(b"") == s


# ------------------------------------------------------------------------------ encoder
def _encode(batch: Batch, probabilities: np.ndarray, **kw: Any) -> str:
    sink = io.BytesIO()
    encoder = CsvEncoder(
        sink, **{"id_column": "id", "classes": ["no", "yes"], "class_names": ["no", "yes"], **kw}
    )
    encoder.write(batch, probabilities, probabilities.argmax(axis=1))
    encoder.close()
    return sink.getvalue().decode()


def test_encoder_writes_header_ids_labels_and_round_trippable_floats() -> None:
    rng = np.random.default_rng(0)
    p = rng.random((500, 1)).astype(np.float32)
    probabilities = np.hstack([p, 1 - p]).astype(np.float32)
    ids: list[Any] = [f"id,{i}" if i % 2 else f'q"{i}' for i in range(500)]
    ids[3] = None
    batch = Batch(
        np.arange(1, 501), np.zeros((500, 0), np.float32), np.zeros((500, 0), object), ids
    )
    text = _encode(batch, probabilities)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["row", "id", "label", "probability_no", "probability_yes"]
    assert len(rows) == 501
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(1, 501)]
    assert [r[1] for r in rows[1:]] == ["" if v is None else v for v in ids]
    assert [r[2] for r in rows[1:]] == ["no" if a >= b else "yes" for a, b in probabilities]
    back = np.array([[float(r[3]), float(r[4])] for r in rows[1:]], dtype=np.float32)
    assert np.array_equal(back, probabilities)
    assert all(len(r[3].replace(".", "").replace("-", "").lstrip("0")) <= 9 for r in rows[1:])


def test_encoder_without_rows_or_ids_and_with_int_classes() -> None:
    sink = io.BytesIO()
    encoder = CsvEncoder(sink, id_column=None, classes=[0, 1], class_names=["0", "1"])
    encoder.close()
    assert sink.getvalue() == b"row,label,probability_0,probability_1\n"


def test_encoder_refuses_id_column_named_like_an_output_column() -> None:
    with pytest.raises(InvalidInput):
        CsvEncoder(io.BytesIO(), id_column="label", classes=[0, 1], class_names=["0", "1"])


def test_decoded_output_of_the_module_constant() -> None:
    assert csv_format.FORMAT.name == "csv" and csv_format.FORMAT.extensions == (".csv",)


# ---------------------------------------------------------------------- pyarrow fast path
ARROW_CASES = [
    "a,b,k,id\n1,2,x,r1\n3,4,y,r2\n",
    "a,b,k,id\n1,,x,r1\n,4,,r2\n",  # empty numeric = missing, empty category = ""
    "a,b,k,id\n1,nan,x,r1\n3,4,y,r2\n",  # a nan literal is a row error
    "a,b,k,id\n1,inf,x,r1\n3,1e39,y,r2\n5,6,z,r3\n",  # non-finite / beyond float32
    "a,b,k,id\n1,two,x,r1\n3,4,y,r2\n",  # text in a number
    "a,b,k,id\n1,2,x\n3,4,y,r2\n",  # a field short
    "a,b,k,id\n1,2,x,r1\n\n3,4,y,r2\n",  # a blank line
    "a,b,k,id\n1.5e-3,-0.25,x,r1\n",
]


@pytest.mark.parametrize("text", ARROW_CASES)
def test_arrow_path_matches_exact_paths(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where pyarrow is installed it decodes quote-free chunks; results must not change."""
    import io

    schema = InputSchema(["a", "b"], ["k"], id_column="id")

    def run(engine: str) -> list[tuple[list[int], list[list[float]], list[list[str]], Any, Any]]:
        out = []
        for batch, errors in CsvFormat(engine=engine).decode(io.BytesIO(text.encode()), schema):
            out.append(
                (
                    batch.rows.tolist(),
                    np.nan_to_num(batch.numeric, nan=-7.0).tolist(),
                    batch.categorical.tolist(),
                    batch.ids,
                    [e.to_dict() for e in errors],
                )
            )
        return out

    assert run("auto") == run("numpy")


def test_arrow_path_takes_clean_chunks_and_declines_doubtful_ones() -> None:
    layout = CsvLayout(
        InputSchema(["a", "b"], ["k"], id_column="id"),
        ["a", "b", "k", "id"],
        arrow=CsvFormat(engine="arrow").arrow,
    )
    taken = layout.parse_arrow(b"1,2,x,r1\n,4,,r2\n", 2)
    assert taken is not None
    rows, numeric, categorical, ids, fits = taken
    assert rows.tolist() == [0, 1] and categorical.tolist() == [["x"], [""]]
    assert math.isnan(numeric[1, 0]) and ids is not None and ids.to_pylist() == ["r1", "r2"]
    assert numeric.dtype == np.float32 and fits.tolist() == [True, True]
    # beyond float32, and just beyond it though it rounds to float32's largest value
    edge = f"{FLOAT32_MAX * (1 + 2**-30)!r}".encode()
    taken = layout.parse_arrow(b"1e39,2,x,r1\n3,-" + edge + b",y,r2\n5,6,z,r3\n", 3)
    assert taken is not None and taken[4].tolist() == [False, False, True]
    assert layout.parse_arrow(b"1,nan,x,r1\n", 1) is None
    assert layout.parse_arrow(b",nan,x,r1\n", 1) is None  # a missing value does not hide it
    assert layout.parse_arrow(b"1,two,x,r1\n", 1) is None
    assert layout.parse_arrow(b"1,2,x\n", 1) is None


# ------------------------------------------------------------- Arrow encoder = Python encoder
any32 = st.floats(width=32, allow_nan=True, allow_infinity=True)


@SETTINGS
@given(st.lists(any32, min_size=1, max_size=50))
def test_round_significant_is_what_arrow_writes_for_significant_text(values: list[float]) -> None:
    """The two encoders' float texts agree: Arrow's shortest text of the rounded value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = np.asarray(values, dtype=np.float32)
    written = pc.cast(pa.array(csv_format.round_significant(array)), pa.string()).to_pylist()
    assert written == [csv_format.significant_text(float(v)) for v in array]
    finite = np.isfinite(array)
    back = np.asarray([float(t) for t in written], dtype=np.float32)
    assert np.array_equal(back[finite], array[finite])  # nine digits read back exactly


any64 = st.floats(allow_nan=True, allow_infinity=True)
PROBABILITY_LIKE = [0.0, -0.0, 1.0, 1e-6, 9.99999e-6, 1e-5, 3.0398e-6, 1e9, 1e10, 2.5e16]


@SETTINGS
@given(st.lists(any32 | any64 | st.sampled_from(PROBABILITY_LIKE), max_size=60))
def test_significant_texts_in_bulk_are_significant_text(values: list[float]) -> None:
    """The bulk writer (msgspec plus fix-ups) gives every value's own text, for float32 and
    float64 values, whole numbers, both sides of msgspec's exponent switch, and non-finite."""
    array = np.asarray(values, dtype=np.float64)
    assert csv_format.significant_texts(array) == [
        csv_format.significant_text(float(v)) for v in array
    ]


def test_significant_texts_of_a_matrix_go_column_by_column() -> None:
    matrix = np.asarray([[0.25, 0.75], [1.0, 0.0], [3e-6, 0.999997]], dtype=np.float32)
    assert csv_format.significant_texts(matrix.T) == [
        "0.25",
        "1",
        "0.00000300000011",
        "0.75",
        "0",
        "0.99999702",
    ]


def test_significant_text_examples() -> None:
    cases = [(0.5, "0.5"), (1.0, "1"), (0.0, "0"), (-0.0, "-0"), (1e-6, "0.000001")]
    cases += [(1.5e-7, "1.5e-7"), (1e9, "1000000000"), (1.5e10, "1.5e+10"), (12.5, "12.5")]
    assert [(v, csv_format.significant_text(v)) for v, _ in cases] == cases


def _both_encoders(
    batch: Batch, probabilities: np.ndarray, monkeypatch: pytest.MonkeyPatch, **kw: Any
) -> tuple[str, str]:
    texts = []
    for engine in ("arrow", "numpy"):
        texts.append(_encode(batch, probabilities, engine=engine, **kw))
    return texts[0], texts[1]


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.text(max_size=5), st.integers(-5, 5)),
            st.floats(0, 1, width=32),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_arrow_encoder_writes_the_same_bytes_as_the_python_encoder(
    rows: list[tuple[Any, float]],
) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        n = len(rows)
        p = np.asarray([[v] for _, v in rows], dtype=np.float32)
        probabilities = np.hstack([p, 1 - p]).astype(np.float32)
        batch = Batch(
            np.arange(1, n + 1),
            np.zeros((n, 0), np.float32),
            np.zeros((n, 0), object),
            [i for i, _ in rows],
        )
        arrow, python = _both_encoders(batch, probabilities, monkeypatch)
        assert arrow == python


def test_arrow_encoder_is_used_where_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that could not fail if the Arrow path were silently never taken."""
    encoder = CsvEncoder(io.BytesIO(), id_column="id", classes=["a", "b"], class_names=["a", "b"])
    batch = Batch(np.arange(1, 3), np.zeros((2, 0)), np.zeros((2, 0), object), ["x", "y"])
    probabilities = np.asarray([[0.25, 0.75], [1.0, 0.0]], dtype=np.float32)
    assert encoder._write_arrow(batch, probabilities, np.asarray([1, 0])) == (
        b"1,x,b,0.25,0.75\n2,y,a,1,0\n"
    )
    batch.ids = ["x,1", "y"]  # needs quoting: the Python path writes it
    assert encoder._write_arrow(batch, probabilities, np.asarray([1, 0])) is None


def test_arrow_ids_go_back_out_as_parsed_and_read_as_a_list() -> None:
    """Ids parsed by pyarrow reach the Arrow writer as its own array; to anyone else (HTTP,
    JSON, Parquet, ``Batch.take``) they are a plain list."""
    import pyarrow as pa

    from skyscore.formats.csv import ArrowTexts

    texts = ArrowTexts(pa.array(["x", "y", "z"]))
    assert (
        len(texts) == 3 and texts[1] == "y" and texts[-1] == "z" and list(texts) == ["x", "y", "z"]
    )
    assert texts == ["x", "y", "z"] and texts == ["x", "y", "z"] and texts != ["x"]
    batch = Batch(np.arange(1, 4), np.zeros((3, 0)), np.zeros((3, 0), object), texts)
    assert batch.take(np.array([True, False, True])).ids == ["x", "z"]
    probabilities = np.asarray([[0.25, 0.75], [1.0, 0.0], [0.5, 0.5]], dtype=np.float32)
    labels = np.asarray([1, 0, 0])
    encoder = CsvEncoder(io.BytesIO(), id_column="id", classes=["a", "b"], class_names=["a", "b"])
    expected = b"1,x,b,0.25,0.75\n2,y,a,1,0\n3,z,a,0.5,0.5\n"
    assert encoder._write_arrow(batch, probabilities, labels) == expected
    listed = Batch(batch.rows, batch.numeric, batch.categorical, ["x", "y", "z"])
    assert encoder._write_arrow(listed, probabilities, labels) == expected
    schema = InputSchema(["a"], [], id_column="id")
    (parsed, errors), *_ = CsvFormat().decode(io.BytesIO(b"a,id\n1,p\n2,q\n"), schema)
    assert isinstance(parsed.ids, ArrowTexts) and parsed.ids == ["p", "q"] and not errors
    # split over threads, a short chunk has empty Arrow chunks; the writer must not see them
    assert isinstance(parsed.ids.array, pa.Array)
    assert encoder._write_arrow(parsed, probabilities[:2], labels[:2]) == (
        b"1,p,b,0.25,0.75\n2,q,a,1,0\n"
    )


def test_arrow_parse_splits_a_chunk_over_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    pa_csv = find_pyarrow()
    assert pa_csv is not None
    real = pa_csv[1].read_csv

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["read_options"].use_threads)
        return real(*args, **kwargs)

    monkeypatch.setattr(pa_csv[1], "read_csv", spy)
    schema, header = InputSchema(["a", "b"], ["k"], id_column="id"), ["a", "b", "k", "id"]
    layout = CsvLayout(schema, header, arrow=CsvFormat(engine="arrow").arrow)
    data = b"".join(b"%d,2,x,r%d\n" % (i, i) for i in range(200))
    assert layout.parse_arrow(data, 200) is not None
    one_thread = CsvLayout(schema, header, arrow=CsvFormat(engine="arrow", arrow_blocks=1).arrow)
    assert one_thread.parse_arrow(data, 200) is not None
    assert calls == [True, False]
    long_row = b"1,2," + b"k" * len(data) + b",r\n"  # longer than a quarter of the chunk
    calls.clear()
    parsed = layout.parse_arrow(data + long_row, 201)
    assert parsed is not None and parsed[2][-1, 0] == "k" * len(data)
    assert calls == [True, False]  # retried in one block


def test_engine_is_an_argument_not_process_state() -> None:
    """The engine is chosen per format object: ``numpy`` never touches pyarrow, and choosing
    it leaves the default format (and Arrow's process-wide memory pool) as they were."""
    import pyarrow as pa

    before = pa.default_memory_pool().backend_name
    numpy_only = CsvFormat(engine="numpy")
    assert numpy_only.arrow is None
    data = (HEADER + "\n" + "".join(f"r{i},{i},2,red\n" for i in range(300))).encode()
    (batch, errors), *_ = numpy_only.decode(io.BytesIO(data), SCHEMA)
    assert len(batch) == 300 and not errors and not isinstance(batch.ids, csv_format.ArrowTexts)
    (batch, errors), *_ = CsvFormat(engine="arrow").decode(io.BytesIO(data), SCHEMA)
    assert isinstance(batch.ids, csv_format.ArrowTexts)
    assert csv_format.FORMAT.engine == "auto"
    assert pa.default_memory_pool().backend_name == before
    with pytest.raises(ValueError, match="engine"):
        CsvFormat(engine="fast")


def test_parse_workers_stop_with_the_consumer() -> None:
    """Where pyarrow parses chunks on worker threads, a consumer that stops early (an error
    elsewhere, a cancelled job) leaves no parsing thread behind."""
    import threading

    assert find_pyarrow() is not None
    data = HEADER + "\n" + "".join(f"r{i},{i},2,red\n" for i in range(5_000))
    chunks = CsvFormat().decode(io.BytesIO(data.encode()), SCHEMA, chunk_rows=100)
    first, errors = next(chunks)
    assert len(first) == 100 and not errors
    assert any(t.name.startswith("skyscore-parse") for t in threading.enumerate())
    chunks.close()
    assert not any(t.name.startswith("skyscore-parse") for t in threading.enumerate())


@pytest.mark.parametrize("engine", ["arrow", "numpy"])
@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 100])
@pytest.mark.parametrize(
    "body",
    [
        "\n\n\x01",  # blank lines, then one bad row
        "\n\n\x01\n1,2,1.5,red\n",
        "\n\n1,2,1.5,red\n\x01",
        "1,2,1.5,red\n\n\n\n3,4,0.5,blue\n\n5,6,7,red\n",
    ],
)
def test_blank_lines_are_no_rows_whatever_the_chunks(
    engine: str, chunk_rows: int, body: str
) -> None:
    """Rows are numbered 1, 2, ... over the records, blank lines left out, in every chunking
    (found by the decoder properties: with the arrow engine's decode workers, the blank lines
    of one chunk shifted the row numbers of the next)."""
    data = f"{HEADER}\n{body}".encode()
    rows: list[int] = []
    for batch, errors in CsvFormat(engine=engine).decode(
        io.BytesIO(data), SCHEMA, chunk_rows=chunk_rows
    ):
        rows += batch.rows.tolist() + [e.row for e in errors]
    expected = [line for line in body.split("\n") if line]
    assert sorted(rows) == list(range(1, len(expected) + 1))
