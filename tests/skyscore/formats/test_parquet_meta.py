"""Parquet row counts from the footer alone, checked against files pyarrow writes: several row
groups, nested and optional columns, footers larger than the first ranged read, and a run with
pyarrow made unimportable (as in the AWS function package)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skyscore.adapters.local import LocalBlobStore
from skyscore.errors import FormatMismatch, NotFound
from skyscore.formats import parquet_meta


def parquet_bytes(table: pa.Table, **options: Any) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **options)
    return buffer.getvalue()


def nested_table(rows: int) -> pa.Table:
    """Optional scalars, a dictionary-encoded string, a struct, a list of structs and a map."""
    return pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "score": pa.array([None if i % 7 == 0 else i / 3 for i in range(rows)], pa.float64()),
            "flag": pa.array([None if i % 5 == 0 else i % 2 == 0 for i in range(rows)]),
            "color": pa.array(
                [["red", "green", None][i % 3] for i in range(rows)]
            ).dictionary_encode(),
            "when": pa.array([i * 1_000_000 for i in range(rows)], pa.timestamp("us", tz="UTC")),
            "point": pa.array(
                [None if i % 11 == 0 else {"x": i, "y": str(i)} for i in range(rows)],
                pa.struct([("x", pa.int32()), ("y", pa.string())]),
            ),
            "tags": pa.array(
                [[{"k": "a", "v": [1.5, None]}] * (i % 3) for i in range(rows)],
                pa.list_(pa.struct([("k", pa.string()), ("v", pa.list_(pa.float32()))])),
            ),
            "attrs": pa.array(
                [[("a", i), ("b", None)] if i % 2 else None for i in range(rows)],
                pa.map_(pa.string(), pa.int64()),
            ),
            "price": pa.array([i * 100 for i in range(rows)], pa.decimal128(12, 2)),
        }
    )


@pytest.mark.parametrize(
    ("rows", "options"),
    [
        (0, {}),
        (1, {}),
        (1_000, {"row_group_size": 128}),
        (2_345, {"row_group_size": 1_000, "compression": "zstd", "use_dictionary": False}),
        (600, {"row_group_size": 50, "data_page_version": "2.0", "write_statistics": False}),
        (300, {"row_group_size": 7, "version": "1.0"}),
    ],
)
def test_counts_rows_of_files_pyarrow_writes(
    tmp_path: Path, rows: int, options: dict[str, Any]
) -> None:
    data = parquet_bytes(nested_table(rows), **options)
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    assert meta.num_rows == rows
    if rows > options.get("row_group_size", rows):
        assert meta.num_row_groups > 1
    assert parquet_meta.num_rows_from_tail(data, len(data)) == rows
    store = LocalBlobStore(tmp_path)
    store.write_bytes("training/m/a.parquet", data)
    assert parquet_meta.count_rows(store, "training/m/a.parquet") == rows
    assert parquet_meta.count_rows(store, "training/m/a.parquet", len(data)) == rows


def test_a_footer_larger_than_the_first_read_takes_a_second_one(tmp_path: Path) -> None:
    """Wide schemas and key-value metadata make footers of any size."""
    wide = pa.table({f"column_{i:04d}": pa.array([i, None, 3], pa.int32()) for i in range(400)})
    wide = wide.replace_schema_metadata({"notes": "x" * 100_000})
    data = parquet_bytes(wide, row_group_size=2)
    length = parquet_meta.footer_length(data[-8:])
    assert length > parquet_meta.SPECULATIVE_TAIL
    assert (
        parquet_meta.num_rows_from_tail(data[-parquet_meta.SPECULATIVE_TAIL :], len(data)) is None
    )
    store = LocalBlobStore(tmp_path)
    store.write_bytes("big.parquet", data)
    assert parquet_meta.count_rows(store, "big.parquet") == 3


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.one_of(st.integers(0, 3_000), st.integers(3_000, 3_000_000)),
    group=st.integers(1, 1 << 20),
)
def test_any_row_count(rows: int, group: int) -> None:
    """Row counts whose varints take one to four bytes, in any number of row groups."""
    table = pa.table({"b": pa.array([True], pa.bool_()).take(pa.array([0] * rows, pa.int32()))})
    data = parquet_bytes(table, row_group_size=max(group, rows // 64 or 1))
    assert parquet_meta.num_rows_from_tail(data, len(data)) == rows


def metadata_of(data: bytes) -> bytes:
    """The Thrift-encoded ``FileMetaData`` of a Parquet file."""
    return data[-8 - parquet_meta.footer_length(data[-8:]) : -8]


REAL_METADATA = metadata_of(parquet_bytes(nested_table(20), row_group_size=5))


@st.composite
def damaged_metadata(draw: st.DrawFn) -> bytes:
    """A real footer, cut short and with some bytes overwritten (to reach deep into it)."""
    data = bytearray(REAL_METADATA[: draw(st.integers(0, len(REAL_METADATA)))])
    for _ in range(draw(st.integers(0, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=200), damaged_metadata()))
def test_garbage_metadata_is_a_format_mismatch(metadata: bytes) -> None:
    """Whatever the footer holds, the answer is a count or FormatMismatch: never an
    IndexError, a hang or a huge allocation."""
    try:
        rows = parquet_meta.num_rows_from_metadata(metadata)
    except FormatMismatch:
        return
    assert rows >= 0


def test_files_that_are_not_parquet(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    good = parquet_bytes(nested_table(10))
    length = parquet_meta.footer_length(good[-8:])
    half = 12  # cut inside the schema, before num_rows
    cases = {
        "csv.parquet": b"a,b\n1,2\n3,4\n",
        "empty.parquet": b"",
        "short.parquet": b"PAR1",
        "encrypted.parquet": good[:-4] + b"PARE",
        "huge-footer.parquet": good[:-8] + (len(good) * 2).to_bytes(4, "little") + b"PAR1",
        "truncated-footer.parquet": good[: -8 - length]
        + good[-8 - length : -8 - length + half]
        + half.to_bytes(4, "little")
        + b"PAR1",
    }
    for name, data in cases.items():
        store.write_bytes(name, data)
        with pytest.raises(FormatMismatch, match=name) as caught:
            parquet_meta.count_rows(store, name)
        assert caught.value.status == 415
    with pytest.raises(NotFound):
        parquet_meta.count_rows(store, "missing.parquet")


CHILD = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "pyarrow":
                raise ImportError(f"{name} is blocked: the function package has no pyarrow")
            return None

    sys.meta_path.insert(0, Block())
    from skyscore.adapters.local import LocalBlobStore
    from skyscore.model.registry import ModelRegistry
    from skyscore.lifecycle.retrain import RetrainController
    from skyscore.adapters.local import LocalJobRunner

    store = LocalBlobStore(sys.argv[1])
    controller = RetrainController(store, ModelRegistry(store), LocalJobRunner(sys.argv[1]))
    rows, fresh = controller.new_data("m")
    print(json.dumps({"rows": rows, "files": sorted(fresh),
                      "pyarrow": any(m.startswith("pyarrow") for m in sys.modules)}))
    """
)


def test_new_labelled_rows_are_counted_without_pyarrow(tmp_path: Path) -> None:
    training = tmp_path / "training" / "m"
    training.mkdir(parents=True)
    (training / "a.parquet").write_bytes(parquet_bytes(nested_table(1_234), row_group_size=100))
    (training / "b.parquet").write_bytes(parquet_bytes(nested_table(5)))
    (training / "c.csv").write_text("x,y\n1,2\n3,4\n")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result == {
        "rows": 1_234 + 5 + 2,
        "files": ["training/m/a.parquet", "training/m/b.parquet", "training/m/c.csv"],
        "pyarrow": False,
    }
