"""Training entrypoint: labelled CSV/Parquet → scikit-learn Pipeline → verified ONNX + model card.

The same entrypoint runs locally (``skyscore train``, the local job runner) and inside the
managed training jobs, whose container contracts it honours:

* SageMaker: data from ``SM_CHANNEL_TRAIN``, output to ``SM_MODEL_DIR``, hyperparameters from
  ``/opt/ml/input/config/hyperparameters.json`` (strings, as SageMaker writes them).
* Vertex AI: data from ``AIP_TRAINING_DATA_URI``, output to ``AIP_MODEL_DIR``; ``gs://`` URIs
  are read through the Cloud Storage FUSE mount Vertex provides at ``/gcs/``.
* Azure ML: input and output paths as arguments (``DATA`` and ``--output-dir``).

Estimators: ``logreg`` and ``hgb`` (scikit-learn, CPU only) and ``xgboost`` (XGBoost's histogram
trees, on CUDA when a device is visible, see :mod:`skyscore.training.xgb`). Whatever the estimator,
the whole pipeline becomes one ONNX graph, refused unless it matches the fitted model within 1e-4.

Imports scikit-learn, pandas and skl2onnx inside functions: this module is training-only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from skyscore.errors import ParityError, SkyscoreError, TrainingDataError
from skyscore.model.card import (
    CategoricalBaseline,
    Feature,
    ModelCard,
    NumericBaseline,
    OnnxInfo,
    PredictionBaseline,
    TrainingInfo,
    card_to_json,
    sha256_hex,
)

if TYPE_CHECKING:
    import pandas as pd

ESTIMATORS = ("logreg", "hgb", "xgboost")
PARITY_TOLERANCE = 1e-4
MISSING_FILL = "__missing__"
BASELINE_BINS = 10
DATA_SUFFIXES = (".csv", ".parquet", ".pq")
SAGEMAKER_HYPERPARAMETERS = Path("/opt/ml/input/config/hyperparameters.json")


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """What to train: one labelled dataset, one target, one estimator."""

    data: str
    target: str
    name: str
    estimator: str = "hgb"
    id_column: str | None = None
    holdout_fraction: float = 0.2
    seed: int = 0
    max_iter: int = 200  # boosting rounds for hgb and xgboost
    description: str = ""
    device: str = "auto"  # xgboost only: auto (CUDA when visible), cpu or cuda


@dataclass(frozen=True, slots=True)
class TrainResult:
    """A verified candidate: the card, the ONNX bytes and the scikit-learn pipeline's scores."""

    card: ModelCard
    onnx_bytes: bytes
    seconds: float
    pipeline: Any = None  # the fitted scikit-learn Pipeline (positional columns), for baselines
    fit_seconds: float = 0.0  # the pipeline's fit alone (what a GPU speeds up)


def gcs_fuse_path(uri: str) -> str:
    """A local path for a data URI: Vertex AI mounts Cloud Storage at ``/gcs`` (``gs://b/k`` is
    readable as ``/gcs/b/k``), and ``file://`` URIs (the local job runner) are plain paths."""
    if uri.startswith("gs://"):
        return "/gcs/" + uri.removeprefix("gs://")
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(uri).path)
    return uri


def data_files(data: str) -> list[Path]:
    """The CSV/Parquet files a data argument names (a file, or every such file in a directory)."""
    path = Path(gcs_fuse_path(data))
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in DATA_SUFFIXES)
        if not files:
            raise TrainingDataError(f"no .csv or .parquet files under {data}")
        return files
    if not path.exists():
        raise TrainingDataError(f"training data {data} does not exist")
    if path.suffix.lower() not in DATA_SUFFIXES:
        raise TrainingDataError(f"training data must be .csv or .parquet, got {path.name}")
    return [path]


def read_training_frame(files: Sequence[Path]) -> tuple[pd.DataFrame, str]:
    """Concatenate the files and fingerprint their bytes (sha256 over every file in order)."""
    import pandas as pd

    digest = hashlib.sha256()
    frames = []
    for file in files:
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        if file.suffix.lower() == ".csv":
            frames.append(pd.read_csv(file))
        else:
            frames.append(pd.read_parquet(file))
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return frame, digest.hexdigest()


