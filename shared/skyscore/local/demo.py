"""``skyscore demo``: the whole job, end to end, on the local embedded runtime.

Trains on real public data (scikit-learn's breast cancer set), registers and promotes the model,
starts the local runtime, drops a file with a few broken rows into the inbox, calls the HTTP API,
and explains each step as it goes.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from skyscore.local.home import LocalHome

MODEL = "cancer"
SAMPLE_ROWS = 120
WAIT_SECONDS = 60.0


class Steps:
    """Numbered progress lines with timings, so a newcomer sees what happens and how long."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.number = 0
        self.started = time.perf_counter()

    def begin(self, title: str) -> None:
        self.number += 1
        self.started = time.perf_counter()
        print(f"\n[{self.number}/{self.total}] {title}", flush=True)

    def say(self, message: str) -> None:
        print(f"      {message}", flush=True)

    def done(self) -> None:
        print(f"      done in {time.perf_counter() - self.started:.1f}s", flush=True)


def _post_json(url: str, payload: Any) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _sample_file(home: LocalHome, frame: Any) -> tuple[Path, list[str]]:
    """Unlabelled rows to score, with three deliberately broken ones."""
    sample = frame.drop(columns=["diagnosis"]).sample(SAMPLE_ROWS, random_state=7)
    sample = sample.reset_index(drop=True)
    path = home.root / "samples" / "patients.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    sample.to_csv(path, index=False)
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    broken = []
    # row 5: text in a numeric column; row 17: a field missing; row 42: a non-finite number.
    fields = lines[5].split(",")
    fields[header.index("mean_radius")] = "twelve"
    lines[5] = ",".join(fields)
    broken.append("data row 5: 'twelve' in mean_radius")
    lines[17] = ",".join(lines[17].split(",")[:-1])
    broken.append("data row 17: one field short")
    fields = lines[42].split(",")
    fields[header.index("worst_area")] = "inf"
    lines[42] = ",".join(fields)
    broken.append("data row 42: 'inf' in worst_area")
    path.write_text("\n".join(lines) + "\n")
    return path, broken


def _wait_for(path: Path, steps: Steps) -> bool:
    deadline = time.monotonic() + WAIT_SECONDS
    dots = 0
    while time.monotonic() < deadline:
        if path.exists():
            if dots:
                print(flush=True)
            return True
        print("." if dots else "      waiting for the inbox watcher .", end="", flush=True)
        dots += 1
        time.sleep(0.25)
    print(flush=True)
    steps.say(f"timed out after {WAIT_SECONDS:.0f}s waiting for {path}")
    return False


