"""The command-line contract, run as users run it: the installed ``skyscore`` script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SKYSCORE = shutil.which("skyscore", path=str(Path(sys.executable).parent)) or "skyscore"


def run(*args: str, home: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [SKYSCORE, *args, "--home", str(home)], capture_output=True, text=True, check=False
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A home with two versions of ``cancer``: v1 promoted at train time, v2 registered only."""
    root = tmp_path_factory.mktemp("home")
    data = str(data_dir / "breast_cancer.csv")
    first = run(
        "train",
        data,
        "--target",
        "diagnosis",
        "--name",
        "cancer",
        "--estimator",
        "logreg",
        "--id-column",
        "patient_id",
        "--promote",
        home=root,
    )
    assert "registered cancer version 1" in first.stdout
    assert "promoted cancer version 1 to production" in first.stdout
    second = run(
        "train",
        data,
        "--target",
        "diagnosis",
        "--name",
        "cancer",
        "--estimator",
        "hgb",
        "--id-column",
        "patient_id",
        home=root,
    )
    assert "registered cancer version 2" in second.stdout and "promoted" not in second.stdout
    return root


def test_models_lists_versions_and_aliases(home: Path) -> None:
    listing = json.loads(run("models", "--json", home=home).stdout)
    assert listing["cancer"]["versions"] == ["1", "2"]
    assert listing["cancer"]["aliases"] == {"production": "1"}
    assert "cancer: versions 1, 2; aliases: production -> 1" in run("models", home=home).stdout


def test_promote_then_rollback(home: Path) -> None:
    assert "version 2 to production" in run("promote", "cancer", "2", home=home).stdout
    assert "back to version 1" in run("rollback", "cancer", home=home).stdout
    listing = json.loads(run("models", "--json", home=home).stdout)
    assert listing["cancer"]["aliases"]["production"] == "1"


