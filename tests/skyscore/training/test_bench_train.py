"""bench/train.py and bench/gpu_check.py run end to end on tiny tables (figures not asserted)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from bench import gpu_check
from bench import train as bench_train_module
from skyscore.training import xgb


def test_training_bench_prints_and_returns_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = bench_train_module.bench_train(
        3_000, score_rows=2_000, rounds=10, work=tmp_path / "w", devices=("cpu",)
    )
    fits = figures["fits"]
    assert [(f["estimator"], f["device"]) for f in fits] == [("xgboost", "cpu"), ("hgb", "cpu")]
    assert all(f["parity_max_abs_diff"] <= 1e-4 and f["onnx_bytes"] > 0 for f in fits)
    assert fits[0]["iterations"] == 10
    assert set(figures["inference"]) == {"1 thread", "one per core"}
    assert all(v > 0 for side in figures["inference"].values() for v in side.values())
    out = capsys.readouterr().out
    assert "GPU row missing" in out and "| xgboost | cpu |" in out
    assert (tmp_path / "w" / "synthetic-3000.parquet").exists()


def test_gpu_check_without_cuda_says_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(xgb, "cuda_probe", lambda: (False, "no visible CUDA device"))
    assert gpu_check.main([]) == 2
    summary = json.loads(capsys.readouterr().out)
    assert summary["cuda"] is False and summary["ok"] is False
    assert summary["reason"] == "no visible CUDA device"


def test_gpu_check_summary_shape(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The script's own plumbing, with the probe told yes: on a machine without a GPU XGBoost
    then fits on the CPU (with a warning), which is enough to check the one-line JSON."""
    monkeypatch.setattr(xgb, "cuda_probe", lambda: (True, "CUDA device visible (test)"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = gpu_check.main(["--rows", "3000", "--rounds", "10"])
    [line] = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(line)
    assert code == 0 and summary["ok"] is True, summary
    assert set(summary["real_data"]) == {"breast_cancer", "iris"}
    assert summary["real_data"]["iris"]["classes"] == 3
    assert summary["synthetic"]["rows"] == 3000
    assert set(summary["synthetic"]["fits"]) == {"cuda", "cpu"}
    assert summary["synthetic"]["cpu_over_gpu_fit"] > 0
