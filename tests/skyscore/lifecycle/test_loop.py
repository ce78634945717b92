"""The retraining loop end to end over the real local runtime: HTTP on 127.0.0.1, a real inbox
directory, real training subprocesses, the real registry.

Drift in a dropped file raises the alarm, the policy starts a job on the labelled data, the
quality gate judges the candidate, and the running server follows the outcome without restart.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from skyscore.adapters.local import LocalBlobStore, LocalJobRunner, train_command
from skyscore.lifecycle.retrain import RetrainController, RetrainPolicy
from skyscore.local.runtime import LocalRuntime
from skyscore.model.registry import ModelRegistry
from skyscore.ports import JobSpec
from skyscore.training.datasets import SYNTHETIC_ID, SYNTHETIC_TARGET, write_synthetic_csv
from skyscore.training.train import TrainConfig, train

WAIT = 150.0


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """An hgb model trained on unshifted synthetic data (the model in production)."""
    data = write_synthetic_csv(tmp_path_factory.mktemp("prod") / "train.csv", 3000, seed=21)
    return train(
        TrainConfig(
            data=str(data),
            target=SYNTHETIC_TARGET,
            name="fraud",
            id_column=SYNTHETIC_ID,
            estimator="hgb",
            max_iter=30,
        )
    )


def crippled(spec: JobSpec, output_dir: Path) -> list[str]:
    """A bad training run: a single boosting iteration."""
    return train_command(dataclasses.replace(spec, extra_args=("--max-iter", "1")), output_dir)


def quick(spec: JobSpec, output_dir: Path) -> list[str]:
    """A normal training run, kept small for the test's time budget."""
    return train_command(dataclasses.replace(spec, extra_args=("--max-iter", "30")), output_dir)


def start_runtime(
    home: Path,
    labelled_shift: float,
    production: Any,
    command: Callable[[JobSpec, Path], list[str]],
) -> tuple[LocalRuntime, ModelRegistry]:
    store = LocalBlobStore(home)
    registry = ModelRegistry(store, refresh_seconds=0.2)
    card = registry.register(production.card, production.onnx_bytes)
    registry.promote("fraud", card.version, reason="initial")
    # new labelled data has arrived: the world has shifted
    (home / "training" / "fraud").mkdir(parents=True, exist_ok=True)
    write_synthetic_csv(
        home / "training" / "fraud" / "week-2.csv", 3000, seed=22, shift=labelled_shift
    )
    controller = RetrainController(
        store,
        registry,
        LocalJobRunner(home, python=sys.executable, command=command),
        policy=RetrainPolicy(min_new_rows=500),
    )
    runtime = LocalRuntime(
        home,
        port=0,
        default_model="fraud",
        poll_seconds=0.2,
        registry=registry,
        controller=controller,
        log_to_stderr=False,
    )
    return runtime.start(), registry


def predict_version(runtime: LocalRuntime, instance: dict[str, Any]) -> str:
    request = urllib.request.Request(
        f"{runtime.url}/v1/models/fraud/predict",
        data=json.dumps({"instances": [instance]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.loads(response.read())["version"])


def drop_shifted(home: Path, tmp: Path) -> Path:
    source = write_synthetic_csv(tmp / "batch.csv", 2000, seed=23, shift=1.5, labelled=False)
    target = home / "inbox" / "fraud" / "batch.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target.with_suffix(".part"))
    target.with_suffix(".part").rename(target)
    manifest = home / "predictions" / "fraud" / "batch.predictions.csv.manifest.json"
    return wait_for(lambda: manifest if manifest.exists() else None, "the scored manifest")


def an_instance(tmp: Path) -> dict[str, Any]:
    import csv

    path = write_synthetic_csv(tmp / "one.csv", 1, seed=5, labelled=False)
    with path.open() as handle:
        row: dict[str, Any] = next(csv.DictReader(handle))
    return {
        k: (v if k in ("id", "region", "channel", "tier") else float(v)) for k, v in row.items()
    }


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "home"
    root.mkdir()
    yield root


def test_drift_retrains_promotes_and_server_follows(
    home: Path,
    tmp_path: Path,
    production: Any,
) -> None:
    runtime, registry = start_runtime(home, 1.5, production, quick)
    try:
        instance = an_instance(tmp_path)
        assert predict_version(runtime, instance) == "1"
        manifest = json.loads(drop_shifted(home, tmp_path).read_text())
        assert manifest["drift"]["status"] == "drift"
        assert manifest["drift"]["max_psi"] > 0.25
        report = home / "predictions" / "fraud" / "batch.predictions.csv.report.html"
        wait_for(report.exists, "the batch's HTML report", timeout=30)

        wait_for(lambda: registry.alias_target("fraud") == "2", "the candidate's promotion")
        wait_for(lambda: predict_version(runtime, instance) == "2", "the server to serve v2")
        promoted = registry.history("fraud")[-1]
        assert promoted["action"] == "promoted"
        assert promoted["details"]["gate"]["passed"] is True
        decisions = runtime.controller.decisions("fraud") if runtime.controller else []
        assert [d["action"] for d in decisions][:1] == ["started"]
        assert decisions[0]["trigger"] == "drift" and "max PSI" in decisions[0]["reason"]

        metrics = [json.loads(x) for x in (home / "metrics.jsonl").read_text().splitlines()]
        scored = [m for m in metrics if "rows_scored" in m]
        assert scored and scored[0]["model"] == "fraud" and scored[0]["version"] == "1"
        assert scored[0]["rows_scored"] == 2000 and scored[0]["max_psi"] > 0.25
    finally:
        runtime.stop()


def test_worse_candidate_is_rejected_and_production_stays(
    home: Path,
    tmp_path: Path,
    production: Any,
) -> None:
    # labelled data like production's; the job is a bad run (one boosting iteration)
    runtime, registry = start_runtime(home, 0.0, production, crippled)
    try:
        instance = an_instance(tmp_path)
        drop_shifted(home, tmp_path)
        rejected = wait_for(
            lambda: [e for e in registry.history("fraud") if e["action"] == "rejected"],
            "the candidate's rejection",
        )
        assert rejected[0]["version"] == "2"
        gate = rejected[0]["details"]["gate"]
        assert gate["passed"] is False
        assert set(gate["metrics"]) == {"candidate", "current"}
        assert registry.alias_target("fraud") == "1"
        assert predict_version(runtime, instance) == "1"
    finally:
        runtime.stop()
