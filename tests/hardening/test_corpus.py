"""Issue 18, item 1: bad input never crashes and never loses good rows.

Every file of the hostile corpus (``corpus/``: small text files committed, binary and big ones
written at test time by ``corpus/hostile_files.py``) is driven through the real pipelines:
``score_path`` with both CSV engines, the ``skyscore score`` command, the
:class:`~skyscore.batch.scorer.BatchScorer` on a :class:`LocalBlobStore`, and the local inbox
of a running :class:`LocalRuntime`. Each either

* is scored, and then every data row is accounted for exactly once: the row numbers in the
  output and the ``(row, column)`` pairs of the error report together are ``1..N``, exactly
  the rows the corpus says the file holds (rows scored + rows reported = data rows); or
* is refused as a whole with a clear skyscore problem (its type and words it must contain),
  leaving no output that could pass for a result.

Hostile requests (a body just over the limit, deep nesting, NaN, NUL bytes, long and
traversing model names) go to the local HTTP server and must get a 4xx problem, never a 5xx.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from skyscore.errors import SkyscoreError
from skyscore.model.predictor import Predictor
from skyscore.model.registry import ModelRegistry

CORPUS = Path(__file__).resolve().parent / "corpus"
TESTS = Path(__file__).resolve().parents[1]
for _folder in (CORPUS, TESTS):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

import hostile_files as hf  # noqa: E402

from tiny_model import tiny_card, tiny_onnx  # noqa: E402

MODEL = "tiny"
LATE = hf.late_rows()


@dataclass(frozen=True)
class Expect:
    """What a corpus file must give: ``rows`` data rows of which ``errors`` (row, column)
    are reported, the rest scored; or, with ``problem``, a file-level refusal whose problem
    type ends with it and whose message contains ``says``."""

    rows: int = 0
    errors: tuple[tuple[int, str | None], ...] = ()
    problem: str | None = None
    says: str = ""


Maker = Callable[[Path], Path]


def committed(name: str) -> Maker:
    def make(directory: Path) -> Path:
        return Path(shutil.copy(CORPUS / name, directory / name))

    return make


# name → (how to make it, what it must give). Kinds of bad input are listed in the report.
CASES: dict[str, tuple[Maker, Expect]] = {
    "empty.csv": (committed("empty.csv"), Expect(problem="invalid-input", says="empty")),
    "header_only.csv": (committed("header_only.csv"), Expect(rows=0)),
    "semicolon.csv": (
        committed("semicolon.csv"),
        Expect(problem="invalid-input", says="no column 'x1'"),
    ),
    "ragged.csv": (
        committed("ragged.csv"),
        Expect(rows=5, errors=((2, None), (3, None))),  # an all-empty row is all missing values
    ),
    "quoted_newline.csv": (committed("quoted_newline.csv"), Expect(rows=3)),
    "non_finite.csv": (
        committed("non_finite.csv"),
        Expect(rows=7, errors=((1, "x1"), (2, "x1"), (3, "x2"), (4, "x1"), (5, "x2"), (6, "x2"))),
    ),
    "numbers_as_strings.csv": (
        committed("numbers_as_strings.csv"),
        Expect(rows=6, errors=((3, "x1"), (4, "x1"), (5, "x1"))),
    ),
    "extra_columns.csv": (committed("extra_columns.csv"), Expect(rows=2)),
    "missing_column.csv": (
        committed("missing_column.csv"),
        Expect(problem="invalid-input", says="'x2'"),
    ),
    "duplicate_column.csv": (
        committed("duplicate_column.csv"),
        Expect(problem="invalid-input", says="'x2' appears twice"),
    ),
    "bom.csv": (committed("bom.csv"), Expect(rows=2)),
    "crlf.csv": (committed("crlf.csv"), Expect(rows=3, errors=((2, "x2"),))),
    "mixed.jsonl": (
        committed("mixed.jsonl"),
        Expect(
            rows=12,
            errors=(
                (2, None),
                (3, "x1"),
                (4, None),
                (5, None),
                (6, "x2"),
                (8, None),
                (9, "x1"),
                (10, "x1"),
                (11, "color"),
            ),
        ),
    ),
    "mixed.json": (
        committed("mixed.json"),
        Expect(rows=7, errors=((2, "x1"), (3, None), (4, "x2"), (5, None), (6, None))),
    ),
    "broken_array.json": (
        committed("broken_array.json"),
        Expect(problem="invalid-input", says="invalid JSON in the array"),
    ),
    "object_not_array.json": (
        committed("object_not_array.json"),
        Expect(problem="format-mismatch", says="'['"),
    ),
    "utf16.csv": (hf.utf16, Expect(problem="format-mismatch", says="UTF-16")),
    "latin1.csv": (hf.latin1_head, Expect(problem="format-mismatch", says="not UTF-8")),
    "late_bad_bytes.csv": (
        hf.late_bad_bytes,
        Expect(rows=LATE + 4, errors=((LATE + 1, None), (LATE + 2, "x2"))),
    ),
    "nul_head.csv": (hf.nul_head, Expect(problem="format-mismatch", says="NUL byte")),
    "really_gzip.csv": (hf.gzip_named_csv, Expect(problem="format-mismatch", says="gzip")),
    "bomb.csv": (hf.gzip_bomb, Expect(problem="format-mismatch", says="gzip")),
    "bomb_zip.csv": (hf.zip_bomb, Expect(problem="format-mismatch", says="ZIP")),
    "sparse.csv": (hf.sparse_after_rows, Expect(problem="invalid-input", says="longer than")),
    "sparse.parquet": (hf.sparse_parquet, Expect(problem="invalid-input", says="Parquet")),
    "deep.jsonl": (hf.deep_jsonl, Expect(rows=3, errors=((2, None),))),
    "deep.json": (hf.deep_json, Expect(rows=3, errors=((2, None),))),
    "long_names.csv": (hf.long_names, Expect(rows=2)),
    "wrong_types.parquet": (
        hf.parquet_wrong_types,
        Expect(problem="invalid-input", says="'x1'"),
    ),
    "bad_values.parquet": (
        hf.parquet_bad_values,
        Expect(rows=6, errors=((2, "x1"), (3, "x2"), (4, "x1"))),
    ),
    "truncated.parquet": (hf.parquet_truncated, Expect(problem="invalid-input", says="Parquet")),
    "footer.parquet": (hf.parquet_footer_garbage, Expect(problem="invalid-input", says="Parquet")),
}
BIG = {"bomb.csv", "bomb_zip.csv", "sparse.csv", "sparse.parquet"}  # made once per driver


# ------------------------------------------------------------------------------ outcomes
@dataclass
class Outcome:
    """What a pipeline did with one file, in the terms of :class:`Expect`."""

    scored_rows: list[int] | None = None  # row numbers in the output
    errors: list[tuple[int, str | None]] | None = None  # (row, column) of the error report
    reasons: list[str] | None = None
    problem: dict[str, Any] | None = None
    rows_read: int | None = None  # as the manifest says


def output_rows(path: Path) -> list[int]:
    """The ``row`` numbers of a predictions file, whatever its format."""
    data = path.read_bytes()
    if path.suffix == ".csv":
        return [int(r["row"]) for r in csv.DictReader(io.StringIO(data.decode()))]
    if path.suffix == ".jsonl":
        return [json.loads(line)["row"] for line in data.splitlines() if line.strip()]
    if path.suffix == ".json":
        return [r["row"] for r in json.loads(data)]
    import pyarrow.parquet as pq

    return [int(v) for v in pq.read_table(path).column("row").to_pylist()]


def error_rows(data: bytes) -> tuple[list[tuple[int, str | None]], list[str]]:
    records = [json.loads(line) for line in data.splitlines() if line.strip()]
    return [(r["row"], r["column"]) for r in records], [r["reason"] for r in records]


def check(name: str, outcome: Outcome, where: str) -> None:
    """The outcome matches the corpus' expectation; for a scored file, no row is lost."""
    expect = CASES[name][1]
    label = f"{name} via {where}"
    if expect.problem is not None:
        assert outcome.problem is not None, f"{label}: expected a {expect.problem} refusal"
        assert str(outcome.problem.get("type", "")).endswith(expect.problem), (label, outcome)
        assert expect.says in str(outcome.problem.get("detail", "")), (label, outcome)
        assert 400 <= int(outcome.problem.get("status", 500)) < 500, (label, outcome)
        return
    assert outcome.problem is None, f"{label}: refused: {outcome.problem}"
    assert outcome.scored_rows is not None and outcome.errors is not None
    assert sorted(outcome.errors) == sorted(expect.errors), (label, outcome.reasons)
    assert all(outcome.reasons or ()), label  # every error says why
    reported = [row for row, _ in outcome.errors]
    # exactly once each: scored + reported = the data rows of the file
    assert len(outcome.scored_rows) + len(reported) == expect.rows, label
    assert sorted(outcome.scored_rows + reported) == list(range(1, expect.rows + 1)), label
    if outcome.rows_read is not None:
        assert outcome.rows_read == expect.rows, label