def test_score_reports_bad_rows_and_succeeds(home: Path, data_dir: Path, tmp_path: Path) -> None:
    lines = (data_dir / "breast_cancer.csv").read_text().splitlines()[:21]
    header = lines[0].split(",")
    target = header.index("diagnosis")
    rows = [",".join(f for i, f in enumerate(line.split(",")) if i != target) for line in lines]
    broken = rows[3].split(",")
    broken[header.index("mean_texture")] = "abc"
    rows[3] = ",".join(broken)
    source = tmp_path / "patients.csv"
    source.write_text("\n".join(rows) + "\n")

    result = run("score", str(source), "--model", "cancer", home=home)
    output = tmp_path / "patients.predictions.csv"
    assert "scored 19 of 20 rows" in result.stdout
    out_lines = output.read_text().splitlines()
    assert out_lines[0].split(",")[:3] == ["row", "patient_id", "label"]
    assert len(out_lines) == 20
    errors = [json.loads(x) for x in Path(f"{output}.errors.jsonl").read_text().splitlines()]
    assert errors == [{"row": 3, "column": "mean_texture", "reason": errors[0]["reason"]}]
    manifest = json.loads(Path(f"{output}.manifest.json").read_text())
    assert manifest["rows_scored"] == 19 and manifest["rows_failed"] == 1


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("score", "missing.csv", "--model", "cancer"), "missing.csv"),
        (("score", "x.csv", "--model", "nosuchmodel"), "nosuchmodel"),
        (("rollback", "nosuchmodel"), "nosuchmodel"),
        (("promote", "cancer", "99"), "99"),
    ],
)
def test_failures_exit_non_zero_with_one_line(
    home: Path, tmp_path: Path, args: tuple[str, ...], reason: str
) -> None:
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    result = subprocess.run(
        [SKYSCORE, *args, "--home", str(home)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0], result.stderr


def test_usage_error_exits_2(home: Path) -> None:
    assert run("score", home=home, check=False).returncode == 2


def test_help_documents_every_command() -> None:
    text = subprocess.run([SKYSCORE, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("train", "score", "serve", "promote", "rollback", "models", "demo"):
        assert command in text


def test_score_manifest_has_drift_and_reports_render(
    home: Path, data_dir: Path, tmp_path: Path
) -> None:
    lines = (data_dir / "breast_cancer.csv").read_text().splitlines()[:60]
    header = lines[0].split(",")
    target = header.index("diagnosis")
    source = tmp_path / "batch.csv"
    source.write_text(
        "\n".join(",".join(f for i, f in enumerate(x.split(",")) if i != target) for x in lines)
        + "\n"
    )
    result = run("score", str(source), "--model", "cancer", home=home)
    assert "max PSI" in result.stdout
    manifest = tmp_path / "batch.predictions.csv.manifest.json"
    drift = json.loads(manifest.read_text())["drift"]
    assert drift["rows"] == 59 and "mean_radius" in drift["features"]

    batch = run("report", str(manifest), home=home)
    html = tmp_path / "batch.predictions.csv.report.html"
    assert str(html) in batch.stdout and "<svg" in html.read_text()
    promotion = run("report", "--model", "cancer", home=home)
    path = Path(promotion.stdout.split("report: ", 1)[1].strip())
    assert "cancer" in path.read_text()


def test_retrain_refuses_without_new_data(home: Path) -> None:
    result = run("retrain", "cancer", home=home)
    assert result.stdout.startswith("skipped: manual")
    assert "new labelled rows" in result.stdout


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """`make demo`'s command, in a fresh home: every step reports and the outputs exist."""
    result = subprocess.run(
        [SKYSCORE, "demo", "--home", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for step in ("[1/5]", "[5/5]", "3 bad rows reported", "-> 200", "-> 422", "Demo complete"):
        assert step in result.stdout
    predictions = tmp_path / "demo" / "predictions" / "cancer"
    assert (predictions / "patients.predictions.csv").exists()
    assert (predictions / "patients.predictions.csv.report.html").exists()


def test_score_progress_line_is_redrawn_about_once_a_second() -> None:
    """On a terminal `skyscore score` shows rows and rate; nothing is drawn for a fast file."""
    import io

    import numpy as np

    from skyscore.cli import ScoreProgress
    from skyscore.model.schema import Batch

    now = [100.0]
    stream = io.StringIO()
    progress = ScoreProgress(stream, clock=lambda: now[0])
    chunk = Batch(np.arange(1000), np.zeros((1000, 1), np.float32), np.empty((1000, 0)), None)
    probabilities = np.zeros((1000, 2), np.float32)
    progress.observe(chunk, probabilities)
    assert stream.getvalue() == ""  # under a second: nothing yet
    now[0] += 2.0
    progress.observe(chunk, probabilities)
    now[0] += 0.5
    progress.observe(chunk, probabilities)  # too soon to redraw
    progress.close()
    assert stream.getvalue() == "\r  scored 2,000 rows so far (1k rows/s)\n"

    quiet = io.StringIO()
    fast = ScoreProgress(quiet, clock=lambda: 0.0)
    fast.observe(chunk, probabilities)
    fast.close()
    assert quiet.getvalue() == ""


def test_score_draws_progress_on_a_terminal_only(
    home: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`skyscore score` wires the progress line to a terminal's stderr, and not to a pipe."""
    import functools
    import io

    from skyscore import cli

    lines = (data_dir / "breast_cancer.csv").read_text().splitlines()
    target = lines[0].split(",").index("diagnosis")
    source = tmp_path / "many.csv"
    source.write_text(
        "\n".join(",".join(f for i, f in enumerate(x.split(",")) if i != target) for x in lines)
    )

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(cli, "ScoreProgress", functools.partial(cli.ScoreProgress, every=0.0))
    for stream, drawn in ((Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        assert cli.main(["score", str(source), "--model", "cancer", "--home", str(home)]) == 0
        assert ("scored 569 rows so far" in stream.getvalue()) is drawn
