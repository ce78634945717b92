"""Shape matrix: CSV → CSV scoring on tables that are not the bench's own.

    python -m bench.shapes                  # 100k rows per table (what `make bench` runs)
    python -m bench.shapes --large          # + 2,000,000 rows and the peak-memory ratio
    python -m bench.shapes --shapes short13 --models hgb --engines zip
    python -m bench.shapes --before /tmp/old/shared   # + an earlier skyscore, same run

Four seeded synthetic tables (few numeric columns with short floats and string ids; 30
numeric + 3 categorical; 200 numeric; wide string ids), a logistic regression and an HGB model
for each. Per cell, in the same run and alternating (median of ``--runs``): skyscore's rows/s
through ``score_file`` (what ``skyscore score`` runs: the batch pipeline plus drift
monitoring), the pandas + scikit-learn baseline (``pd.read_csv`` + ``predict_proba`` +
``to_csv``), the ratio, skyscore's parse-only rows/s (the decoder alone: the limit), ONNX
Runtime alone on the decoded chunks (the model's own bound, on the pipeline's inference
threads), and the peak RSS of a fresh process at each size. ``--engines zip`` blocks ``import pyarrow`` in the
scoring processes: the dependency set of the function packages (the AWS Lambda zip).

``--before DIR`` adds a side: skyscore imported from another source tree (``DIR`` holds the
``skyscore`` package, e.g. ``git worktree add /tmp/old HEAD~1`` then ``/tmp/old/shared``),
alternating with this one, so a change is measured before/after in the same run.

Each side runs in its own long-lived worker process (imports and model loading are paid once,
outside the timings); peak memory is measured in fresh processes, one per size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from bench.report import table

OUT = Path(__file__).resolve().parent / "out"
TARGETS = {"vs baseline": ">= 3.5x", "of parse-only": ">= 80%", "memory 2M vs 100k": "<= 1.25x"}
TRAIN_ROWS = 20_000
BLOCK_ROWS = 100_000  # larger files repeat seeded 100k-row blocks (writing stays fast)


@dataclass(frozen=True)
class Shape:
    """One synthetic table: how many columns of each kind and how values are written."""

    name: str
    label: str
    numeric: int
    categorical: int = 0
    id_width: int = 0  # characters of the string id column; 0: no id column
    digits: int = 5  # significant digits of the numeric text (%.5g-style short floats)


SHAPES = {
    s.name: s
    for s in (
        Shape("short13", "13 numeric (%.5g) + string id", 13, id_width=10),
        Shape("mixed33", "30 numeric + 3 categorical + id", 30, 3, id_width=10, digits=8),
        Shape("wide200", "200 numeric (%.5g)", 200),
        Shape("ids48", "8 numeric + 48-char string id", 8, id_width=48),
    )
}
MODELS = ("logreg", "hgb")
LEVELS = (4, 12, 40)  # categories per categorical column


def _significant(values: np.ndarray, digits: int) -> np.ndarray:
    """Values rounded to ``digits`` significant digits (their shortest text is that short)."""
    magnitude = np.floor(np.log10(np.maximum(np.abs(values), 1e-300)))
    scale = 10.0 ** (digits - 1 - magnitude)
    return np.asarray(np.round(values * scale) / scale)


def table_block(shape: Shape, rows: int, seed: int, *, labelled: bool) -> tuple[bytes, bytes]:
    """``(header line, body lines)`` of ``rows`` seeded rows of ``shape``, as CSV bytes."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(rows, shape.numeric)) * rng.uniform(0.1, 1000, shape.numeric)
    numeric = _significant(numeric, shape.digits)
    columns: dict[str, Any] = {}
    if shape.id_width:
        alphabet = np.frombuffer(b"0123456789abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
        raw = alphabet[rng.integers(0, len(alphabet), (rows, shape.id_width))]
        columns["id"] = pa.array(raw.view(f"S{shape.id_width}").ravel().astype(str))
    for j in range(shape.numeric):
        columns[f"x{j:03d}"] = pa.array(numeric[:, j])
    codes = []
    for j in range(shape.categorical):
        code = rng.integers(0, LEVELS[j % len(LEVELS)], rows)
        codes.append(code)
        columns[f"cat{j}"] = pa.array(np.char.add(f"c{j}_", code.astype(str)))
    if labelled:
        standard = numeric / np.maximum(numeric.std(axis=0), 1e-9)
        weights = rng.normal(size=min(shape.numeric, 6))
        logit = standard[:, : len(weights)] @ weights
        if codes:
            logit += (codes[0] % 2) * 1.5
        columns["label"] = pa.array(
            np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "yes", "no")
        )
    sink = pa.BufferOutputStream()
    pacsv.write_csv(pa.table(columns), sink)
    data = sink.getvalue().to_pybytes().replace(b'"', b"")  # no value needs quoting
    header, _, body = data.partition(b"\n")
    return header + b"\n", body


