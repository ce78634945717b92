"""The figures docs/azure.md reports: HTTP cold start (a fresh process imports the app and answers
its first request) and upload-scoring throughput against Azurite.

Run: ``.venv/bin/python tests/functions/azure/measure_azure.py [--rows 200000] [--runs 5]``.
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
sys.path.insert(0, sys.argv[1])
import function_app
import azure.functions as func
t1 = time.perf_counter()
[f] = [f for f in function_app.app.get_functions() if f.get_function_name() == "http"]
req = func.HttpRequest("POST", "https://app.azurewebsites.net/v1/models/cancer/predict",
                       headers={"content-type": "application/json"}, params={},
                       body=sys.argv[2].encode())
response = f.get_user_function()(req)
t2 = time.perf_counter()
assert response.status_code == 200, response.get_body()
print(json.dumps({"import": t1 - t0, "first_request": t2 - t1, "total": t2 - t0}))
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    from azurite import azurite_process
    from skyscore.adapters.azure import AzureBlobStore
    from skyscore.model.registry import ModelRegistry
    from skyscore.training.datasets import DEMO_ID, DEMO_TARGET, breast_cancer_frame
    from skyscore.training.train import TrainConfig, train

    work = Path(tempfile.mkdtemp())
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
    with azurite_process() as server:
        container = server.new_container()
        store = AzureBlobStore(container, connection_string=server.connection_string)
        registry = ModelRegistry(store)
        card = registry.register(model.card, model.onnx_bytes, name="cancer")
        registry.promote("cancer", card.version)
        env = {
            **os.environ,
            "SKYSCORE_STORAGE": server.connection_string,
            "SKYSCORE_CONTAINER": container,
            "SKYSCORE_MODEL": "cancer",
            "PYTHONPATH": str(ROOT / "shared"),
        }
        cold = []
        for _ in range(args.runs):
            out = subprocess.run(
                [sys.executable, "-c", COLD, str(ROOT / "functions" / "azure"), body],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            cold.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"cold start (median of {args.runs} fresh processes):")
        for part in ("import", "first_request", "total"):
            print(f"  {part}: {statistics.median(c[part] for c in cold) * 1000:.0f} ms")

        # upload scoring: one Event Grid event for a CSV of args.rows rows
        repeats = -(-args.rows // len(features))
        big = features.loc[features.index.repeat(repeats)].head(args.rows)
        big[DEMO_ID] = [f"P{i:07d}" for i in range(len(big))]
        data = big.to_csv(index=False).encode()
        key = "incoming/cancer/big.csv"
        store.write_bytes(key, data)
        os.environ.update({k: v for k, v in env.items() if k.startswith("SKYSCORE_")})
        os.environ["SKYSCORE_FANOUT_BYTES"] = str(1 << 40)  # one function scores it all
        sys.path.insert(0, str(ROOT / "functions" / "azure"))
        import azure.functions as func
        import function_app

        [upload] = [
            f for f in function_app.app.get_functions() if f.get_function_name() == "upload_event"
        ]
        info = store.stat(key)
        assert info is not None
        event = func.EventGridEvent(
            id="measure",
            data={
                "eTag": info.version.strip('"'),
                "contentLength": info.size,
                "url": store.uri_for(key),
            },
            topic="/subscriptions/x",
            subject=f"/blobServices/default/containers/{container}/blobs/{key}",
            event_type="Microsoft.Storage.BlobCreated",
            event_time=None,
            data_version="",
        )
        started = time.perf_counter()
        upload.get_user_function()(event)
        elapsed = time.perf_counter() - started
        manifest = json.loads(
            store.read_bytes("predictions/cancer/big.predictions.csv.manifest.json")
        )
        assert manifest["rows_scored"] == args.rows, manifest
        print(
            f"upload scoring: {args.rows:,} rows ({len(data) / 1e6:.1f} MB CSV) in {elapsed:.2f} s"
            f" = {args.rows / elapsed:,.0f} rows/s (Azurite, one process)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
