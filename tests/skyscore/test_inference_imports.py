"""The inference path imports only onnxruntime, numpy, msgspec and the core.

scikit-learn, scipy and pandas (and the optional pyarrow) are made unimportable in a fresh interpreter, which then loads a
registered model, scores a CSV file and answers an HTTP request through the dataplane.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from skyscore.model.card import card_to_json
from skyscore.training.train import TrainResult

ALLOWED_THIRD_PARTY = {"numpy", "onnxruntime", "msgspec", "typing_extensions", "skyscore"}

CHILD = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            # pyarrow too: it is optional (a faster CSV path where installed), and the function
            # packages go without it
            if name.split(".")[0] in set(sys.argv[2].split(",")):
                raise ImportError(f"{name} is blocked on the inference path")
            return None

    sys.meta_path.insert(0, Block())
    before = set(sys.modules)
    from pathlib import Path
    from skyscore.adapters.local import LocalBlobStore
    from skyscore.model.registry import ModelRegistry
    from skyscore.batch.pipeline import score_path
    from skyscore.serving.dataplane import DataPlane, RegistryModelProvider, Request

    work = Path(sys.argv[1])
    registry = ModelRegistry(LocalBlobStore(work / "home"))
    predictor = registry.get_predictor("cancer")
    report = score_path(work / "in.csv", work / "out.csv", predictor)
    plane = DataPlane(RegistryModelProvider(registry))
    body = json.dumps({"instances": [json.loads((work / "row.json").read_text())]}).encode()
    response = plane.handle(Request("POST", "/v1/models/cancer/predict",
                                    {"content-type": "application/json"}, body))
    loaded = sorted({m.split(".")[0] for m in set(sys.modules) - before})
    third = [m for m in loaded if m not in sys.stdlib_module_names and not m.startswith("_")]
    print(json.dumps({"status": response.status, "scored": report.rows_scored, "modules": third}))
    """
)


def test_inference_path_needs_no_training_libraries(
    demo_model: TrainResult, data_dir: Path, tmp_path: Path
) -> None:
    import pandas as pd

    from skyscore.adapters.local import LocalBlobStore
    from skyscore.model.registry import ModelRegistry

    registry = ModelRegistry(LocalBlobStore(tmp_path / "home"))
    card = registry.register(demo_model.card, demo_model.onnx_bytes)
    registry.promote("cancer", card.version)
    frame = pd.read_csv(data_dir / "breast_cancer.csv").drop(columns=["diagnosis"]).head(50)
    frame.to_csv(tmp_path / "in.csv", index=False)
    (tmp_path / "row.json").write_text(frame.iloc[0].to_json())
    assert card_to_json(card)

    result = _child(tmp_path, blocked="sklearn,scipy,pandas,pyarrow")
    assert result["status"] == 200
    assert result["scored"] == 50
    assert set(result["modules"]) <= ALLOWED_THIRD_PARTY, result["modules"]
    assert {"numpy", "onnxruntime", "msgspec"} <= set(result["modules"])

    # Where pyarrow is installed it decodes and encodes CSV, and must not drag pandas in
    # (pyarrow imports it on some calls when it can): nothing is blocked but the trainers.
    result = _child(tmp_path, blocked="sklearn,scipy")
    assert (result["status"], result["scored"]) == (200, 50)
    with_arrow = ALLOWED_THIRD_PARTY | {"pyarrow", "cython_runtime", "cloudpickle"}  # its own
    assert set(result["modules"]) <= with_arrow, result["modules"]
    assert "pyarrow" in result["modules"] and "pandas" not in result["modules"]


def _child(work: Path, *, blocked: str) -> dict[str, Any]:
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(work), blocked],
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    answer: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    return answer
