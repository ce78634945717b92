"""The retraining policy, the quality gate on real jobs, and automatic rollback."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from skyscore.adapters.local import LocalBlobStore, LocalJobRunner, train_command
from skyscore.coordination import claims
from skyscore.errors import Busy
from skyscore.lifecycle.gate import GateConfig, evaluate, quality_gate, roc_auc, schema_problems
from skyscore.lifecycle.retrain import RetrainController, RetrainPolicy
from skyscore.model.predictor import Predictor
from skyscore.model.registry import ModelRegistry
from skyscore.monitoring.metrics import InMemoryMetrics
from skyscore.ports import JobSpec
from skyscore.training.train import TrainResult


class Clock:
    """A settable wall clock shared by the controller."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(tmp_path: Path, data_dir: Path, demo_model: TrainResult):  # type: ignore[no-untyped-def]
    store = LocalBlobStore(tmp_path)
    registry = ModelRegistry(store, refresh_seconds=0)
    card = registry.register(demo_model.card, demo_model.onnx_bytes)
    registry.promote("cancer", card.version)
    clock = Clock(1_900_000_000.0)
    runner = LocalJobRunner(tmp_path)
    controller = RetrainController(
        store,
        registry,
        runner,
        policy=RetrainPolicy(cooldown_seconds=600, daily_cap=2, min_new_rows=100),
        clock=clock,
        metrics=InMemoryMetrics(),
    )
    training = tmp_path / "training" / "cancer"
    training.mkdir(parents=True)
    return controller, registry, runner, clock, training, data_dir / "breast_cancer.csv"


def test_policy_decides_and_records_every_trigger(setup) -> None:  # type: ignore[no-untyped-def]
    controller, registry, runner, clock, training, data = setup
    skipped = controller.consider("cancer", "schedule")
    assert skipped.action == "skipped" and "only 0 new labelled rows" in skipped.reason

    shutil.copyfile(data, training / "batch-1.csv")
    started = controller.consider("cancer", "drift", reason="max PSI 0.4")
    assert started.action == "started" and started.job_id
    assert "569 new labelled rows" in started.reason

    busy = controller.consider("cancer", "manual")
    assert busy.action == "skipped" and "still running" in busy.reason

    status = runner.wait(started.job_id, timeout=120)
    assert status.state == "completed", status.message
    judged = controller.poll("cancer")
    assert [d.action for d in judged] == ["promoted"]
    assert registry.alias_target("cancer") == "2"
    assert controller.poll("cancer") == []  # judged once only

    cooling = controller.consider("cancer", "drift")
    assert cooling.action == "skipped" and "cooling down" in cooling.reason

    clock.now += 601
    no_data = controller.consider("cancer", "error_rate")
    assert no_data.action == "skipped" and "only 0 new" in no_data.reason

    actions = [d["action"] for d in controller.decisions("cancer")]
    assert actions == ["skipped", "started", "skipped", "promoted", "skipped", "skipped"]
    metrics = controller.metrics  # every recorded decision counted once, by action and trigger
    assert metrics.values("retrain_skipped", model="cancer") == [1, 1, 1, 1]
    assert metrics.values("retrain_started", model="cancer", trigger="drift") == [1]
    assert metrics.values("retrain_promoted", model="cancer", trigger="job") == [1]
    promoted = [e for e in registry.history("cancer") if e["action"] == "promoted"][-1]
    assert promoted["details"]["gate"]["passed"] is True
    assert set(promoted["details"]["gate"]["metrics"]) == {"candidate", "current"}


def test_a_finished_job_is_judged_once_however_often_it_is_announced(setup) -> None:  # type: ignore[no-untyped-def]
    """A job event, its duplicate in another process, and a poll: one verdict; a job still
    running is not judged at all."""
    controller, registry, runner, _, training, data = setup
    shutil.copyfile(data, training / "batch-1.csv")
    started = controller.consider("cancer", "manual")
    assert controller.complete(started.job_id).action == "skipped"  # still running
    assert controller.pending("cancer") == [started.job_id]
    runner.wait(started.job_id, timeout=120)
    other = RetrainController(  # another process: its own controller and owner
        controller.store, registry, LocalJobRunner(runner.home), owner="other-process"
    )
    claim = f"retraining/cancer/claims/{started.job_id}.json"
    claims.acquire(controller.store, claim, "other-process")  # the other one is judging it
    held = controller.complete(started.job_id, owner="event-1")
    assert held.action == "skipped" and "held by another delivery" in held.reason
    claims.release(controller.store, claim)  # ... and crashed: the next delivery judges it
    verdict = controller.complete(started.job_id, owner="event-2")
    assert verdict.action == "promoted", verdict.reason
    again = other.complete(started.job_id)
    assert again.action == "skipped"
    assert controller.poll("cancer") == [] and controller.pending("cancer") == []
    assert registry.list_versions("cancer") == ["1", "2"]
    assert [d["action"] for d in controller.decisions("cancer")] == ["started", "promoted"]


def test_an_alarm_state_change_is_acted_on_once(setup, demo_model: TrainResult) -> None:  # type: ignore[no-untyped-def]
    controller, registry, _, clock, _, _ = setup
    card = registry.register(demo_model.card, demo_model.onnx_bytes)
    registry.promote("cancer", card.version)
    clock.now = _epoch(registry.history("cancer")[-1]["at"]) + 60
    first = controller.on_alarm("cancer", "error_rate", event_id="5xx@11:00", owner="sns")
    assert first.action == "rolled_back"
    again = controller.on_alarm("cancer", "error_rate", event_id="5xx@11:00", owner="rule")
    assert again.action == "skipped" and "already handled" in again.reason
    assert registry.alias_target("cancer") == "1"  # one rollback, not two

    # a copy of one delivery while its first copy is at work: Busy (retried, not acknowledged)
    digest = hashlib.sha256(b"5xx@12:00").hexdigest()[:32]
    claims.acquire(controller.store, f"retraining/cancer/alarms/{digest}.json", "sns-2")
    with pytest.raises(Busy):
        controller.on_alarm("cancer", "error_rate", event_id="5xx@12:00", owner="sns-2")
    assert registry.alias_target("cancer") == "1"


