"""Inference task `vertebral_landmarks`: 68 corners, centres, Cobb angles and uncertainty for one radiograph.

The answer is a label document in our JSON format (docs/label-format.md) with the prediction's extra keys,
so a client can show it, edit it and send it back as a label unchanged. MONAI Label's default multipart answer
(what the stock MONAI Label module in 3D Slicer asks for) adds a Slicer markups file with the 68 named points.
Bad input is the client's error and gets a 4xx answer that says what is wrong; it never reaches the model.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from lib.configs.landmarks import ConfigError, flag
from lib.landmark_model import LandmarkModel
from spinecascade.errors import ImageError, ModelFileError
from spinecascade.io.labels import label_to_json_dict, label_to_mrk_dict
from spinecascade.landmarks import VERTEBRAE

log = logging.getLogger(__name__)

# Set by the app for a datastore image (the id the client asked for); absent for an uploaded file.
IMAGE_ID = "image_id"
UPLOAD_NAME = "uploaded file"


class VertebralLandmarks(InferTask):
    def __init__(self, model: LandmarkModel) -> None:
        super().__init__(
            type=InferType.DETECTION,
            labels=list(VERTEBRAE),
            dimension=2,
            description="Corners of T1-L5 (68 landmarks), vertebra centres and Cobb angles on an AP spine X-ray",
            config={"save_label": False},
        )
        self.model = model

    def is_valid(self) -> bool:
        return self.model.is_available()

    def get_path(self, validate: bool = True) -> str | None:
        """The model file, for GET /model/vertebral_landmarks; MONAI Label asks unvalidated only for an upload."""
        if not validate:
            raise HTTPException(405, "PUT /model would overwrite the model without checks or history: fine-tune "
                                     "it with POST /train/vertebral_landmarks, or replace the file on the server")
        return str(self.model.path) if self.model.is_available() else None

    def __call__(self, request: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        started = time.perf_counter()
        try:
            save_label = flag(request.get("save_label", False), "save_label")
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from None
        image_id = request.get(IMAGE_ID)
        path = request.get("image")
        if not isinstance(path, str) or not path:
            raise HTTPException(404, f"no image {image_id!r} in the datastore" if image_id else "no image given")
        name = image_id or UPLOAD_NAME
        try:
            radiograph = self.model.load(path)
            decoded = time.perf_counter()
            prediction = self.model.predict(radiograph)
        except ImageError as exc:
            raise HTTPException(422, str(exc).replace(path, name)) from None
        except ModelFileError as exc:
            log.error("inference unavailable: %s", exc)
            raise HTTPException(503, "the landmark model is not available on this server") from None
        prediction.timings_ms["decode"] = round((decoded - started) * 1e3, 2)
        prediction.timings_ms["server"] = round((time.perf_counter() - started) * 1e3, 2)
        label = prediction.to_label(None, radiograph.spacing)
        result = label_to_json_dict(label)
        result["image"]["name"] = os.path.basename(path) if image_id else None  # not the upload's temporary name
        log.info("%s: PT %.1f, MT %.1f, TL %.1f deg, uncertainty %.1f px, %.0f ms (model %s)", name,
                 *prediction.cobb.as_array(), prediction.image_uncertainty, prediction.timings_ms["server"],
                 prediction.model.get("version"))
        if prediction.quality.review_needed:
            log.warning("%s: review needed: %s", name, "; ".join(prediction.quality.reasons))
        if image_id and save_label:
            # MONAI Label stores a returned file as the image's label (tag "original" unless label_tag says).
            return _write_temporary(result, ".json"), result
        # The file part of MONAI Label's multipart answer (its default; `output=json` leaves it out): a Slicer
        # point list in the film's RAS, which the stock MONAI Label module loads with slicer.util.loadMarkups.
        label.image_name = image_id or None
        markups = label_to_mrk_dict(label, radiograph.spacing or (1.0, 1.0), radiograph.origin, "RAS")
        return _write_temporary(markups, ".mrk.json"), result


def _write_temporary(document: dict[str, Any], suffix: str) -> str:
    with tempfile.NamedTemporaryFile("w", prefix="spinecascade-", suffix=suffix, delete=False,
                                     encoding="utf-8") as handle:
        json.dump(document, handle)
    return handle.name