def write_table(shape: Shape, rows: int, path: Path, *, labelled: bool, seed: int) -> Path:
    """A CSV of ``rows`` rows: seeded 100k-row blocks, repeated (bounded time and memory)."""
    if path.exists():
        return path
    header, body = table_block(shape, min(rows, BLOCK_ROWS), seed, labelled=labelled)
    with path.open("wb") as handle:
        handle.write(header)
        left = rows
        while left > 0:
            take = min(left, BLOCK_ROWS)
            if take == BLOCK_ROWS:
                handle.write(body)
            else:  # the first ``take`` lines
                cut = -1
                for _ in range(take):
                    cut = body.index(b"\n", cut + 1)
                handle.write(body[: cut + 1])
            left -= take
    return path


# --------------------------------------------------------------------------------- workers
WORKER = r"""
import json, sys, time
mode, engine, home, name, model_path, columns, idc = sys.argv[1:8]
if engine == "zip" and mode != "naive":
    sys.modules["pyarrow"] = None  # the Lambda zip's dependency set: import pyarrow fails
columns = json.loads(columns)
if mode == "naive":
    import joblib, pandas as pd
    model = joblib.load(model_path)
    def run(source, target):
        frame = pd.read_csv(source)
        X = frame[columns]; X.columns = range(len(columns))
        proba = model.predict_proba(X)
        out = pd.DataFrame(proba, columns=[f"probability_{c}" for c in model.classes_])
        out.insert(0, "label", model.classes_[proba.argmax(axis=1)])
        if idc:
            out.insert(0, idc, frame[idc])
        out.to_csv(target, index=False)
        return len(frame)
else:
    from pathlib import Path
    from skyscore.formats import format_for
    from skyscore.local.home import LocalHome
    from skyscore.monitoring.batch import score_file
    predictor = LocalHome.resolve(home).registry().get_predictor(name)
    decoded = {}
    def run(source, target):
        if mode == "infer":  # ONNX Runtime alone on decoded chunks (decoded on the first call)
            if source not in decoded:
                with open(source, "rb") as handle:
                    decoded[source] = [b for b, _ in format_for("csv").decode(handle, predictor.schema)]
            from concurrent.futures import ThreadPoolExecutor
            from skyscore.batch.pipeline import INFERENCE_WORKERS
            with ThreadPoolExecutor(INFERENCE_WORKERS) as pool:
                return sum(len(p) for p in pool.map(predictor.predict_proba, decoded[source]))
        if mode == "parse":
            rows = 0
            with open(source, "rb") as handle:
                for batch, errors in format_for("csv").decode(handle, predictor.schema):
                    rows += len(batch) + len(errors)
            return rows
        report, _ = score_file(Path(source), Path(target), predictor)
        return report.rows_scored
print("ready", flush=True)
for line in sys.stdin:
    source, target = line.split()
    t0 = time.perf_counter()
    rows = run(source, target)
    elapsed = time.perf_counter() - t0
    peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    print(elapsed, rows, peak, flush=True)
"""


class Worker:
    """A long-lived process that runs one side on request and reports its time."""

    def __init__(self, mode: str, engine: str, cell: Cell, source_tree: str | None = None) -> None:
        env = None
        if source_tree:  # skyscore from another tree, ahead of the installed (editable) one
            env = {**os.environ, "PYTHONPATH": source_tree}
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER, mode, engine, *cell.worker_args()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self._read() == ["ready"]

    def _read(self) -> list[str]:
        stdout: IO[str] | None = self.process.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited with {self.process.wait()}")
        return line.split()

    def run(self, source: Path, target: Path) -> tuple[float, int, int]:
        """Seconds, rows and this process's peak RSS (KiB) so far."""
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(f"{source} {target}\n")
        stdin.flush()
        elapsed, rows, peak = self._read()
        return float(elapsed), int(rows), int(peak)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


