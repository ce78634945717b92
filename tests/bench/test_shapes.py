"""The shape matrix's synthetic tables: seeded, the promised columns, short floats."""

from pathlib import Path

import pytest
from bench.shapes import SHAPES, table_block, write_table

from bench import shapes


def test_tables_are_seeded_and_have_the_promised_columns() -> None:
    for shape in SHAPES.values():
        header, body = table_block(shape, 50, seed=3, labelled=True)
        names = header.decode().strip().split(",")
        assert sum(n.startswith("x") for n in names) == shape.numeric
        assert sum(n.startswith("cat") for n in names) == shape.categorical
        assert ("id" in names) == bool(shape.id_width) and names[-1] == "label"
        assert table_block(shape, 50, seed=3, labelled=True) == (header, body)
        lines = body.decode().splitlines()
        assert len(lines) == 50 and all(line.count(",") == len(names) - 1 for line in lines)
        if shape.id_width:
            assert all(len(line.split(",")[names.index("id")]) == shape.id_width for line in lines)


def test_short_floats_keep_few_digits() -> None:
    shape = SHAPES["short13"]
    header, body = table_block(shape, 200, seed=1, labelled=False)
    names = header.decode().strip().split(",")
    for line in body.decode().splitlines():
        for name, text in zip(names, line.split(","), strict=True):
            if name.startswith("x"):
                mantissa = text.lstrip("-").split("e")[0].replace(".", "").strip("0")
                assert len(mantissa) <= shape.digits, text


def test_large_files_repeat_whole_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shapes, "BLOCK_ROWS", 100)
    path = write_table(SHAPES["ids48"], 250, tmp_path / "t.csv", labelled=False, seed=2)
    lines = path.read_bytes().splitlines()
    assert len(lines) == 251 and lines[1] == lines[101] == lines[201]