def make(name: str, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = CASES[name][0](directory)
    assert path.name == name, (path, name)
    return path


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny() -> tuple[Any, bytes]:
    data = tiny_onnx()
    return tiny_card(data, name=MODEL), data


@pytest.fixture(scope="module")
def predictor(tiny: tuple[Any, bytes]) -> Predictor:
    card, data = tiny
    return Predictor(card, data)


def registry_at(root: Path, tiny: tuple[Any, bytes]) -> ModelRegistry:
    from skyscore.adapters.local import LocalBlobStore

    registry = ModelRegistry(LocalBlobStore(root), refresh_seconds=0)
    card = registry.register(tiny[0], tiny[1], name=MODEL)
    registry.promote(MODEL, card.version)
    return registry


def use_csv_engine(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pipeline reads CSV with ``engine`` (``FORMATS`` is what ``format_for`` reads)."""
    from skyscore import formats
    from skyscore.formats.csv import CsvFormat

    monkeypatch.setitem(formats.FORMATS, "csv", CsvFormat(engine=engine))


def score_path_outcome(path: Path, out_dir: Path, predictor: Predictor) -> Outcome:
    from skyscore.batch.pipeline import score_path

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{path.stem}.predictions{path.suffix}"
    try:
        report = score_path(path, target, predictor)
    except SkyscoreError as error:
        leftovers = [p.name for p in out_dir.iterdir()] if out_dir.exists() else []
        assert leftovers == [], f"a refused file left {leftovers}"
        return Outcome(problem=error.to_problem())
    errors_file = target.with_name(target.name + ".errors.jsonl")
    errors, reasons = error_rows(errors_file.read_bytes()) if errors_file.exists() else ([], [])
    manifest = json.loads(target.with_name(target.name + ".manifest.json").read_text())
    assert (manifest["rows_scored"], manifest["rows_failed"]) == (
        report.rows_scored,
        report.rows_failed,
    )
    assert len(errors) == report.rows_failed
    return Outcome(output_rows(target), errors, reasons, rows_read=report.rows_read)


# ------------------------------------------------------------------------------ drivers
ENGINE_CASES = [
    (name, engine)
    for name in sorted(CASES)
    for engine in (("arrow", "numpy") if name.endswith(".csv") else ("auto",))
]


@pytest.mark.parametrize(("name", "engine"), ENGINE_CASES)
def test_score_path(
    name: str, engine: str, tmp_path: Path, predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``score_path`` (what every cloud's scorer runs) on each corpus file, both CSV engines."""
    use_csv_engine(engine, monkeypatch)
    path = make(name, tmp_path / "in")
    check(name, score_path_outcome(path, tmp_path / "out", predictor), f"score_path/{engine}")


def test_cli_score(
    tmp_path: Path, tiny: tuple[Any, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    """``skyscore score`` on the whole corpus: exit 0 with counts, or exit 1 with the reason,
    never a traceback."""
    from skyscore.cli import main

    home = tmp_path / "home"
    registry_at(home, tiny)
    for name in sorted(CASES):
        expect = CASES[name][1]
        path = make(name, tmp_path / "in")
        output = tmp_path / "out" / f"{path.stem}.predictions{path.suffix}"
        output.parent.mkdir(exist_ok=True)
        code = main(
            ["--home", str(home), "score", str(path), "--model", MODEL, "--output", str(output)]
        )
        printed = capsys.readouterr()
        assert "Traceback" not in printed.err, name
        if expect.problem is not None:
            assert code == 1 and expect.says in printed.err, (name, code, printed)
            assert not output.exists(), name
            continue
        assert code == 0, (name, printed)
        errors_file = output.with_name(output.name + ".errors.jsonl")
        errors, reasons = error_rows(errors_file.read_bytes()) if errors_file.exists() else ([], [])
        check(name, Outcome(output_rows(output), errors, reasons), "skyscore score")
        scored = expect.rows - len(expect.errors)
        assert f"scored {scored:,} of {expect.rows:,} rows" in printed.out, (name, printed.out)
        if name in BIG:
            path.unlink()


def test_batch_scorer_on_a_local_store(tmp_path: Path, tiny: tuple[Any, bytes]) -> None:
    """The clouds' :class:`BatchScorer` (uploads under ``incoming/<model>/``) on a local store:
    scored files have their rows accounted for, refused ones a failure manifest and no output."""
    from skyscore.adapters.local import LocalBlobStore
    from skyscore.batch.scorer import BatchScorer

    root = tmp_path / "store"
    registry = registry_at(root, tiny)
    store = LocalBlobStore(root)
    scorer = BatchScorer(store, registry, reports=False)
    for name in sorted(CASES):
        make(name, root / "incoming" / MODEL)
        key = f"incoming/{MODEL}/{name}"
        result = scorer.score_upload(key, owner=f"test:{name}")
        stem, _, ext = name.rpartition(".")
        output = root / "predictions" / MODEL / f"{stem}.predictions.{ext}"
        manifest_path = output.with_name(output.name + ".manifest.json")
        manifest = json.loads(manifest_path.read_text())
        if result.status == "failed":
            assert manifest["status"] == "failed" and not output.exists(), name
            check(name, Outcome(problem=result.problem), "BatchScorer")
        else:
            assert result.status == "scored", (name, result)
            errors_file = output.with_name(output.name + ".errors.jsonl")
            errors, reasons = (
                error_rows(errors_file.read_bytes()) if errors_file.exists() else ([], [])
            )
            outcome = Outcome(output_rows(output), errors, reasons, rows_read=manifest["rows_read"])
            check(name, outcome, "BatchScorer")
        if name in BIG:
            (root / "incoming" / MODEL / name).unlink()


# ------------------------------------------------------------------------------ the local inbox
def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def runtime(tmp_path: Path, tiny: tuple[Any, bytes]) -> Iterator[Any]:
    from skyscore.local.runtime import LocalRuntime

    home = tmp_path / "home"
    registry = registry_at(home, tiny)
    with LocalRuntime(
        home,
        host="127.0.0.1",
        port=0,
        default_model=MODEL,
        poll_seconds=0.05,
        registry=registry,
        max_body_bytes=64 * 1024,
        log_to_stderr=False,
        retraining=False,
    ) as running:
        yield running


def test_the_inbox_scores_or_fails_every_corpus_file(runtime: Any, tmp_path: Path) -> None:
    """Every corpus file dropped into ``inbox/tiny/`` (renamed in whole, as writers should) is
    scored with its rows accounted for, or moved to ``failed/`` beside a reason; symlinks to
    files and folders outside the inbox are never read, and the runtime keeps serving."""
    home = runtime.home.root
    inbox = home / "inbox" / MODEL
    inbox.mkdir(parents=True, exist_ok=True)
    staging = tmp_path / "staging"
    for name in sorted(CASES):
        os.replace(make(name, staging), inbox / name)
    outside = tmp_path / "outside"
    secret = make("bom.csv", outside)
    before = secret.read_bytes()
    (inbox / "link.csv").symlink_to(secret)
    (home / "inbox" / "linked_folder").symlink_to(outside, target_is_directory=True)
    processed, failed = home / "processed" / MODEL, home / "failed"
    predictions = home / "predictions" / MODEL

    def settled() -> bool:
        done = {p.name for p in processed.glob("*")} | {p.name for p in failed.glob("*")}
        return all(name in done for name in CASES) and all(
            (
                predictions
                / f"{n.rpartition('.')[0]}.predictions.{n.rpartition('.')[2]}.manifest.json"
            ).exists()
            for n in CASES
            if n in done and (processed / n).exists()
        )

    wait_for(settled, "every corpus file to be scored or failed")
    for name, (_, expect) in sorted(CASES.items()):
        stem, _, ext = name.rpartition(".")
        output = predictions / f"{stem}.predictions.{ext}"
        if expect.problem is not None:
            assert (failed / name).exists(), f"{name} was not moved to failed/"
            reason = json.loads((failed / f"{name}.error.json").read_text())
            check(name, Outcome(problem=reason["problem"]), "inbox")
            assert not output.exists(), name
            continue
        assert (processed / name).exists(), name
        errors_file = output.with_name(output.name + ".errors.jsonl")
        errors, reasons = error_rows(errors_file.read_bytes()) if errors_file.exists() else ([], [])
        manifest = json.loads(output.with_name(output.name + ".manifest.json").read_text())
        outcome = Outcome(output_rows(output), errors, reasons, rows_read=manifest["rows_read"])
        check(name, outcome, "inbox")
    # the links: the target outside is untouched and was never scored under any name
    assert secret.read_bytes() == before and [p.name for p in outside.iterdir()] == ["bom.csv"]
    assert not (predictions / "link.predictions.csv").exists()
    assert not (home / "predictions" / "linked_folder").exists()
    for link in ("link.csv", "linked_folder"):  # refused with a reason, not silently ignored
        assert (failed / link).is_symlink(), link
        reason = json.loads((failed / f"{link}.error.json").read_text())
        assert "symbolic link" in reason["reason"] and reason["problem"]["status"] == 400
    assert not (inbox / "link.csv").exists() and not (home / "inbox" / "linked_folder").exists()
    with urllib.request.urlopen(runtime.url + "/v2/health/ready", timeout=10) as response:
        assert response.status == 200
