"""Labelled data for evaluation, read with the serving decoders (no pandas on this path).

The quality gate scores candidate and current models on labelled rows; reading them with the
same decoders that score production traffic guarantees both see the tensors they will serve.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from skyscore.formats import decode, detect_format
from skyscore.model.predictor import Predictor
from skyscore.model.schema import InputSchema
from skyscore.ports import BlobStore


def read_labelled(
    store: BlobStore, keys: Sequence[str], predictor: Predictor
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(numeric, categorical, labels) of every valid, labelled row in ``keys``.

    The target column rides through the decoder as the pass-through id column, so labels come
    back aligned with the rows that validated; rows without a label are left out.
    """
    card = predictor.card
    schema = InputSchema(card.numeric_features, card.categorical_features, id_column=card.target)
    numeric_parts: list[np.ndarray] = []
    categorical_parts: list[np.ndarray] = []
    label_parts: list[np.ndarray] = []
    for key in keys:
        with store.open_read(key) as handle:
            for batch, _errors in decode(detect_format(key), handle, schema):
                labels = np.asarray(
                    ["" if v is None else str(v) for v in batch.ids or []], dtype=object
                )
                keep = labels != ""
                numeric_parts.append(batch.numeric[keep])
                categorical_parts.append(batch.categorical[keep])
                label_parts.append(labels[keep])
    if not numeric_parts:
        empty = schema.empty_batch()
        return empty.numeric, empty.categorical, np.empty(0, dtype=object)
    return (
        np.concatenate(numeric_parts),
        np.concatenate(categorical_parts),
        np.concatenate(label_parts),
    )