def split_columns(
    frame: pd.DataFrame, target: str, id_column: str | None
) -> tuple[list[str], list[str]]:
    """Numeric and categorical feature columns: every column but the target and the id."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    if target not in frame.columns:
        raise TrainingDataError(
            f"target column {target!r} not in the data (columns: {', '.join(map(str, frame.columns))})",
            field=target,
        )
    if id_column is not None and id_column not in frame.columns:
        raise TrainingDataError(f"id column {id_column!r} not in the data", field=id_column)
    numeric: list[str] = []
    categorical: list[str] = []
    for column in frame.columns:
        if column in (target, id_column):
            continue
        series = frame[column]
        if is_numeric_dtype(series) and not is_bool_dtype(series):
            numeric.append(str(column))
        else:
            categorical.append(str(column))
    if not numeric and not categorical:
        raise TrainingDataError("the data has no feature columns besides the target")
    return numeric, categorical


def prepare_features(
    frame: pd.DataFrame, numeric: list[str], categorical: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The exact tensors served later: float32 numerics, string categoricals ('' = missing)."""
    num = frame[numeric].to_numpy(dtype=np.float32, na_value=np.nan) if numeric else None
    cat = np.empty((len(frame), len(categorical)), dtype=object)
    for j, column in enumerate(categorical):
        values = frame[column]
        cat[:, j] = np.where(values.isna(), "", values.astype(str))
    if num is None:
        num = np.empty((len(frame), 0), dtype=np.float32)
    if num.size and not np.isfinite(num[~np.isnan(num)]).all():
        raise TrainingDataError("numeric features contain infinite values or exceed float32 range")
    return np.ascontiguousarray(num), cat


def build_pipeline(
    estimator: str,
    n_numeric: int,
    n_categorical: int,
    *,
    seed: int,
    max_iter: int,
    device: str = "cpu",
) -> Any:
    """Impute + scale numerics (linear models only: trees need no scaler), impute + one-hot
    categoricals (unknown categories ignored), then the estimator (``device`` is XGBoost's)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    if estimator not in ESTIMATORS:
        raise TrainingDataError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}")
    numeric_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if estimator == "logreg":
        numeric_steps.append(("scale", StandardScaler()))
    categorical_steps = [
        # skl2onnx converts a string imputer only when missing_values is itself a string.
        ("impute", SimpleImputer(missing_values="", strategy="constant", fill_value=MISSING_FILL)),
        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
    ]
    transformers: list[tuple[str, Any, list[int]]] = []
    if n_numeric:
        transformers.append(("numeric", Pipeline(numeric_steps), list(range(n_numeric))))
    if n_categorical:
        indices = list(range(n_numeric, n_numeric + n_categorical))
        transformers.append(("categorical", Pipeline(categorical_steps), indices))
    model: Any
    if estimator == "logreg":
        model = LogisticRegression(max_iter=max(max_iter, 1000), random_state=seed)
    elif estimator == "xgboost":
        from skyscore.training.xgb import make_classifier

        model = make_classifier(
            "cuda" if device == "cuda" else "cpu", seed=seed, n_estimators=max_iter
        )
    else:
        model = HistGradientBoostingClassifier(max_iter=max_iter, random_state=seed)
    return Pipeline([("preprocess", ColumnTransformer(transformers)), ("classifier", model)])


def _design_frame(num: np.ndarray, cat: np.ndarray) -> pd.DataFrame:
    """Positional frame (numerics first) matching the ONNX inputs' column order."""
    import pandas as pd

    frame = pd.DataFrame(num.astype(np.float64))
    for j in range(cat.shape[1]):
        frame[num.shape[1] + j] = cat[:, j]
    return frame


def _round_imputer_statistics(pipeline: Any) -> None:
    """Store numeric imputer fills as float32 values, exactly as ONNX will apply them."""
    for name, transformer, _ in pipeline.named_steps["preprocess"].transformers_:
        if name == "numeric":
            imputer = transformer.named_steps["impute"]
            imputer.statistics_ = imputer.statistics_.astype(np.float32).astype(np.float64)


def numeric_baseline(values: np.ndarray) -> NumericBaseline:
    """Decile edges (deduplicated) and the share of non-missing training values in each bin."""
    present = values[~np.isnan(values)].astype(np.float64)
    missing_rate = float(1.0 - present.size / values.size) if values.size else 0.0
    if present.size == 0:
        return NumericBaseline(
            edges=[],
            frequencies=[1.0],
            missing_rate=missing_rate,
            min=0.0,
            max=0.0,
            mean=0.0,
            std=0.0,
        )
    quantiles = np.quantile(present, np.linspace(0, 1, BASELINE_BINS + 1)[1:-1])
    edges = np.unique(quantiles.astype(np.float32).astype(np.float64))
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=edges.size + 1)
    return NumericBaseline(
        edges=edges.tolist(),
        frequencies=(counts / present.size).tolist(),
        missing_rate=missing_rate,
        min=float(present.min()),
        max=float(present.max()),
        mean=float(present.mean()),
        std=float(present.std()),
    )


