"""Evaluate a predictor on labelled samples with the foundation's metrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from spinecascade.io.dataset import Sample
from spinecascade.measurement.cobb import cobb_angles
from spinecascade.measurement.metrics import Evaluation, evaluate
from spinecascade.method.prediction import Predictor


def evaluate_predictor(predictor: Predictor, samples: Sequence[Sample], progress: bool = True,
                       batch_size: int = 4) -> Evaluation:
    """Metrics over `samples`; true angles are the official ones where the dataset has them."""
    preds = []
    for start in tqdm(range(0, len(samples), batch_size), desc="evaluating", unit="batch", disable=not progress):
        preds += predictor.predict_batch([s.image_path for s in samples[start : start + batch_size]])
    true_angles = np.array([s.angles if s.angles is not None else cobb_angles(s.landmarks, s.height).as_array()
                            for s in samples])
    return evaluate(
        [p.landmarks for p in preds],
        [s.landmarks for s in samples],
        [(s.width, s.height) for s in samples],
        np.array([p.cobb.as_array() for p in preds]),
        true_angles,
    )
