"""Batch scoring end to end: outputs, error report, manifest, atomicity, threads, memory."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
import tracemalloc
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from skyscore.batch.pipeline import Observer, ScoreReport, score_path, score_stream
from skyscore.errors import FormatMismatch, InvalidInput
from skyscore.formats import FORMATS
from skyscore.model.card import Feature, ModelCard, OnnxInfo, TrainingInfo, sha256_hex
from skyscore.model.predictor import Predictor
from skyscore.model.schema import Batch, InputSchema

COLORS = ["red", "green", "blue"]


# ------------------------------------------------------------------------------- models
def _tiny_onnx() -> bytes:
    """softmax([x1, x2, code(color)] @ W): a real two-input graph, built in milliseconds."""
    from onnx import TensorProto, helper, numpy_helper

    weights = np.array([[0.0, 1.0], [0.0, -1.0], [0.0, 0.5]], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node(
                "CategoryMapper",
                ["categorical"],
                ["code"],
                domain="ai.onnx.ml",
                cats_strings=COLORS,
                cats_int64s=[0, 1, 2],
                default_int64=-1,
            ),
            helper.make_node("Cast", ["code"], ["code_f"], to=TensorProto.FLOAT),
            helper.make_node("Concat", ["numeric", "code_f"], ["features"], axis=1),
            helper.make_node("MatMul", ["features", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "tiny",
        [
            helper.make_tensor_value_info("numeric", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("categorical", TensorProto.STRING, ["N", 1]),
        ],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
    )
    model.ir_version = 8
    data: bytes = model.SerializeToString()
    return data


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    data = _tiny_onnx()
    card = ModelCard(
        name="tiny-scorer",
        version="3",
        created_at="2026-01-01T00:00:00Z",
        target="label",
        id_column="id",
        features=[
            Feature(name="x1", kind="numeric"),
            Feature(name="x2", kind="numeric"),
            Feature(name="color", kind="categorical", categories=COLORS),
        ],
        classes=["no", "yes"],
        metrics={},
        training=TrainingInfo(
            data_uri="memory://",
            data_sha256="0" * 64,
            rows=0,
            train_rows=0,
            holdout_rows=0,
            seed=0,
            estimator="tiny",
        ),
        onnx=OnnxInfo(
            sha256=sha256_hex(data),
            size_bytes=len(data),
            opset=17,
            numeric_input="numeric",
            categorical_input="categorical",
            probabilities_output="probabilities",
            parity_max_abs_diff=0.0,
            parity_rows=0,
        ),
    )
    return Predictor(card, data)


class FakePredictor:
    """Same attributes as Predictor; can fail on a given chunk."""

    def __init__(self, fail_on_chunk: int | None = None) -> None:
        self.schema = InputSchema(["x1", "x2"], ["color"], id_column="id")
        self.classes = [0, 1]
        self.class_names = ["0", "1"]
        self.name = "fake"
        self.version = "1"
        self.calls = 0
        self._fail = fail_on_chunk

    def predict_proba(self, batch: Batch) -> np.ndarray:
        self.calls += 1
        if self._fail is not None and self.calls >= self._fail:
            raise RuntimeError("inference exploded")
        p = 1.0 / (1.0 + np.exp(-np.nan_to_num(batch.numeric[:, 0])))
        return np.stack([1 - p, p], axis=1).astype(np.float32)

    def label_indices(self, probabilities: np.ndarray) -> np.ndarray:
        return probabilities.argmax(axis=1)


def write_csv(path: Path, rows: int, *, bad: frozenset[int] = frozenset()) -> Path:
    lines = ["id,x1,x2,color"]
    for i in range(1, rows + 1):
        x1 = "oops" if i in bad else f"{(i % 17) / 4 - 2:.2f}"
        lines.append(f"r{i},{x1},{(i % 5) - 2},{COLORS[i % 3]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------- happy path
def test_score_csv_with_a_real_onnx_model(predictor: Predictor, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", 500)
    output = tmp_path / "out" / "scores.csv"
    output.parent.mkdir()
    report = score_path(source, output, predictor, chunk_rows=64)

    assert isinstance(report, ScoreReport)
    assert (report.rows_read, report.rows_scored, report.rows_failed) == (500, 500, 0)
    assert report.chunks == 8
    rows = read_csv(output)
    assert list(rows[0]) == ["row", "id", "label", "probability_no", "probability_yes"]
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(1, 501)]
    batch, _ = predictor.schema.records_to_batch(
        [{"x1": (i % 17) / 4 - 2, "x2": (i % 5) - 2, "color": COLORS[i % 3]} for i in range(1, 501)]
    )
    expected = predictor.predict_proba(batch)
    got = np.array([[float(r["probability_no"]), float(r["probability_yes"])] for r in rows])
    assert np.array_equal(got.astype(np.float32), expected)
    assert [r["label"] for r in rows] == ["no" if a >= b else "yes" for a, b in expected]

    assert not (tmp_path / "out" / "scores.csv.errors.jsonl").exists()
    manifest = json.loads((tmp_path / "out" / "scores.csv.manifest.json").read_text())
    assert manifest["input"] == "in.csv"
    assert manifest["input_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert manifest["input_bytes"] == source.stat().st_size
    assert manifest["format"] == manifest["output_format"] == "csv"
    assert manifest["output"] == "scores.csv" and manifest["errors"] is None
    assert manifest["output_bytes"] == output.stat().st_size
    assert (manifest["rows_read"], manifest["rows_scored"], manifest["rows_failed"]) == (
        500,
        500,
        0,
    )
    assert manifest["model"] == {
        "name": "tiny-scorer",
        "version": "3",
        "onnx_sha256": predictor.card.onnx.sha256,
    }
    assert set(manifest["timings_s"]) == {"decode", "infer", "encode", "observe", "total"}
    assert manifest["duration_s"] > 0
    started = datetime.fromisoformat(manifest["started_at"])
    assert datetime.fromisoformat(manifest["finished_at"]) >= started
    assert manifest["first_errors"] == []
    assert leftovers(output.parent) == []


def test_bad_rows_go_to_the_error_report(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", 300, bad=frozenset({2, 150, 299}))
    output = tmp_path / "out.csv"
    report = score_path(source, output, FakePredictor(), chunk_rows=50)
    assert (report.rows_read, report.rows_scored, report.rows_failed) == (300, 297, 3)
    assert [r["id"] for r in read_csv(output)] == [
        f"r{i}" for i in range(1, 301) if i not in {2, 150, 299}
    ]
    errors = [json.loads(x) for x in (tmp_path / "out.csv.errors.jsonl").read_text().splitlines()]
    assert errors == [
        {"row": r, "column": "x1", "reason": "expected a number, got 'oops'"} for r in (2, 150, 299)
    ]
    manifest = json.loads((tmp_path / "out.csv.manifest.json").read_text())
    assert manifest["rows_failed"] == 3 and manifest["errors"] == "out.csv.errors.jsonl"
    assert manifest["first_errors"] == errors

    write_csv(source, 10)  # a clean re-run removes the stale report
    score_path(source, output, FakePredictor())
    assert not (tmp_path / "out.csv.errors.jsonl").exists()
    assert len(read_csv(output)) == 10


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet"])
def test_every_format_writes_its_own_format(fmt: str, tmp_path: Path) -> None:
    records = [{"id": i, "x1": i / 10, "x2": None, "color": COLORS[i % 3]} for i in range(120)]
    records[7] = {"id": 7, "x1": "bad", "x2": 1, "color": "red"}
    source = tmp_path / f"in.{fmt}"
    if fmt == "jsonl":
        source.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif fmt == "json":
        source.write_text(json.dumps(records))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        del records[7]
        pq.write_table(pa.Table.from_pylist(records), source)
    output = tmp_path / f"out.{fmt}"
    report = score_path(source, output, FakePredictor(), chunk_rows=32)
    expected_ids = [r["id"] for r in records if r["x1"] != "bad"]
    assert report.rows_scored == len(expected_ids)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(output)
        assert table.column_names == ["row", "id", "label", "probability_0", "probability_1"]
        assert table.column("id").to_pylist() == expected_ids
    else:
        text = output.read_text()
        objects = json.loads(text) if fmt == "json" else [json.loads(x) for x in text.splitlines()]
        assert [o["id"] for o in objects] == expected_ids
        assert set(objects[0]) == {"row", "id", "label", "probabilities"}
        assert report.rows_failed == 1 and report.first_errors[0].row == 8


def test_output_format_can_differ(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", 20)
    output = tmp_path / "out.jsonl"
    score_path(source, output, FakePredictor(), output_fmt="jsonl")
    objects = [json.loads(x) for x in output.read_text().splitlines()]
    assert [o["id"] for o in objects] == [f"r{i}" for i in range(1, 21)]


def test_manifest_extra_and_observers(tmp_path: Path) -> None:
    class Counter:
        def __init__(self) -> None:
            self.rows = 0
            self.calls = 0

        def observe(self, batch: Batch, probabilities: np.ndarray) -> None:
            assert probabilities.shape == (len(batch), 2)
            self.calls += 1
            self.rows += len(batch)

    counter = Counter()
    assert isinstance(counter, Observer)
    source = write_csv(tmp_path / "in.csv", 100, bad=frozenset(range(1, 11)))
    report = score_path(
        source,
        tmp_path / "out.csv",
        FakePredictor(),
        chunk_rows=10,
        observers=[counter],
        manifest_extra=lambda r: {"drift": {"rows": r.rows_scored}},
    )
    assert counter.rows == report.rows_scored == 90
    assert counter.calls == 9  # the first chunk had no good row: not observed
    manifest = json.loads((tmp_path / "out.csv.manifest.json").read_text())
    assert manifest["drift"] == {"rows": 90}


# ------------------------------------------------------------------------------- failures
def test_failure_midway_leaves_no_output_and_keeps_the_old_one(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", 1000, bad=frozenset({5}))
    output = tmp_path / "out.csv"
    output.write_text("previous results\n")
    with pytest.raises(RuntimeError, match="exploded"):
        score_path(source, output, FakePredictor(fail_on_chunk=3), chunk_rows=100)
    assert output.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"]
    assert not any(t.name == "skyscore-decode" for t in threading.enumerate())


def test_decoder_errors_propagate_from_the_producer_thread(tmp_path: Path) -> None:
    good = json.dumps({"id": 1, "x1": 1, "x2": 2, "color": "red"})
    source = tmp_path / "in.json"
    source.write_text("[" + ",".join([good] * 3000) + ', {"x1": ]')
    with pytest.raises(InvalidInput, match="invalid JSON"):
        score_path(source, tmp_path / "out.json", FakePredictor(), chunk_rows=100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.json"]

    missing = tmp_path / "missing.csv"
    missing.write_text("id,x1,color\n1,2,red\n")
    with pytest.raises(InvalidInput) as caught:
        score_path(missing, tmp_path / "out.csv", FakePredictor())
    assert caught.value.field == "x2"
    assert not (tmp_path / "out.csv").exists()


def test_content_mismatch_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(b"PAR1\x00\x00binary")
    with pytest.raises(FormatMismatch, match=r"in\.csv does not look like CSV"):
        score_path(source, tmp_path / "out.csv", FakePredictor())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_output_may_not_be_the_input(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", 3)
    with pytest.raises(Exception, match="overwrite the input"):
        score_path(source, source, FakePredictor())
    assert len(read_csv(source)) == 3


# ------------------------------------------------------------------------------- streams
class _Generated:
    """A non-seekable stream of ``rows`` CSV rows, produced on demand."""

    def __init__(self, rows: int) -> None:
        self._parts = self._generate(rows)
        self._buffer = b""
        self.produced = 0

    @staticmethod
    def _generate(rows: int) -> Iterator[bytes]:
        yield b"id,x1,x2,color,notes\n"
        notes = "an unused column " * 3  # makes the input bigger than what is kept
        for start in range(0, rows, 2000):
            block = [
                f"{i},{i % 7 - 3}.25,{i % 11},{COLORS[i % 3]},{notes}"
                for i in range(start, min(start + 2000, rows))
            ]
            yield ("\n".join(block) + "\n").encode()

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            more = next(self._parts, b"")
            if not more:
                break
            self._buffer += more
        size = len(self._buffer) if size < 0 else size
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        self.produced += len(out)
        return out


class _Discard:
    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.bytes += len(data)
        return len(data)


def _traced_peak(rows: int) -> tuple[ScoreReport, int, _Generated, _Discard]:
    source = _Generated(rows)
    sink = _Discard()
    tracemalloc.start()
    try:
        report = score_stream(
            source,  # type: ignore[arg-type]
            sink,  # type: ignore[arg-type]
            fmt="csv",
            predictor=FakePredictor(),
            chunk_rows=4_000,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return report, peak, source, sink


def test_stream_scoring_hashes_while_streaming_in_bounded_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(FORMATS["csv"], "block_size", 64 << 10)
    rows = 200_000  # about 15 MB in, 7 MB out
    _traced_peak(100)  # first-use imports (pyarrow loads pandas where installed) are not growth
    report, peak, source, sink = _traced_peak(rows)
    assert report.rows_scored == rows and report.chunks == 50
    assert report.input_bytes == source.produced
    assert report.output_bytes == sink.bytes > 0
    expected = hashlib.sha256(b"".join(_Generated(rows)._generate(rows))).hexdigest()
    assert report.input_sha256 == expected
    # memory is a few chunks in flight, whatever the file size: 4x the rows may not cost 1.5x
    # (how many chunks wait at once depends on thread timing, so the smaller peak varies)
    _, small_peak, _, _ = _traced_peak(rows // 4)
    assert peak < 1.5 * small_peak, (peak, small_peak)
    # chunks in flight: decoding, queued, two scoring, encoding: a fraction of this 14 MB file
    assert peak < report.input_bytes / 2, f"peak traced memory {peak / 2**20:.1f} MiB"


def test_decoding_runs_in_its_own_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    original = FORMATS["csv"].decode

    def spy(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for chunk in original(*args, **kwargs):
            threads.append(threading.current_thread().name)
            yield chunk

    monkeypatch.setattr(FORMATS["csv"], "decode", spy)
    data = b"id,x1,x2,color\n" + b"".join(b"%d,1,2,red\n" % i for i in range(100))
    out = io.BytesIO()
    report = score_stream(
        io.BytesIO(data),
        out,
        fmt="csv",
        predictor=FakePredictor(),  # type: ignore[arg-type]
        chunk_rows=10,
    )
    assert report.rows_scored == 100
    assert threads and set(threads) == {"skyscore-decode"}
    assert out.getvalue().count(b"\n") == 101


def test_to_manifest_is_json_ready() -> None:
    report = ScoreReport(input_name="a.csv", format="csv", output_format="csv")
    document = report.to_manifest(output_name="b.csv")
    assert json.loads(json.dumps(document)) == document
    assert document["errors"] is None and document["rows_per_second"] == 0.0