def categorical_baseline(values: np.ndarray) -> CategoricalBaseline:
    """Share of each category among non-missing training values."""
    present = values[values != ""]
    missing_rate = float(1.0 - present.size / values.size) if values.size else 0.0
    names, counts = np.unique(present.astype(str), return_counts=True)
    total = max(int(counts.sum()), 1)
    return CategoricalBaseline(
        frequencies={str(n): int(c) / total for n, c in zip(names, counts, strict=True)},
        missing_rate=missing_rate,
    )


def holdout_metrics(
    y_true: np.ndarray, probabilities: np.ndarray, classes: np.ndarray
) -> dict[str, float]:
    """Held-out quality of what will be served (the ONNX probabilities)."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    predicted = classes[probabilities.argmax(axis=1)]
    metrics = {
        "accuracy": float(accuracy_score(y_true, predicted)),
        "f1_macro": float(f1_score(y_true, predicted, average="macro")),
        "log_loss": float(log_loss(y_true, _normalised(probabilities), labels=classes)),
    }
    if len(np.unique(y_true)) == len(classes):
        if len(classes) == 2:
            metrics["roc_auc"] = float(roc_auc_score(y_true == classes[1], probabilities[:, 1]))
        else:
            metrics["roc_auc"] = float(
                roc_auc_score(y_true, probabilities, multi_class="ovr", labels=classes)
            )
    return metrics


def _normalised(probabilities: np.ndarray) -> np.ndarray:
    """float32 ONNX probabilities re-summed to one in float64 (log_loss insists)."""
    clipped = np.clip(probabilities.astype(np.float64), 1e-7, 1.0)
    result: np.ndarray = clipped / clipped.sum(axis=1, keepdims=True)
    return result


def _python_scalar(value: Any) -> str | int:
    """Class labels as JSON scalars (numpy ints → int; floats that are whole → int)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int):
        return value
    return str(value)