def run_demo(home: LocalHome) -> int:
    """Run the demo in ``home``; returns the process exit status."""
    from skyscore.local.runtime import LocalRuntime
    from skyscore.training.datasets import DEMO_ID, DEMO_TARGET, breast_cancer_frame
    from skyscore.training.train import TrainConfig, train

    home.ensure()
    steps = Steps(5)
    print(f"skyscore demo — local home: {home.root}")

    steps.begin("Preparing data: scikit-learn's breast cancer set (569 patients, 30 measurements)")
    frame = breast_cancer_frame()
    training_file = home.training / MODEL / "breast_cancer.csv"
    training_file.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(training_file, index=False)
    steps.say(f"labelled training data: {training_file}")
    steps.say("added a categorical column 'size_band' (small/medium/large) and an id 'patient_id'")
    sample, broken = _sample_file(home, frame)
    steps.say(f"file to score: {sample} ({SAMPLE_ROWS} rows, 3 broken on purpose)")
    steps.done()

    steps.begin("Training logistic regression, converting the whole pipeline to ONNX")
    result = train(
        TrainConfig(
            data=str(training_file),
            target=DEMO_TARGET,
            name=MODEL,
            estimator="logreg",
            id_column=DEMO_ID,
            description="skyscore demo: breast cancer diagnosis",
        ),
        log=steps.say,
    )
    metrics = result.card.metrics
    steps.say(
        f"held-out accuracy {metrics['accuracy']:.3f}, ROC AUC {metrics.get('roc_auc', 0):.3f}; "
        f"ONNX matches scikit-learn to {result.card.onnx.parity_max_abs_diff:.1e}"
    )
    steps.done()

    steps.begin("Registering the model and promoting it to 'production'")
    registry = home.registry()
    card = registry.register(result.card, result.onnx_bytes, reason="skyscore demo")
    registry.promote(MODEL, card.version, reason="skyscore demo")
    steps.say(f"{MODEL} version {card.version} is production (sha256 {card.onnx.sha256[:12]}…)")
    steps.say(f"model card: {home.root / 'models' / MODEL / card.version / 'card.json'}")
    steps.done()

    runtime = LocalRuntime(
        home.root,
        host="127.0.0.1",
        port=0,
        default_model=MODEL,
        poll_seconds=0.2,
        log_to_stderr=False,
    )
    runtime.start()
    try:
        steps.begin(f"Scoring a file through the inbox (local runtime at {runtime.url})")
        inbox_file = home.inbox / MODEL / sample.name
        inbox_file.parent.mkdir(parents=True, exist_ok=True)
        output = home.predictions / MODEL / f"{sample.stem}.predictions{sample.suffix}"
        manifest_path = output.with_name(output.name + ".manifest.json")
        if manifest_path.exists():
            manifest_path.unlink()
        shutil.copyfile(sample, inbox_file.with_name(inbox_file.name + ".part"))
        inbox_file.with_name(inbox_file.name + ".part").rename(inbox_file)
        steps.say(f"dropped {sample.name} into {inbox_file.parent}")
        if not _wait_for(manifest_path, steps):
            return 1
        manifest = json.loads(manifest_path.read_text())
        steps.say(
            f"scored {manifest['rows_scored']} rows, {manifest['rows_failed']} bad rows reported"
        )
        steps.say(f"predictions:  {output}")
        first = output.read_text().splitlines()[:3]
        for line in first:
            steps.say(f"    {line[:110]}")
        errors = output.with_name(output.name + ".errors.jsonl")
        if errors.exists():
            steps.say(f"error report: {errors}")
            for line in errors.read_text().splitlines():
                steps.say(f"    {line}")
        steps.say("the broken rows we planted: " + "; ".join(broken))
        steps.say(f"manifest:     {manifest_path}")
        drift = manifest.get("drift")
        if drift:
            from skyscore.monitoring.drift import summary

            steps.say(f"monitoring:   {summary(drift)} (vs the training baseline)")
        report_path = output.with_name(output.name + ".report.html")
        deadline = time.monotonic() + 10
        while not report_path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if report_path.exists():
            steps.say(f"HTML report:  {report_path}")
        steps.done()

        steps.begin("Calling the HTTP API")
        instances = json.loads(frame.drop(columns=[DEMO_TARGET]).head(2).to_json(orient="records"))
        url = f"{runtime.url}/v1/models/{MODEL}/predict"
        status, body = _post_json(url, {"instances": instances})
        steps.say(f"POST {url} (2 patients) -> {status}")
        for prediction in body.get("predictions", []):
            probabilities = ", ".join(
                f"{k}={v:.3f}" for k, v in prediction["probabilities"].items()
            )
            steps.say(f"    {prediction.get('id')}: {prediction['label']} ({probabilities})")
        bad = dict(instances[0], mean_radius="big")
        status, problem = _post_json(url, {"instances": [bad]})
        steps.say(f"a bad instance gets a problem body -> {status}: {problem.get('detail')}")
        v2 = f"{runtime.url}/v2/models/{MODEL}"
        with urllib.request.urlopen(v2, timeout=10) as response:
            metadata = json.loads(response.read())
        steps.say(f"Open Inference Protocol: GET {v2} -> {len(metadata['inputs'])} inputs")
        steps.say(f"OpenAPI document: {runtime.url}/openapi.json")
        steps.done()
    finally:
        runtime.stop()

    print(
        "\nDemo complete. Try next:\n"
        f"  .venv/bin/skyscore models --home {home.root}\n"
        f"  .venv/bin/skyscore score {sample} --model {MODEL} --home {home.root}\n"
        f"  .venv/bin/skyscore serve --home {home.root}   # then drop files into {home.inbox}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_demo(LocalHome.resolve()))
