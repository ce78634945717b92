"""The predictor's ONNX Runtime call: the direct C++ run and the public method agree."""

from __future__ import annotations

from typing import Any

import numpy as np

from skyscore.model.predictor import Predictor, _direct_run


def test_direct_run_is_taken_and_matches_the_public_run(
    demo_predictor: Predictor, hgb_predictor: Predictor
) -> None:
    for predictor in (demo_predictor, hgb_predictor):
        session = predictor._session
        assert predictor._run != session.run  # a test that fails if the shortcut is never taken
        schema = predictor.schema
        batch = schema.empty_batch()
        rng = np.random.default_rng(0)
        numeric = rng.normal(size=(5, len(schema.numeric))).astype(np.float32)
        categorical = np.full((5, len(schema.categorical)), "unseen", dtype=object)
        feeds: dict[str, Any] = {}
        if predictor._numeric_input:
            feeds[predictor._numeric_input] = numeric
        if predictor._categorical_input:
            feeds[predictor._categorical_input] = categorical
        public = session.run(predictor._outputs, feeds)[0]
        assert np.array_equal(predictor.predict_arrays(numeric, categorical), public)
        assert predictor.predict_proba(batch).shape == (0, len(predictor.classes))


def test_direct_run_falls_back_to_the_public_method() -> None:
    class Session:
        def run(
            self, outputs: list[str], feeds: dict[str, Any], run_options: Any = None
        ) -> list[Any]:
            return [outputs, feeds, run_options]

    session = Session()
    assert _direct_run(session) == session.run
    assert _direct_run(session)(["p"], {}, None) == [["p"], {}, None]
