"""The GPU path, checked on a CUDA machine: train on CUDA, export, parity, fit-time ratio.

    .venv/bin/python -m bench.gpu_check                  # 1,000,000 synthetic rows
    .venv/bin/python -m bench.gpu_check --rows 200000    # quicker

Prints one JSON object (and nothing else on stdout; progress goes to stderr):

* ``cuda``: whether XGBoost can train on CUDA here, and ``reason`` (the probe's words);
* ``real_data``: breast cancer (binary) and iris (multiclass) trained with ``device="cuda"``:
  the device the card records, and ONNX vs XGBoost parity on the held-out rows;
* ``synthetic``: the same table fitted on ``cuda`` and on ``cpu``: fit seconds, parity, ONNX
  size, and ``cpu_over_gpu_fit`` (how many times faster the GPU fit is);
* ``ok``: every model trained where it was asked and every parity within 1e-4.

Exit status 0 when ``ok``, 1 when a check failed, 2 when no CUDA device is usable (the JSON then
says why and nothing was trained). It needs the ``train`` extra installed; nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TOLERANCE = 1e-4


def gpu_name() -> str | None:
    """The GPU's name from nvidia-smi, when it is on PATH (informational only)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def check_real_data(work: Path) -> dict[str, Any]:
    """Breast cancer and iris trained on CUDA through the entrypoint."""
    from skyscore.training.datasets import (
        DEMO_ID,
        DEMO_TARGET,
        MULTICLASS_TARGET,
        breast_cancer_frame,
        multiclass_frame,
    )
    from skyscore.training.train import TrainConfig, train

    breast_cancer_frame().to_csv(work / "breast_cancer.csv", index=False)
    multiclass_frame("iris").to_csv(work / "iris.csv", index=False)
    out: dict[str, Any] = {}
    for name, target, id_column in (
        ("breast_cancer", DEMO_TARGET, DEMO_ID),
        ("iris", MULTICLASS_TARGET, None),
    ):
        result = train(
            TrainConfig(
                data=str(work / f"{name}.csv"),
                target=target,
                name=name.replace("_", "-"),
                estimator="xgboost",
                id_column=id_column,
                device="cuda",
            ),
            log=lambda m: print(f"  {m}", file=sys.stderr),
        )
        card = result.card
        out[name] = {
            "device": card.training.device,
            "classes": len(card.classes),
            "parity_max_abs_diff": card.onnx.parity_max_abs_diff,
            "parity_rows": card.onnx.parity_rows,
            "onnx_bytes": card.onnx.size_bytes,
            "fit_s": round(result.fit_seconds, 3),
        }
    return out


def check_synthetic(work: Path, rows: int, rounds: int) -> dict[str, Any]:
    """The synthetic table on cuda, then on cpu (same data, same rounds)."""
    from bench.train import fit, write_table

    data = write_table(work / f"synthetic-{rows}.parquet", rows)
    fits: dict[str, Any] = {}
    for device in ("cuda", "cpu"):
        print(f"  fitting {rows:,} rows on {device}", file=sys.stderr)
        result = fit(data, "xgboost", device, rounds)
        card = result.card
        fits[device] = {
            "device": card.training.device,
            "fit_s": round(result.fit_seconds, 3),
            "total_s": round(result.seconds, 3),
            "parity_max_abs_diff": card.onnx.parity_max_abs_diff,
            "parity_rows": card.onnx.parity_rows,
            "onnx_bytes": card.onnx.size_bytes,
            "roc_auc": card.metrics.get("roc_auc"),
        }
    return {
        "rows": rows,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "fits": fits,
        "cpu_over_gpu_fit": round(fits["cpu"]["fit_s"] / fits["cuda"]["fit_s"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args(argv)
    import xgboost

    from skyscore.training.xgb import cuda_probe

    started = time.perf_counter()
    usable, reason = cuda_probe()
    summary: dict[str, Any] = {
        "cuda": usable,
        "reason": reason,
        "gpu": gpu_name(),
        "xgboost": xgboost.__version__,
    }
    if not usable:
        summary["ok"] = False
        print(json.dumps(summary))
        return 2
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        summary["real_data"] = check_real_data(work)
        summary["synthetic"] = check_synthetic(work, args.rows, args.rounds)
    except Exception as error:  # report, in the one JSON line, what broke
        summary["ok"] = False
        summary["error"] = f"{type(error).__name__}: {error}"
        summary["seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps(summary))
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    checks = [*summary["real_data"].values(), summary["synthetic"]["fits"]["cuda"]]
    summary["ok"] = all(c["device"] == "cuda" for c in checks) and all(
        c["parity_max_abs_diff"] <= TOLERANCE
        for c in [*checks, summary["synthetic"]["fits"]["cpu"]]
    )
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