@dataclass
class Cell:
    """One shape and one model: its registry home, baseline pipeline and columns."""

    shape: Shape
    model: str
    home: Path
    name: str
    joblib: Path
    columns: list[str]
    id_column: str | None

    def worker_args(self) -> list[str]:
        return [
            str(self.home),
            self.name,
            str(self.joblib),
            json.dumps(self.columns),
            self.id_column or "",
        ]


def train_cells(work: Path, shapes: list[Shape], models: list[str]) -> list[Cell]:
    """Train, verify and register every (shape, model) in one home; dump each pipeline."""
    import joblib

    from skyscore.local.home import LocalHome
    from skyscore.training.train import TrainConfig, train

    home = LocalHome.resolve(work / "home").ensure()
    registry = home.registry()
    cells = []
    for shape in shapes:
        data = write_table(
            shape, TRAIN_ROWS, work / f"{shape.name}-train.csv", labelled=True, seed=1
        )
        for model in models:
            name = f"{shape.name}-{model}"
            result = train(
                TrainConfig(
                    data=str(data),
                    target="label",
                    name=name,
                    estimator=model,
                    id_column="id" if shape.id_width else None,
                    max_iter=100,
                )
            )
            card = registry.register(result.card, result.onnx_bytes)
            registry.promote(card.name, card.version)
            dumped = work / f"{name}.joblib"
            joblib.dump(result.pipeline, dumped)
            cells.append(
                Cell(
                    shape,
                    model,
                    home.root,
                    name,
                    dumped,
                    card.numeric_features + card.categorical_features,
                    card.id_column,
                )
            )
    return cells


def peak_rss(
    cell: Cell, engine: str, source: Path, target: Path, source_tree: str | None = None
) -> float:
    """Peak RSS (MiB) of a fresh process scoring ``source`` once."""
    worker = Worker("ours", engine, cell, source_tree)
    try:
        return worker.run(source, target)[2] / 1024
    finally:
        worker.close()
        for path in target.parent.glob(target.name + "*"):
            path.unlink(missing_ok=True)


def measure(
    cell: Cell,
    engine: str,
    source: Path,
    rows: int,
    runs: int,
    work: Path,
    before: str | None = None,
) -> dict[str, Any]:
    """Medians of ``runs`` alternating runs of each side on ``source``."""
    sides = {mode: Worker(mode, engine, cell) for mode in ("ours", "parse", "infer", "naive")}
    if before:
        sides["before"] = Worker("ours", engine, cell, before)
    times: dict[str, list[float]] = {side: [] for side in sides}
    scored = 0
    try:
        for side, worker in sides.items():  # warm-up: page cache, first-call costs
            worker.run(source, work / f"warm-{side}.csv")
        for _ in range(runs):
            for side, worker in sides.items():
                elapsed, count, _ = worker.run(source, work / f"out-{side}.csv")
                times[side].append(elapsed)
                if side == "ours":
                    scored = count
    finally:
        for worker in sides.values():
            worker.close()
        for path in [*work.glob("warm-*"), *work.glob("out-*")]:
            path.unlink(missing_ok=True)
    median = {side: statistics.median(values) for side, values in times.items()}
    extra = {"before": rows / median["before"]} if before else {}
    return {
        **extra,
        "rows": rows,
        "scored": scored,
        "ours": rows / median["ours"],
        "naive": rows / median["naive"],
        "parse": rows / median["parse"],
        "infer": rows / median["infer"],
        "ratio": median["naive"] / median["ours"],
        "of_parse": median["parse"] / median["ours"],
    }