def test_a_training_file_that_is_not_parquet_is_named(setup) -> None:  # type: ignore[no-untyped-def]
    controller, _, _, _, training, data = setup
    shutil.copyfile(data, training / "batch-1.csv")
    (training / "export.parquet").write_bytes(data.read_bytes())  # CSV with the wrong name
    decision = controller.consider("cancer", "schedule")
    assert decision.action == "skipped"
    assert "training/cancer/export.parquet: not Parquet" in decision.reason


def test_daily_cap(setup) -> None:  # type: ignore[no-untyped-def]
    controller, _, runner, clock, training, data = setup
    for i in range(2):
        shutil.copyfile(data, training / f"batch-{i}.csv")
        decision = controller.consider("cancer", "schedule")
        assert decision.action == "started", decision.reason
        runner.wait(decision.job_id, timeout=120)
        controller.poll("cancer")
        clock.now += 700
    shutil.copyfile(data, training / "batch-9.csv")
    capped = controller.consider("cancer", "schedule")
    assert capped.action == "skipped" and "daily cap of 2" in capped.reason
    clock.now += 86_400
    assert controller.consider("cancer", "schedule").action == "started"


def test_worse_candidate_is_rejected_and_production_unchanged(
    setup,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    controller, registry, _, _, training, data = setup
    shutil.copyfile(data, training / "batch-1.csv")

    def crippled(spec: JobSpec, output_dir: Path) -> list[str]:
        """A bad training run: one boosting iteration instead of a converged model."""
        spec = dataclasses.replace(spec, estimator="hgb", extra_args=("--max-iter", "1"))
        return train_command(spec, output_dir, sys.executable)

    controller.runner = LocalJobRunner(tmp_path, command=crippled)
    decision = controller.consider("cancer", "drift")
    assert decision.action == "started"
    controller.runner.wait(decision.job_id, timeout=120)  # type: ignore[attr-defined]
    (verdict,) = controller.poll("cancer")
    assert verdict.action == "rejected", verdict.reason
    assert "no_worse_than_current" in verdict.reason
    assert registry.alias_target("cancer") == "1"
    assert registry.list_versions("cancer") == ["1", "2"]
    rejected = registry.history("cancer")[-1]
    assert rejected["action"] == "rejected" and rejected["version"] == "2"


def test_alarm_after_promotion_rolls_back(setup, demo_model: TrainResult) -> None:  # type: ignore[no-untyped-def]
    controller, registry, _, clock, _, _ = setup
    card = registry.register(demo_model.card, demo_model.onnx_bytes)
    registry.promote("cancer", card.version, reason="test")
    clock.now = (
        registry.history("cancer")[-1]["at"] and _epoch(registry.history("cancer")[-1]["at"]) + 60
    )
    decision = controller.on_alarm("cancer", "error_rate", reason="5xx 12%")
    assert decision.action == "rolled_back" and decision.version == "1"
    assert registry.alias_target("cancer") == "1"
    # long after a promotion, an alarm asks for retraining instead of rolling back
    registry.promote("cancer", card.version)
    clock.now = _epoch(registry.history("cancer")[-1]["at"]) + 7200
    later = controller.on_alarm("cancer", "prediction_drift")
    assert later.action == "skipped" and later.trigger == "drift"
    assert registry.alias_target("cancer") == card.version


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_gate_unit_checks(demo_predictor: Predictor, hgb_predictor: Predictor) -> None:
    problems = schema_problems(demo_predictor.card, hgb_predictor.card)
    assert any("removed" in p for p in problems) and any("classes changed" in p for p in problems)
    result = quality_gate(
        hgb_predictor,
        demo_predictor,
        np.zeros((3, 30), np.float32),
        np.full((3, 3), "", dtype=object),
        np.array(["0", "1", "0"]),
    )
    assert not result.passed
    assert {c.name for c in result.checks if not c.passed} == {"schema_compatible", "holdout_rows"}
    declared = quality_gate(
        hgb_predictor,
        demo_predictor,
        np.zeros((3, 30), np.float32),
        np.full((3, 3), "", dtype=object),
        np.array(["0", "1", "0"]),
        GateConfig(allow_schema_change=True, min_rows=1),
    )
    assert "declared schema change" in declared.checks[1].detail


def test_gate_metrics_match_scikit_learn() -> None:
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    rng = np.random.default_rng(4)
    p1 = rng.random(300)
    probabilities = np.stack([1 - p1, p1], axis=1)
    labels = np.where(rng.random(300) < p1, "b", "a")
    ours = evaluate(probabilities, labels, ["a", "b"])
    assert ours["roc_auc"] == pytest.approx(roc_auc_score(labels == "b", p1))
    assert ours["accuracy"] == pytest.approx(accuracy_score(labels, np.where(p1 > 0.5, "b", "a")))
    assert ours["f1_macro"] == pytest.approx(
        f1_score(labels, np.where(p1 > 0.5, "b", "a"), average="macro")
    )
    assert ours["log_loss"] == pytest.approx(log_loss(labels == "b", p1), rel=1e-6)
    assert roc_auc(np.array([True, False]), np.array([0.5, 0.5])) == 0.5
