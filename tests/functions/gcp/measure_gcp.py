"""The figures docs/gcp.md reports: the deployed source size, the HTTP function's cold start (a
fresh process imports the packaged source and functions-framework answers its first request)
and upload-scoring throughput against fake-gcs-server.

Run: ``.venv/bin/python tests/functions/gcp/measure_gcp.py [--rows 200000] [--runs 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "shared"), str(ROOT)]

COLD = r"""
import json, sys, time
t0 = time.perf_counter()
import functions_framework
app = functions_framework.create_app("http", sys.argv[1] + "/main.py")
t1 = time.perf_counter()
client = app.test_client()
answer = client.post("/v1/models/cancer/predict", data=sys.argv[2],
                     headers={"content-type": "application/json"})
t2 = time.perf_counter()
assert answer.status_code == 200, answer.data[:300]
print(json.dumps({"import": t1 - t0, "first_request": t2 - t1, "total": t2 - t0}))
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "functions" / "gcp"))
    import package

    from fake_gcs import fake_gcs_process
    from skyscore.model.registry import ModelRegistry
    from skyscore.training.datasets import DEMO_ID, DEMO_TARGET, breast_cancer_frame
    from skyscore.training.train import TrainConfig, train

    work = Path(tempfile.mkdtemp())
    archive = package.build_zip(package.stage(work / "source"), work / "gcp.zip")
    staged = sum(p.stat().st_size for p in (work / "source").rglob("*") if p.is_file())
    print(
        f"deployed source: {archive.stat().st_size / 1e6:.2f} MB zip "
        f"({staged / 1e6:.2f} MB unpacked; dependencies installed by Cloud Build)"
    )
    frame = breast_cancer_frame()
    frame.to_csv(work / "train.csv", index=False)
    model = train(
        TrainConfig(
            data=str(work / "train.csv"),
            target=DEMO_TARGET,
            name="cancer",
            estimator="logreg",
            id_column=DEMO_ID,
        )
    )
    features = frame.drop(columns=[DEMO_TARGET])
    body = json.dumps({"instances": features.head(1).to_dict(orient="records")})
    with fake_gcs_process() as server:
        bucket = server.new_bucket()
        store = server.store(bucket)
        registry = ModelRegistry(store)
        card = registry.register(model.card, model.onnx_bytes, name="cancer")
        registry.promote("cancer", card.version)
        env = {
            **os.environ,
            **server.environment,
            "SKYSCORE_BUCKET": bucket,
            "SKYSCORE_MODEL": "cancer",
            "PYTHONPATH": str(work / "source"),  # the packaged core, as deployed
        }
        cold = []
        for _ in range(args.runs):
            out = subprocess.run(
                [sys.executable, "-c", COLD, str(work / "source"), body],
                capture_output=True,
                text=True,
                check=True,
                env=env,
                cwd=str(work / "source"),
            )
            cold.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"cold start (median of {args.runs} fresh processes):")
        for part in ("import", "first_request", "total"):
            print(f"  {part}: {statistics.median(c[part] for c in cold) * 1000:.0f} ms")

        repeats = -(-args.rows // len(features))
        big = features.loc[features.index.repeat(repeats)].head(args.rows)
        big[DEMO_ID] = [f"P{i:07d}" for i in range(len(big))]
        data = big.to_csv(index=False).encode()
        key = "incoming/cancer/big.csv"
        store.write_bytes(key, data)
        os.environ.update({k: v for k, v in env.items() if k != "PYTHONPATH"})
        os.environ["SKYSCORE_FANOUT_BYTES"] = str(1 << 40)  # one function scores it all
        from cloudevents.http import CloudEvent

        from functions.gcp import main as gcp_main

        info = store.stat(key)
        assert info is not None
        event = CloudEvent(
            {
                "type": "google.cloud.storage.object.v1.finalized",
                "source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
                "id": "measure",
            },
            {"bucket": bucket, "name": key, "generation": info.version, "size": str(info.size)},
        )
        started = time.perf_counter()
        gcp_main.upload(event)
        elapsed = time.perf_counter() - started
        manifest = json.loads(
            store.read_bytes("predictions/cancer/big.predictions.csv.manifest.json")
        )
        assert manifest["rows_scored"] == args.rows, manifest
        print(
            f"upload scoring: {args.rows:,} rows ({len(data) / 1e6:.1f} MB CSV) in {elapsed:.2f} s"
            f" = {args.rows / elapsed:,.0f} rows/s (fake-gcs-server, one process)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