def split_holdout(
    num: np.ndarray, cat: np.ndarray, y: np.ndarray, config: TrainConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out rows by the hash of their features (see :mod:`skyscore.training.holdout`), so the quality
    gate can find the same rows later; fall back to a seeded stratified split when the hash split
    leaves a side without every class (tiny data)."""
    from skyscore.training.holdout import holdout_mask

    mask = holdout_mask(num, cat, config.holdout_fraction)
    hold_idx, train_idx = np.flatnonzero(mask), np.flatnonzero(~mask)
    classes = set(np.unique(y).tolist())
    if set(np.unique(y[train_idx]).tolist()) == classes and len(hold_idx) >= 2:
        return train_idx, hold_idx
    from sklearn.model_selection import train_test_split

    _, counts = np.unique(y, return_counts=True)
    stratify = y if counts.min() >= 2 else None
    indices = np.arange(len(y))
    train_part, hold_part = train_test_split(
        indices, test_size=config.holdout_fraction, random_state=config.seed, stratify=stratify
    )
    return np.sort(train_part), np.sort(hold_part)


def train(config: TrainConfig, *, log: Any = None) -> TrainResult:
    """Fit, convert, verify parity and describe one model; raises rather than publish a bad one."""
    say = log or (lambda message: None)
    started = time.perf_counter()
    files = data_files(config.data)
    say(f"reading {len(files)} file(s) from {config.data}")
    frame, fingerprint = read_training_frame(files)
    numeric, categorical = split_columns(frame, config.target, config.id_column)
    frame = frame[frame[config.target].notna()].reset_index(drop=True)
    y = np.asarray([_python_scalar(v) for v in frame[config.target].to_numpy()], dtype=object)
    classes_seen = np.unique(y.astype(str))
    if len(classes_seen) < 2:
        raise TrainingDataError(f"target {config.target!r} has fewer than two classes")
    if len(frame) < 20:
        raise TrainingDataError(f"only {len(frame)} labelled rows; at least 20 are needed")
    num, cat = prepare_features(frame, numeric, categorical)
    y_fit = y.astype(str) if any(isinstance(v, str) for v in y) else y.astype(np.int64)
    train_idx, hold_idx = split_holdout(num, cat, y_fit, config)
    say(
        f"training {config.estimator} on {len(train_idx):,} rows "
        f"({len(numeric)} numeric, {len(categorical)} categorical features)"
    )
    device: Literal["cpu", "cuda"] = "cpu"
    device_reason = "cpu only"
    reference = "scikit-learn"
    extra_params: dict[str, str | int | float | bool | None] = {}
    if config.estimator == "xgboost":
        from skyscore.training.xgb import choose_device

        choice = choose_device(config.device)
        device, device_reason, reference = choice.device, choice.reason, "XGBoost"
        say(f"xgboost trains on {device}: {device_reason}")
    pipeline = build_pipeline(
        config.estimator,
        len(numeric),
        len(categorical),
        seed=config.seed,
        max_iter=config.max_iter,
        device=device,
    )
    fit_started = time.perf_counter()
    pipeline.fit(_design_frame(num[train_idx], cat[train_idx]), y_fit[train_idx])
    fit_seconds = time.perf_counter() - fit_started
    say(f"fitted on {device} in {fit_seconds:.2f}s")
    _round_imputer_statistics(pipeline)
    if config.estimator == "xgboost":
        from skyscore.training.xgb import predict_on_cpu, xgboost_params

        classifier = pipeline.named_steps["classifier"]
        extra_params = xgboost_params(classifier, device_reason)
        predict_on_cpu(classifier)

    say("converting the whole pipeline to ONNX")
    from skyscore.training.export import (
        CATEGORICAL_INPUT,
        NUMERIC_INPUT,
        PROBABILITIES_OUTPUT,
        TARGET_OPSET,
        pipeline_to_onnx,
    )

    onnx_bytes = pipeline_to_onnx(pipeline, len(numeric), len(categorical), name=config.name)
    onnx_probabilities = _onnx_probabilities(
        onnx_bytes, num[hold_idx], cat[hold_idx], bool(numeric), bool(categorical)
    )
    sklearn_probabilities = pipeline.predict_proba(_design_frame(num[hold_idx], cat[hold_idx]))
    parity = (
        float(np.abs(onnx_probabilities - sklearn_probabilities).max()) if len(hold_idx) else 0.0
    )
    say(f"ONNX vs {reference} on {len(hold_idx):,} held-out rows: max |Δp| = {parity:.2e}")
    if not parity <= PARITY_TOLERANCE:
        raise ParityError(
            f"ONNX probabilities differ from {reference} by {parity:.3g} "
            f"(> {PARITY_TOLERANCE}) on held-out rows; the model is not published",
            extra={"max_abs_diff": parity},
        )
    classes = pipeline.classes_
    metrics = holdout_metrics(y_fit[hold_idx], onnx_probabilities, classes)
    predicted = onnx_probabilities.argmax(axis=1)
    class_names = [str(_python_scalar(c)) for c in classes]
    prediction_baseline = PredictionBaseline(
        class_frequencies={
            name: float(np.mean(predicted == i)) for i, name in enumerate(class_names)
        }
    )
    features = [
        Feature(name=name, kind="numeric", baseline=numeric_baseline(num[train_idx, j]))
        for j, name in enumerate(numeric)
    ]
    onehot = (
        pipeline.named_steps["preprocess"].named_transformers_["categorical"].named_steps["onehot"]
        if categorical
        else None
    )
    for j, name in enumerate(categorical):
        known = [str(c) for c in onehot.categories_[j] if str(c) != MISSING_FILL] if onehot else []
        features.append(
            Feature(
                name=name,
                kind="categorical",
                categories=known,
                baseline=categorical_baseline(cat[train_idx, j]),
            )
        )
    created = datetime.now(UTC)
    params: dict[str, str | int | float | bool | None] = {
        "max_iter": config.max_iter,
        "holdout_fraction": config.holdout_fraction,
        **extra_params,
    }
    card = ModelCard(
        name=config.name,
        version="candidate-" + created.strftime("%Y%m%dT%H%M%S%fZ"),
        created_at=created.isoformat(timespec="seconds").replace("+00:00", "Z"),
        target=config.target,
        id_column=config.id_column,
        features=features,
        classes=[_python_scalar(c) for c in classes],
        metrics=metrics,
        prediction_baseline=prediction_baseline,
        training=TrainingInfo(
            data_uri=config.data,
            data_sha256=fingerprint,
            rows=len(frame),
            train_rows=len(train_idx),
            holdout_rows=len(hold_idx),
            seed=config.seed,
            estimator=config.estimator,
            params=params,
            device=device,
        ),
        onnx=OnnxInfo(
            sha256=sha256_hex(onnx_bytes),
            size_bytes=len(onnx_bytes),
            opset=TARGET_OPSET,
            numeric_input=NUMERIC_INPUT if numeric else None,
            categorical_input=CATEGORICAL_INPUT if categorical else None,
            probabilities_output=PROBABILITIES_OUTPUT,
            parity_max_abs_diff=parity,
            parity_rows=len(hold_idx),
        ),
        description=config.description,
    )
    return TrainResult(
        card=card,
        onnx_bytes=onnx_bytes,
        seconds=time.perf_counter() - started,
        pipeline=pipeline,
        fit_seconds=fit_seconds,
    )


def _onnx_probabilities(
    onnx_bytes: bytes, num: np.ndarray, cat: np.ndarray, has_numeric: bool, has_categorical: bool
) -> np.ndarray:
    import onnxruntime

    from skyscore.training.export import CATEGORICAL_INPUT, NUMERIC_INPUT, PROBABILITIES_OUTPUT

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    feeds: dict[str, np.ndarray] = {}
    if has_numeric:
        feeds[NUMERIC_INPUT] = np.ascontiguousarray(num, dtype=np.float32)
    if has_categorical:
        feeds[CATEGORICAL_INPUT] = cat
    result: np.ndarray = session.run([PROBABILITIES_OUTPUT], feeds)[0]
    return result.astype(np.float64)


def write_artifacts(result: TrainResult, output_dir: Path) -> tuple[Path, Path]:
    """Write ``model.onnx`` and ``card.json`` (the layout every job runner collects)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    model_path = output_dir / "model.onnx"
    card_path = output_dir / "card.json"
    model_path.write_bytes(result.onnx_bytes)
    card_path.write_bytes(card_to_json(result.card))
    return model_path, card_path


def _sagemaker_hyperparameters() -> dict[str, str]:
    """SageMaker writes hyperparameters as a JSON object of strings."""
    path = Path(os.environ.get("SM_HPS_PATH", SAGEMAKER_HYPERPARAMETERS))
    if path.is_file():
        loaded = json.loads(path.read_text())
        return {str(k): str(v) for k, v in loaded.items()}
    return {}


def build_parser() -> argparse.ArgumentParser:
    """The training entrypoint's arguments (shared by ``skyscore train``)."""
    parser = argparse.ArgumentParser(
        prog="python -m skyscore.training.train",
        description="Train a scikit-learn pipeline, export it to ONNX, verify parity, write a card.",
    )
    parser.add_argument("data", nargs="?", help="CSV/Parquet file or directory of them")
    parser.add_argument("--target", help="label column")
    parser.add_argument("--name", help="model name")
    parser.add_argument("--estimator", choices=ESTIMATORS, default=None, help="default: hgb")
    parser.add_argument("--id-column", default=None, help="column passed through, not a feature")
    parser.add_argument("--output-dir", default=None, help="where model.onnx and card.json go")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-iter", type=int, default=None)
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default=None,
        help="xgboost only; default: auto (CUDA when a device is visible, else cpu)",
    )
    return parser


