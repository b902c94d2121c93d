"""Evaluate a predictor on labelled samples with the foundation's metrics, overall and image by image."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from spinecascade.io.dataset import Sample
from spinecascade.measurement.cobb import cobb_angles
from spinecascade.measurement.metrics import (
    Evaluation,
    evaluate,
    normalised_mse,
    point_errors,
    smape,
    vertical_miss_levels,
)
from spinecascade.measurement.quality import reason_kind
from spinecascade.method.prediction import Prediction, Predictor

PER_IMAGE_COLUMNS = ("image", "mse", "mean_px_error", "vertical_miss_levels", "smape", "uncertainty_px",
                     "review_needed", "reason_kinds", "PT", "MT", "TL", "PT_true", "MT_true", "TL_true")
# A spine found half a level or more above or below the truth on average has some vertebrae named wrong.
LEVEL_MISS = 0.5


def predict_samples(predictor: Predictor, samples: Sequence[Sample], progress: bool = True,
                    batch_size: int = 4) -> list[Prediction]:
    preds: list[Prediction] = []
    for start in tqdm(range(0, len(samples), batch_size), desc="evaluating", unit="batch", disable=not progress):
        preds += predictor.predict_batch([s.image_path for s in samples[start : start + batch_size]])
    return preds


def true_angles(samples: Sequence[Sample]) -> np.ndarray:
    """The official angles where the dataset has them, else the official algorithm on the labels."""
    return np.array([s.angles if s.angles is not None else cobb_angles(s.landmarks, s.height).as_array()
                     for s in samples])


def evaluate_predictions(preds: Sequence[Prediction], samples: Sequence[Sample]) -> Evaluation:
    return evaluate(
        [p.landmarks for p in preds],
        [s.landmarks for s in samples],
        [(s.width, s.height) for s in samples],
        np.array([p.cobb.as_array() for p in preds]),
        true_angles(samples),
    )


def evaluate_predictor(predictor: Predictor, samples: Sequence[Sample], progress: bool = True,
                       batch_size: int = 4) -> Evaluation:
    return evaluate_predictions(predict_samples(predictor, samples, progress, batch_size), samples)


def per_image_table(preds: Sequence[Prediction], samples: Sequence[Sample]) -> list[dict[str, float | str]]:
    """One row per image, in PER_IMAGE_COLUMNS, to find the films a model misses: the means hide whether an
    error is spread over all films or is a few films placed a whole level off."""
    rows = []
    for p, s, truth in zip(preds, samples, true_angles(samples)):
        angles = p.cobb.as_array()
        rows.append({
            "image": s.name,
            "mse": normalised_mse(p.landmarks, s.landmarks, s.width, s.height),
            "mean_px_error": float(point_errors(p.landmarks, s.landmarks).mean()),
            "vertical_miss_levels": vertical_miss_levels(p.landmarks, s.landmarks),
            "smape": smape(angles, truth),
            "uncertainty_px": p.image_uncertainty,
            "review_needed": p.quality.review_needed,
            "reason_kinds": " ".join(sorted({reason_kind(reason) for reason in p.quality.reasons})),
            **dict(zip(("PT", "MT", "TL"), map(float, angles))),
            **dict(zip(("PT_true", "MT_true", "TL_true"), map(float, truth))),
        })
    return rows


def review_flag_summary(preds: Sequence[Prediction], samples: Sequence[Sample]) -> dict:
    """The films a level or more off (LEVEL_MISS) and what the review flag marks among them and among the others:
    in all, and by each kind of reason (`alone`: the films where that kind is the only one), to calibrate it."""
    missed = [abs(vertical_miss_levels(p.landmarks, s.landmarks)) >= LEVEL_MISS for p, s in zip(preds, samples)]
    flagged = [p.quality.review_needed for p in preds]
    by_reason: dict[str, dict[str, int]] = {}
    for pred, miss in zip(preds, missed):
        kinds = {reason_kind(reason) for reason in pred.quality.reasons}
        group = "level_misses" if miss else "others"
        for kind in kinds:
            counts = by_reason.setdefault(kind, dict.fromkeys(
                ("level_misses", "level_misses_alone", "others", "others_alone"), 0))
            counts[group] += 1
            counts[f"{group}_alone"] += len(kinds) == 1
    return {"level_misses": sum(missed),
            "review_flag": {"flagged": sum(flagged),
                            "level_misses_flagged": sum(f and m for f, m in zip(flagged, missed)),
                            "other_films_flagged": sum(f and not m for f, m in zip(flagged, missed)),
                            "by_reason": dict(sorted(by_reason.items()))}}
