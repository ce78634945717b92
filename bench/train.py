"""Training figures: XGBoost fit time on CPU vs GPU, and ONNX inference throughput, XGBoost vs HGB.

    .venv/bin/python -m bench.train                    # 200,000 rows (what `make bench` runs)
    .venv/bin/python -m bench.train --rows 1000000     # the issue's full 1M-row table
    .venv/bin/python -m bench --only train             # the same, as a section of the main bench

Every model goes through the real entrypoint (``skyscore.training.train.train``): the same
preprocessing pipeline, ONNX export and 1e-4 parity check a managed job runs, so the fit time
is the one a job pays for and the ONNX figures are those of a publishable model. ``fit`` is the
pipeline's ``fit`` alone (what a GPU speeds up); ``total`` adds reading, the held-out split,
export and the parity check. The GPU row appears only where XGBoost can train on CUDA (see
``skyscore.training.xgb.cuda_probe``); the probe has already created the CUDA context by then,
so the GPU fit is not charged for it.

Not a test: it prints figures (and returns them), it does not assert them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import table
from skyscore.training.datasets import SYNTHETIC_ID, SYNTHETIC_TARGET, synthetic_arrays
from skyscore.training.train import TrainConfig, TrainResult, train

DEFAULT_ROWS = 200_000
DEFAULT_SCORE_ROWS = 100_000
CHUNK_ROWS = 65_536  # what the batch scorer feeds ONNX Runtime at a time


def write_table(path: Path, rows: int, *, seed: int = 11, block: int = 250_000) -> Path:
    """The synthetic 30 numeric + 3 categorical table as Parquet (written in blocks: a 1M-row
    CSV would take longer to write and parse than the fits it feeds)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from skyscore.training.datasets import synthetic_columns

    numeric_names, categorical_names = synthetic_columns()
    writer: Any = None
    try:
        for start in range(0, rows, block):
            count = min(block, rows - start)
            numeric, categorical, label = synthetic_arrays(count, seed=seed + start)
            frame = pd.DataFrame(numeric, columns=numeric_names)
            for j, name in enumerate(categorical_names):
                frame[name] = categorical[:, j]
            frame.insert(0, SYNTHETIC_ID, np.arange(start, start + count).astype(str))
            frame[SYNTHETIC_TARGET] = label
            chunk = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, chunk.schema)
            writer.write_table(chunk)
    finally:
        if writer is not None:
            writer.close()
    return path


def fit(data: Path, estimator: str, device: str, rounds: int) -> TrainResult:
    """One model through the training entrypoint (raises if ONNX parity fails)."""
    return train(
        TrainConfig(
            data=str(data),
            target=SYNTHETIC_TARGET,
            name=f"bench-{estimator}-{device}",
            estimator=estimator,
            id_column=SYNTHETIC_ID,
            max_iter=rounds,
            device=device,
        )
    )


def iterations(result: TrainResult) -> int:
    """Boosting rounds actually fitted (HGB stops early on large data; XGBoost runs them all)."""
    model = result.pipeline.named_steps["classifier"]
    if hasattr(model, "n_iter_"):
        return int(model.n_iter_)
    return int(model.get_booster().num_boosted_rounds())


def onnx_rows_per_second(
    results: list[TrainResult], rows: int, *, threads: int = 0, repeats: int = 5
) -> list[float]:
    """ONNX Runtime rows/s of each model on ready arrays (``threads`` intra-op threads, 0 = one
    per core) over ``rows`` unseen rows in the batch scorer's chunks: the median of ``repeats``
    rounds, each one pass of every model in turn. Alternating puts every model in the same
    moments of a shared machine, whose speed drifts over seconds."""
    import onnxruntime

    numeric, categorical = synthetic_arrays(rows, seed=99)[:2]
    categorical = categorical.astype(object)
    runs = []
    for result in results:
        card = result.card
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(
            result.onnx_bytes, options, providers=["CPUExecutionProvider"]
        )
        feeds = [
            {
                str(card.onnx.numeric_input): numeric[start : start + CHUNK_ROWS],
                str(card.onnx.categorical_input): categorical[start : start + CHUNK_ROWS],
            }
            for start in range(0, rows, CHUNK_ROWS)
        ]
        outputs = [card.onnx.probabilities_output]
        session.run(outputs, feeds[0])  # warm-up
        runs.append((session, outputs, feeds))
    samples: list[list[float]] = [[] for _ in results]
    for _ in range(repeats):
        for (session, outputs, feeds), out in zip(runs, samples, strict=True):
            started = time.perf_counter()
            for feed in feeds:
                session.run(outputs, feed)
            out.append(rows / (time.perf_counter() - started))
    return [statistics.median(s) for s in samples]


