"""Landmark and Cobb angle metrics as the AASCE literature reports them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spinecascade.landmarks import N_POINTS, N_VERTEBRAE, centres


def normalised_mse(pred: np.ndarray, truth: np.ndarray, width: float, height: float) -> float:
    """(1/n) * sum over the n points of (dx/W)^2 + (dy/H)^2: Eq. 13 of the cascade paper, per image.

    n is 68 for the corners; the same measure over the 17 centres scores step 1 on its own.
    """
    pred, truth = np.asarray(pred, float).reshape(-1, 2), np.asarray(truth, float).reshape(-1, 2)
    if pred.shape != truth.shape:
        raise ValueError(f"need as many predicted as true points, got {len(pred)} and {len(truth)}")
    diff = (pred - truth) / [width, height]
    return float(np.sum(diff**2) / len(diff))


def vertical_miss_levels(pred: np.ndarray, truth: np.ndarray) -> float:
    """How far the predicted spine sits below (+) or above (-) the true one, in vertebral levels: the mean
    vertical miss of the 17 centres over the true spine's mean level height. About 1 marks a film whose
    vertebrae were all found one level off, an error no pixel figure names."""
    pred_c, true_c = centres(np.asarray(pred, float)), centres(np.asarray(truth, float))
    level = abs(true_c[-1, 1] - true_c[0, 1]) / (N_VERTEBRAE - 1)
    return float(np.mean(pred_c[:, 1] - true_c[:, 1]) / max(level, 1e-6))


def point_errors(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Euclidean distance of each of the 68 points, in pixels, or in mm when (x, y) spacing is given."""
    diff = (np.asarray(pred, float) - np.asarray(truth, float)).reshape(N_POINTS, 2)
    if spacing is not None:
        diff = diff * np.asarray(spacing, float)
    return np.linalg.norm(diff, axis=1)


def smape(pred_angles: np.ndarray, true_angles: np.ndarray) -> float:
    """The challenge's SMAPE in %: per image sum|a - b| / sum(a + b) over PT, MT, TL, averaged over images.

    An image whose predicted and true angles are all zero is a perfect prediction and counts as 0.
    """
    a = np.atleast_2d(np.asarray(pred_angles, float))
    b = np.atleast_2d(np.asarray(true_angles, float))
    num = np.abs(a - b).sum(axis=1)
    den = (a + b).sum(axis=1)
    per_image = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return float(100.0 * per_image.mean())


def circular_abs_error(pred_angles: np.ndarray, true_angles: np.ndarray) -> np.ndarray:
    """|a - b| on the circle of line directions: Cobb angles of 179 and 1 degrees differ by 2, not 178."""
    d = np.abs(np.asarray(pred_angles, float) - np.asarray(true_angles, float)) % 180.0
    return np.minimum(d, 180.0 - d)


@dataclass(frozen=True)
class Evaluation:
    n_images: int
    mse: float
    mean_px_error: float
    mean_mm_error: float | None
    smape: float | None
    cobb_mae: dict[str, float] | None
    cobb_circular_mae: dict[str, float] | None

    def as_dict(self) -> dict:
        return {
            "n_images": self.n_images,
            "mse": self.mse,
            "mean_px_error": self.mean_px_error,
            "mean_mm_error": self.mean_mm_error,
            "smape": self.smape,
            "cobb_mae": self.cobb_mae,
            "cobb_circular_mae": self.cobb_circular_mae,
        }


def evaluate(
    preds: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    sizes: Sequence[tuple[float, float]],
    pred_angles: np.ndarray | None = None,
    true_angles: np.ndarray | None = None,
    spacings: Sequence[Sequence[float] | None] | None = None,
) -> Evaluation:
    """All metrics at once; sizes are the original (width, height) of each image."""
    if not (len(preds) == len(truths) == len(sizes)) or not preds:
        raise ValueError(f"need equal, non-zero numbers of predictions, truths and sizes: "
                         f"{len(preds)}, {len(truths)}, {len(sizes)}")
    mse = float(np.mean([normalised_mse(p, t, w, h) for p, t, (w, h) in zip(preds, truths, sizes)]))
    px = float(np.mean([point_errors(p, t).mean() for p, t in zip(preds, truths)]))
    mm = None
    if spacings is not None and all(s is not None for s in spacings):
        mm = float(np.mean([point_errors(p, t, s).mean() for p, t, s in zip(preds, truths, spacings)]))
    s = mae = cmae = None
    if pred_angles is not None and true_angles is not None:
        a, b = np.asarray(pred_angles, float), np.asarray(true_angles, float)
        s = smape(a, b)
        names = ("PT", "MT", "TL")
        mae = {n: float(v) for n, v in zip(names, np.abs(a - b).mean(axis=0))}
        cmae = {n: float(v) for n, v in zip(names, circular_abs_error(a, b).mean(axis=0))}
    return Evaluation(len(preds), mse, px, mm, s, mae, cmae)