def run_matrix(
    work: Path,
    *,
    rows: int = 100_000,
    large: int = 0,
    runs: int = 3,
    shapes: list[str] | None = None,
    models: list[str] | None = None,
    engines: list[str] | None = None,
    before: str | None = None,
) -> list[dict[str, Any]]:
    """Build the cells, measure each at ``rows`` (and ``large``), print one table per engine."""
    started = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    chosen = [SHAPES[s] for s in (shapes or list(SHAPES))]
    cells = train_cells(work, chosen, list(models or MODELS))
    print(f"shapes: trained {len(cells)} models in {time.perf_counter() - started:.0f}s")
    sizes = [rows, *([large] if large else [])]
    results = []
    for engine in engines or ["arrow", "zip"]:
        lines = []
        for cell in cells:
            files = {
                n: write_table(
                    cell.shape, n, work / f"{cell.shape.name}-{n}.csv", labelled=False, seed=7
                )
                for n in sizes
            }
            found = measure(cell, engine, files[rows], rows, runs, work, before)
            found["shape"], found["model"], found["engine"] = cell.shape.name, cell.model, engine
            found["peak_mib"] = {
                n: peak_rss(cell, engine, files[n], work / f"mem-{n}.csv") for n in sizes
            }
            if before:
                found["before_peak_mib"] = {
                    n: peak_rss(cell, engine, files[n], work / f"mem-{n}.csv", before)
                    for n in sizes
                }
            if large:
                big = measure(
                    cell, engine, files[large], large, max(1, runs // 3 or 1), work, before
                )
                found["large"] = big
            results.append(found)
            lines.append(_row(cell, found, rows, large))
        _print(engine, rows, large, runs, lines, bool(before))
    print(f"shapes: {time.perf_counter() - started:.0f}s")
    return results


def _row(cell: Cell, found: dict[str, Any], rows: int, large: int) -> list[str]:
    peaks = found["peak_mib"]
    row = [
        cell.shape.label,
        cell.model,
        f"{found['ours'] / 1e3:,.0f}k",
        f"{found['naive'] / 1e3:,.0f}k",
        f"**{found['ratio']:.2f}x**",
        f"{found['parse'] / 1e3:,.0f}k",
        f"**{found['of_parse']:.0%}**",
        f"{found['infer'] / 1e3:,.0f}k",
        f"{peaks[rows]:,.0f}",
    ]
    if large:
        big = found["large"]
        row += [
            f"{big['ours'] / 1e3:,.0f}k",
            f"{big['naive'] / 1e3:,.0f}k",
            f"**{big['ratio']:.2f}x**",
            f"{big['parse'] / 1e3:,.0f}k",
            f"**{big['of_parse']:.0%}**",
            f"{peaks[large]:,.0f}",
            f"**{peaks[large] / peaks[rows]:.2f}x**",
        ]
    if "before" in found:
        old = found["before_peak_mib"]
        row += [f"{found['before'] / 1e3:,.0f}k", f"{found['ours'] / found['before']:.2f}x"]
        if large:
            row += [
                f"{big['before'] / 1e3:,.0f}k",
                f"{big['ours'] / big['before']:.2f}x",
                f"{old[large] / old[rows]:.2f}x",
            ]
    return row


def _print(
    engine: str, rows: int, large: int, runs: int, lines: list[list[str]], before: bool = False
) -> None:
    where = "local / container (pyarrow)" if engine == "arrow" else "function zip (no pyarrow)"
    header = [
        "table",
        "model",
        f"skyscore {rows // 1000}k",
        "pandas+sklearn",
        "vs baseline",
        "parse-only",
        "of parse-only",
        "ONNX alone",
        f"peak MiB {rows // 1000}k",
    ]
    if large:
        m = f"{large / 1e6:g}M"
        header += [f"skyscore {m}", "pandas+sklearn", "vs baseline", "parse-only"]
        header += ["of parse-only", f"peak MiB {m}", f"peak {m} / {rows // 1000}k"]
    if before:
        header += [f"before {rows // 1000}k", "now / before"]
        if large:
            header += [f"before {large / 1e6:g}M", "now / before", "before peak ratio"]
    table(
        f"Shape matrix, {where}: CSV → CSV rows/s, median of {runs} alternating runs "
        f"(targets: vs baseline {TARGETS['vs baseline']}, of parse-only "
        f"{TARGETS['of parse-only']}, memory {TARGETS['memory 2M vs 100k']})",
        header,
        lines,
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shapes", description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--large", action="store_true", help="also 2,000,000 rows")
    parser.add_argument("--large-rows", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3, help="alternating runs (median)")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES))
    parser.add_argument("--models", nargs="+", choices=MODELS)
    parser.add_argument("--engines", nargs="+", choices=("arrow", "zip"))
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--before",
        metavar="DIR",
        help="also score with the skyscore package found in DIR (an earlier tree), alternating",
    )
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="shapes-", dir=OUT))
    try:
        run_matrix(
            work,
            rows=args.rows,
            large=args.large_rows if args.large else 0,
            runs=args.runs,
            shapes=args.shapes,
            models=args.models,
            engines=args.engines,
            before=args.before,
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