def bench_train(
    rows: int = DEFAULT_ROWS,
    *,
    score_rows: int = DEFAULT_SCORE_ROWS,
    rounds: int = 200,
    work: Path | None = None,
    devices: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Fit XGBoost on each device (CPU, and CUDA where usable) and HGB on ``rows`` rows, then
    time ONNX inference of XGBoost vs HGB. Prints two tables; returns the figures."""
    from skyscore.training.xgb import choose_device

    if devices is None:
        devices = ("cpu", "cuda") if choose_device("auto").device == "cuda" else ("cpu",)
    own = work is None
    folder = Path(tempfile.mkdtemp(prefix="bench-train-")) if work is None else work
    folder.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        data = write_table(folder / f"synthetic-{rows}.parquet", rows)
        print(f"\nwrote {rows:,} rows in {time.perf_counter() - started:.1f}s ({data.name})")
        runs: list[tuple[str, str, TrainResult]] = [
            ("xgboost", device, fit(data, "xgboost", device, rounds)) for device in devices
        ]
        runs.append(("hgb", "cpu", fit(data, "hgb", "cpu", rounds)))
    finally:
        if own:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
    figures: dict[str, Any] = {"rows": rows, "rounds": rounds, "cpus": os.cpu_count(), "fits": []}
    fit_rows = []
    for estimator, _device, result in runs:
        card = result.card
        entry = {
            "estimator": estimator,
            "device": card.training.device,
            "fit_s": result.fit_seconds,
            "total_s": result.seconds,
            "iterations": iterations(result),
            "parity_max_abs_diff": card.onnx.parity_max_abs_diff,
            "parity_rows": card.onnx.parity_rows,
            "onnx_bytes": card.onnx.size_bytes,
            "roc_auc": card.metrics.get("roc_auc"),
        }
        figures["fits"].append(entry)
        fit_rows.append(
            [
                estimator,
                card.training.device,
                f"{result.fit_seconds:.1f}",
                f"{result.seconds:.1f}",
                str(entry["iterations"]),
                f"{card.onnx.parity_max_abs_diff:.1e} ({card.onnx.parity_rows:,} rows)",
                f"{card.onnx.size_bytes / 2**20:.2f}",
                f"{card.metrics.get('roc_auc', float('nan')):.4f}",
            ]
        )
    xgb_fits = {f["device"]: f["fit_s"] for f in figures["fits"] if f["estimator"] == "xgboost"}
    if "cuda" in xgb_fits and "cpu" in xgb_fits:
        figures["cpu_over_gpu_fit"] = xgb_fits["cpu"] / xgb_fits["cuda"]
        gpu_note = f"GPU fit **{figures['cpu_over_gpu_fit']:.1f}x** faster than CPU"
    else:
        gpu_note = "no CUDA device visible here: GPU row missing (run bench/gpu_check.py on one)"
    table(
        f"Training on {rows:,} synthetic rows (30 numeric + 3 categorical), {rounds} rounds, "
        f"{os.cpu_count()} CPUs; {gpu_note}",
        [
            "estimator",
            "device",
            "fit s",
            "total s",
            "rounds fitted",
            "ONNX parity max abs Δp",
            "ONNX MiB",
            "held-out AUC",
        ],
        fit_rows,
    )
    xgb_result = runs[0][2]
    hgb_result = runs[-1][2]
    throughput_rows = []
    figures["inference"] = {}
    for threads, label in ((1, "1 thread"), (0, "one per core")):
        xgb_rate, hgb_rate = onnx_rows_per_second(
            [xgb_result, hgb_result], score_rows, threads=threads
        )
        figures["inference"][label] = {"xgboost_rows_s": xgb_rate, "hgb_rows_s": hgb_rate}
        throughput_rows.append(
            [
                label,
                f"{xgb_rate / 1e3:,.0f}k",
                f"{hgb_rate / 1e3:,.0f}k",
                f"{xgb_rate / hgb_rate:.2f}",
            ]
        )
    table(
        f"ONNX Runtime inference on {score_rows:,} unseen rows (chunks of {CHUNK_ROWS:,}, "
        f"ready arrays, whole pipeline), rows/s, median of 5 alternating rounds",
        ["intra-op threads", "xgboost", "hgb", "xgboost / hgb"],
        throughput_rows,
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train", description=__doc__)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="training rows")
    parser.add_argument("--score-rows", type=int, default=DEFAULT_SCORE_ROWS)
    parser.add_argument("--rounds", type=int, default=200, help="boosting rounds (both models)")
    args = parser.parse_args(argv)
    import onnxruntime
    import xgboost

    print(
        f"skyscore training bench — python {sys.version.split()[0]}, xgboost "
        f"{xgboost.__version__}, onnxruntime {onnxruntime.__version__}, {os.cpu_count()} CPUs"
    )
    bench_train(args.rows, score_rows=args.score_rows, rounds=args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