def config_from_args(args: argparse.Namespace, env: dict[str, str]) -> tuple[TrainConfig, Path]:
    """Merge arguments with the managed-job contracts (arguments win over the environment)."""
    hyper = _sagemaker_hyperparameters() if "SM_MODEL_DIR" in env else {}
    data = args.data or env.get("SM_CHANNEL_TRAIN") or env.get("AIP_TRAINING_DATA_URI")
    output = (
        args.output_dir
        or env.get("SM_MODEL_DIR")
        or (gcs_fuse_path(env["AIP_MODEL_DIR"]) if "AIP_MODEL_DIR" in env else None)
        or "."
    )
    target = args.target or hyper.get("target")
    name = args.name or hyper.get("name") or "model"
    if not data:
        raise TrainingDataError(
            "no training data: pass DATA or set SM_CHANNEL_TRAIN / AIP_TRAINING_DATA_URI"
        )
    if not target:
        raise TrainingDataError("no target column: pass --target (or the 'target' hyperparameter)")
    config = TrainConfig(
        data=data,
        target=target,
        name=name,
        estimator=args.estimator or hyper.get("estimator", "hgb"),
        id_column=args.id_column or hyper.get("id-column") or hyper.get("id_column"),
        seed=args.seed if args.seed is not None else int(hyper.get("seed", 0)),
        max_iter=args.max_iter if args.max_iter is not None else int(hyper.get("max-iter", 200)),
        device=args.device or hyper.get("device", "auto"),
    )
    return config, Path(output)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m skyscore.training.train``: exit 0 with artifacts written, else 1 with a one-line reason."""
    args = build_parser().parse_args(argv)
    try:
        config, output_dir = config_from_args(args, dict(os.environ))
        result = train(config, log=lambda m: print(m, file=sys.stderr))
        model_path, card_path = write_artifacts(result, output_dir)
    except SkyscoreError as error:
        print(f"skyscore train: {error.detail}", file=sys.stderr)
        return 1
    print(json.dumps({"model": str(model_path), "card": str(card_path), **result.card.metrics}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
