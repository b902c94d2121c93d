"""Scoring method `landmark_uncertainty`: each unlabelled image's review flag and mean landmark uncertainty, cached
per model.

The score is the prediction's review flag (Prediction.quality) and the disagreement, in pixels, between the
predictions on an image and on its mirror (Prediction.image_uncertainty). It is stored in the datastore's image
info with the model version it was computed with, so the active-learning strategy reads it instead of running
the model over the datastore, and a new model's scores replace the old ones on the next run.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod

from lib.configs.landmarks import SCORING
from lib.landmark_model import LandmarkModel
from spinecascade.errors import ImageError

log = logging.getLogger(__name__)


Score = tuple[bool, float]  # (review needed, mean uncertainty in pixels); NaN: the image cannot be read


def cached_score(info: dict[str, Any], version: str) -> Score | None:
    """The stored score if it was computed by this model version."""
    entry = info.get(SCORING)
    if not isinstance(entry, dict) or entry.get("model") != version:
        return None
    value = float(entry["value"]) if entry.get("value") is not None else float("nan")
    return bool(entry.get("review_needed", False)), value


def score_image(model: LandmarkModel, datastore: Datastore, image_id: str, version: str) -> Score:
    """Predict, store the score in the image info, and return it."""
    entry: dict[str, Any] = {"model": version, "ts": int(time.time()), "unit": "pixel"}
    try:
        prediction = model.predict(model.load(datastore.get_image_uri(image_id)))
        entry.update(value=prediction.image_uncertainty, review_needed=prediction.quality.review_needed)
    except ImageError as exc:
        log.warning("cannot score %s: %s", image_id, exc)
        entry.update(value=None, error=str(exc))
    datastore.update_image_info(image_id, {SCORING: entry})
    return bool(entry.get("review_needed", False)), float("nan") if entry["value"] is None else float(entry["value"])


class LandmarkUncertaintyScoring(ScoringMethod):
    def __init__(self, model: LandmarkModel) -> None:
        super().__init__("Review flag and mean landmark uncertainty (mirror disagreement, pixels) of each unlabelled "
                         "image")
        self.model = model

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        version = self.model.version
        scored, cached = {}, 0
        for image_id in datastore.get_unlabeled_images():
            if cached_score(datastore.get_image_info(image_id), version) is not None:
                cached += 1
                continue
            scored[image_id] = score_image(self.model, datastore, image_id, version)
        log.info("%s: scored %d images with model %s (%d already scored)", SCORING, len(scored), version, cached)
        return {"model": version, "scored": len(scored), "cached": cached}
