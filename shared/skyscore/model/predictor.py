"""ONNX inference: one cached session per model artifact per process.

Imports only numpy, onnxruntime and the core: this module is what every serverless function
loads on a cold start.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from skyscore.errors import InvalidInput
from skyscore.model.card import CardMismatch, ModelCard, verify_artifact
from skyscore.model.schema import MISSING_CATEGORY, Batch, InputSchema

if TYPE_CHECKING:
    import onnxruntime

_SESSIONS: dict[str, onnxruntime.InferenceSession] = {}
_SESSIONS_LOCK = threading.Lock()


def _threads() -> int:
    """ONNX Runtime intra-op threads: ``SKYSCORE_ORT_THREADS`` (0 = one per core), else 1.

    One by default: a serverless function has about one vCPU, single rows gain nothing from
    more, and file scoring runs decoding on the other cores at the same time (measured here:
    ~250k vs ~220k rows/s CSV → CSV with one ORT thread against one per core, on 2 cores).
    """
    value = os.environ.get("SKYSCORE_ORT_THREADS", "")
    return int(value) if value.isdigit() else 1


def _session(sha256: str, onnx_bytes: bytes) -> onnxruntime.InferenceSession:
    """The process-wide session for an artifact, built once (artifacts are immutable)."""
    session = _SESSIONS.get(sha256)
    if session is not None:
        return session
    import onnxruntime

    with _SESSIONS_LOCK:
        session = _SESSIONS.get(sha256)
        if session is None:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = _threads()
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            options.enable_cpu_mem_arena = False
            session = onnxruntime.InferenceSession(
                onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"]
            )
            _SESSIONS[sha256] = session
    return session


def _direct_run(session: onnxruntime.InferenceSession) -> Callable[..., list[Any]]:
    """``run(outputs, feeds, run_options)`` of the C++ session under ``session.run``.

    The public method's Python wrapper checks the feed's names on every call: ~6 µs measured
    here, a fifth of a single-row request's own time. Our feeds come from the model card, so the
    check never fails. The bound C++ method is returned as it is (no wrapper frame of our own:
    on the single-row path every Python frame costs about a microsecond of cold caches). Falls
    back to the public method, whose signature is the same, where a version's wrapper holds its
    C++ session elsewhere (``test_predictor`` covers both).
    """
    run = getattr(getattr(session, "_sess", None), "run", None)
    if callable(run):
        direct: Callable[..., list[Any]] = run
        return direct
    public: Callable[..., list[Any]] = session.run
    return public


LABEL_OUTPUT = "label"  # what sklearn-onnx calls a classifier's own predicted label
_NUMERIC_TYPE = "tensor(float)"
_CATEGORICAL_TYPE = "tensor(string)"


def _width(shape: Sequence[Any]) -> int | None:
    """The second dimension of a ``[N, width]`` tensor when the graph fixes it."""
    if len(shape) == 2 and isinstance(shape[1], int):
        return shape[1]
    return None


def check_card_against_graph(card: ModelCard, session: onnxruntime.InferenceSession) -> None:
    """Refuse a card that does not describe its graph, naming every disagreement.

    Static checks: at least two distinct classes; the graph's inputs are exactly the card's
    tensors, of the right types, as wide as the card's feature lists; the probabilities
    output exists and is as wide as the class list. Then one row is run (microseconds, once
    per version per process): it checks a width the graph leaves open and, where the graph
    has its own ``label`` output, that the card's class order gives the same label, which is
    how reversed ``classes`` show.
    """
    onnx = card.onnx
    classes = card.class_names
    problems: list[str] = []
    if len(classes) < 2:
        problems.append(f"the card lists {len(classes)} class; a classifier needs at least two")
    elif len(set(classes)) != len(classes):
        problems.append(f"the card lists a class twice ({', '.join(classes)})")
    tensors = [
        (onnx.numeric_input, card.numeric_features, _NUMERIC_TYPE, "numeric"),
        (onnx.categorical_input, card.categorical_features, _CATEGORICAL_TYPE, "categorical"),
    ]
    inputs = {node.name: node for node in session.get_inputs()}
    expected = sorted(name for name, *_ in tensors if name is not None)
    if sorted(inputs) != expected:
        problems.append(f"the graph's inputs are {sorted(inputs)}, the card names {expected}")
    for name, features, kind, label in tensors:
        if name is None:
            if features:
                problems.append(f"the card lists {label} features but no {label} input")
            continue
        node = inputs.get(name)
        if node is None:
            continue
        if node.type != kind:
            problems.append(
                f"input {name!r} is {node.type}, the card's {label} features need {kind}"
            )
        width = _width(node.shape)
        if width is not None and width != len(features):
            problems.append(
                f"input {name!r} takes {width} columns, the card lists {len(features)} "
                f"{label} features"
            )
    outputs = {node.name: node for node in session.get_outputs()}
    output = outputs.get(onnx.probabilities_output)
    if output is None or output.type != _NUMERIC_TYPE:
        problems.append(
            f"the graph has no float output {onnx.probabilities_output!r} "
            f"(outputs: {', '.join(sorted(outputs))})"
        )
    elif (width := _width(output.shape)) is not None and width != len(classes):
        problems.append(
            f"output {onnx.probabilities_output!r} has {width} columns, the card lists "
            f"{len(classes)} classes"
        )
    if not problems:
        problems = _probe(card, session, LABEL_OUTPUT in outputs)
    if problems:
        raise CardMismatch(
            f"model {card.name!r} version {card.version!r}: card.json does not match "
            f"model.onnx: {'; '.join(problems)}; refusing to load it"
        )


def _probe(card: ModelCard, session: onnxruntime.InferenceSession, has_label: bool) -> list[str]:
    """Run one row (zeros, each feature's first category) and compare with the card."""
    onnx = card.onnx
    feeds: dict[str, np.ndarray] = {}
    if onnx.numeric_input is not None:
        feeds[onnx.numeric_input] = np.zeros((1, len(card.numeric_features)), dtype=np.float32)
    if onnx.categorical_input is not None:
        cells = [
            f.categories[0] if f.categories else MISSING_CATEGORY
            for f in card.features
            if f.kind == "categorical"
        ]
        feeds[onnx.categorical_input] = np.array([cells], dtype=object)
    wanted = [onnx.probabilities_output, *([LABEL_OUTPUT] if has_label else [])]
    try:
        results = session.run(wanted, feeds)
    except Exception as error:  # onnxruntime's own errors name the mismatch
        return [f"one row does not run: {error}"]
    probabilities = np.asarray(results[0])
    classes = card.class_names
    if probabilities.ndim != 2 or probabilities.shape[1] != len(classes):
        return [
            f"output {onnx.probabilities_output!r} has shape {list(probabilities.shape)}, "
            f"the card lists {len(classes)} classes"
        ]
    if has_label:
        row = probabilities[0].tolist()
        ranked = sorted(row, reverse=True)
        graph_label = str(np.asarray(results[1]).ravel()[0])
        card_label = classes[row.index(ranked[0])]
        if ranked[0] - ranked[1] > 1e-6 and graph_label != card_label:
            return [
                f"the graph predicts {graph_label!r} where the card's class order "
                f"({', '.join(classes)}) gives {card_label!r}: the classes are out of order"
            ]
    return []


class Predictor:
    """Scores batches for one model version, validating input against its card.

    Construction refuses (:class:`~skyscore.model.card.CardMismatch`) a card that does not
    describe its graph: wrong inputs or widths, a single or a duplicated class, classes out of
    the graph's order.
    """

    def __init__(self, card: ModelCard, onnx_bytes: bytes, *, verify: bool = True) -> None:
        if verify:
            verify_artifact(card, onnx_bytes)
        self.card = card
        self.schema = InputSchema.from_card(card)
        self.classes = list(card.classes)
        self.class_names = card.class_names
        self._session = _session(card.onnx.sha256, onnx_bytes)
        check_card_against_graph(card, self._session)
        self._run = _direct_run(self._session)
        self._numeric_input = card.onnx.numeric_input
        self._categorical_input = card.onnx.categorical_input
        self._outputs = [card.onnx.probabilities_output]
        self.key = (card.name, card.version)  # what per-version state is kept under

    @property
    def name(self) -> str:
        """The model's name."""
        return self.card.name

    @property
    def version(self) -> str:
        """The model's version."""
        return self.card.version

    def predict_proba(self, batch: Batch) -> np.ndarray:
        """Class probabilities, shape (n, n_classes), float32."""
        return self.predict_arrays(batch.numeric, batch.categorical)

    def predict_arrays(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        """Probabilities from ready tensors (numeric float32 (n, k), categorical object (n, m))."""
        n = numeric.shape[0] if self._numeric_input else categorical.shape[0]
        if n == 0:
            return np.empty((0, len(self.classes)), dtype=np.float32)
        feeds: dict[str, np.ndarray] = {}
        if self._numeric_input:
            feeds[self._numeric_input] = numeric
        if self._categorical_input:
            feeds[self._categorical_input] = categorical
        probabilities: np.ndarray = self._run(self._outputs, feeds, None)[0]
        return probabilities

    def label_indices(self, probabilities: np.ndarray) -> np.ndarray:
        """Index of the most probable class per row (ties go to the first class, as sklearn)."""
        indices: np.ndarray = probabilities.argmax(axis=1)
        return indices

    def instances_batch(self, instances: Sequence[Any], *, id_column: str | None = None) -> Batch:
        """The batch of HTTP-style instances, all valid, or a 422 naming the first bad field."""
        schema = self.schema
        if id_column is not None and id_column != schema.id_column:
            schema = InputSchema(schema.numeric, schema.categorical, id_column=id_column)
        batch, errors = schema.records_to_batch(instances, first_row=0)
        if errors:
            first = errors[0]
            raise InvalidInput(
                f"instance {first.row}: {first.column + ': ' if first.column else ''}{first.reason}",
                field=first.column,
                row=first.row,
                extra={"errors": [e.to_dict() for e in errors[:100]]},
            )
        return batch

    def predict_instances(
        self, instances: Sequence[Any], *, id_column: str | None = None
    ) -> list[dict[str, Any]]:
        """HTTP-style prediction: every instance valid or a 422 naming the first bad field.

        Each prediction is ``{"id"?: ..., "label": ..., "probabilities": {class: p}}``.
        """
        batch = self.instances_batch(instances, id_column=id_column)
        return self.format_predictions(batch, self.predict_proba(batch))

    def format_predictions(self, batch: Batch, probabilities: np.ndarray) -> list[dict[str, Any]]:
        """Prediction objects for a scored batch (shared by HTTP, JSON files and queues)."""
        names = self.class_names
        classes = self.classes
        # The label from the Python list rather than numpy's argmax (ties go to the first class
        # either way): on the single-row HTTP path, right after an ONNX run, a numpy call costs
        # microseconds of cold caches; this leaves one, ``tolist``.
        rows = probabilities.tolist()
        if len(rows) == 1:  # a single HTTP instance, the commonest request: no comprehension
            (row,) = rows
            label, scores = classes[row.index(max(row))], dict(zip(names, row, strict=True))
            if batch.ids is None:
                return [{"label": label, "probabilities": scores}]
            (id_,) = batch.ids
            return [{"id": id_, "label": label, "probabilities": scores}]
        if batch.ids is None:
            return [
                {
                    "label": classes[row.index(max(row))],
                    "probabilities": dict(zip(names, row, strict=True)),
                }
                for row in rows
            ]
        return [
            {
                "id": id_,
                "label": classes[row.index(max(row))],
                "probabilities": dict(zip(names, row, strict=True)),
            }
            for id_, row in zip(batch.ids, rows, strict=True)
        ]
