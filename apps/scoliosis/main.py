"""MONAI Label app: vertebral corner landmarks and Cobb angles on spine X-rays, served from spinecascade.

    python -m monailabel.main start_server --app apps/scoliosis --studies STUDIES [--conf KEY VALUE ...]

Settings live in lib/configs/landmarks.py; README.md beside this file lists them and the endpoints.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from fastapi import HTTPException
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

import spinecascade
from lib.activelearning.uncertainty import LandmarkUncertainty
from lib.configs.dicomweb import DicomWebConfig
from lib.configs.landmarks import SCORING, STRATEGY, TASK, AppConfig
from lib.datastore import LandmarkDatastore
from lib.datastores.dicomweb import DicomWebLandmarkDatastore
from lib.infers.landmarks import IMAGE_ID, VertebralLandmarks
from lib.landmark_model import LandmarkModel
from lib.scoring.uncertainty import LandmarkUncertaintyScoring
from lib.trainers.landmarks import VertebralLandmarksTrain
from spinecascade.errors import ModelFileError
from spinecascade.io.atomic import atomic_path
from spinecascade.landmarks import VERTEBRAE
from spinecascade.method.model_file import shipped_model_path

log = logging.getLogger(__name__)


def _start_from_the_shipped_model(model_path: Path) -> None:
    """The app's own model file (which training replaces) starts as a copy of the model the package ships."""
    if model_path.is_file():
        return
    model_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(model_path) as temporary:
        shutil.copyfile(shipped_model_path(), temporary)
    log.info("copied the shipped model to %s", model_path)


class ScoliosisApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.app_config = AppConfig.from_conf(app_dir, conf or {})
        torch.set_num_threads(self.app_config.threads)
        if not (conf or {}).get("model_path"):
            _start_from_the_shipped_model(self.app_config.model_path)
        self.model = LandmarkModel(self.app_config.model_path, self.app_config.device)
        if not self.model.is_available():
            log.error("no model file at %s: inference is off until one is there (--conf model_path PATH)",
                      self.app_config.model_path)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="SpineCascade scoliosis",
            description="Vertebral corner landmarks (T1-L5) and Cobb angles on AP spine radiographs",
            version=spinecascade.__version__,
            labels=list(VERTEBRAE),
        )

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            # Ours, not MONAI Label's DICOMweb datastore: that one downloads the dcmqi tools at every start, lists
            # CT and stores segmentations; this one lists radiographs and stores labels as DICOM SR.
            return DicomWebLandmarkDatastore(DicomWebConfig.from_env(self.studies))
        return LandmarkDatastore(self.studies, auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                                 read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY)

    def init_infers(self) -> dict[str, InferTask]:
        return {TASK: VertebralLandmarks(self.model)}

    def init_trainers(self) -> dict[str, TrainTask]:
        return {TASK: VertebralLandmarksTrain(self.app_config, self.app_dir, self.studies)}

    def init_strategies(self) -> dict[str, Strategy]:
        return {STRATEGY: LandmarkUncertainty(self.model, self.app_config.on_demand_scores), "random": Random(),
                "first": First()}

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        return {SCORING: LandmarkUncertaintyScoring(self.model)}

    def on_init_complete(self) -> None:
        """Server start (not the training or scoring processes): have the model ready for the first request."""
        super().on_init_complete()
        if not self.model.is_available():
            return
        try:
            self.model.warm_up()
        except ModelFileError as exc:
            log.error("inference is off: %s", exc)

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """Tell the task which datastore id was asked for: the base class replaces it by a file path."""
        model = request.get("model")
        if model not in self._infers:  # the base class answers a bare 500 to a mistyped task name
            raise HTTPException(404, f"no inference task {model!r} on this server; it has {', '.join(self._infers)}")
        request = {k: v for k, v in request.items() if k != IMAGE_ID}
        image = request.get("image")
        if isinstance(image, str) and image and not os.path.exists(image):
            request[IMAGE_ID] = image
        return super().infer(request, datastore)
