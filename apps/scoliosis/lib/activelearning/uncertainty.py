"""Active-learning strategy `landmark_uncertainty`: the unlabelled image the model is least sure about.

Images whose prediction carries the review flag come first (a flagged answer is the one a person must look at
anyway); among them, and among the rest, the one with the highest mean landmark uncertainty.

Scores come from the cache the `landmark_uncertainty` scoring method fills. Images it has not reached yet
(new uploads, or all of them right after a new model) are scored here, a few per request, so that a request
stays quick on a large datastore; the answer says how many images it compared.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from lib.configs.landmarks import STRATEGY
from lib.landmark_model import LandmarkModel
from lib.scoring.uncertainty import Score, cached_score, score_image
from spinecascade.errors import ModelFileError

log = logging.getLogger(__name__)


class LandmarkUncertainty(Strategy):
    def __init__(self, model: LandmarkModel, on_demand: int) -> None:
        super().__init__("Unlabelled image flagged for review, else with the highest landmark uncertainty")
        self.model = model
        self.on_demand = on_demand

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        images = sorted(datastore.get_unlabeled_images())
        if not images:
            return None
        try:
            version = self.model.version
        except ModelFileError as exc:
            log.error("%s unavailable: %s", STRATEGY, exc)
            raise HTTPException(503, "the landmark model is not available on this server") from None
        scores: dict[str, Score] = {}
        unscored = []
        for image_id in images:
            score = cached_score(datastore.get_image_info(image_id), version)
            if score is None:
                unscored.append(image_id)
            else:
                scores[image_id] = score
        for image_id in unscored[: self.on_demand]:
            scores[image_id] = score_image(self.model, datastore, image_id, version)
        readable = {k: v for k, v in scores.items() if not math.isnan(v[1])}
        if not readable:
            log.warning("%s: none of the %d scored images can be read", STRATEGY, len(scores))
            return None
        best = max(readable, key=readable.__getitem__)
        review_needed, uncertainty = readable[best]
        not_compared = len(images) - len(scores)
        log.info("%s: %s (%s, uncertainty %.1f px; %d compared, %d not scored yet)", STRATEGY, best,
                 "flagged for review" if review_needed else "no review flag", uncertainty, len(readable),
                 not_compared)
        return {"id": best, "review_needed": review_needed, "uncertainty": uncertainty, "model": version,
                "compared": len(readable), "not_scored_yet": not_compared}
