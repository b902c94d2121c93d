"""Training task `vertebral_landmarks`: POST /train/vertebral_landmarks fine-tunes the served model.

MONAI Label runs the task in a process of its own and stops it (DELETE /train) by killing that process; the
library's per-epoch checkpoint and atomic model writes make that safe, and a stopped run started again with
the same labels and settings resumes where it was. With `multi_gpu` and more than one GPU the run is started
under torchrun, one process per GPU; otherwise it runs right here.

Request parameters (JSON body): epochs, corner_epochs, learning_rate, lr_decay, batch_images, seed, augment,
film_framing, from_scratch, multi_gpu, device. Defaults come from the app configuration.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from lib.configs.landmarks import AppConfig, ConfigError, flag
from lib.trainers.job import STATS_FILE, TrainError, TrainJob, TrainStatus, read_status, run_job, utc_now
from spinecascade.method.augmentation import framing_pixels

log = logging.getLogger(__name__)

_INT_PARAMS = ("epochs", "corner_epochs", "batch_images", "seed")


class VertebralLandmarksTrain(TrainTask):
    def __init__(self, app_config: AppConfig, app_dir: str, studies: str) -> None:
        super().__init__("Fine-tune the landmark cascade on the final labels (or train it from scratch)")
        self.app_config = app_config
        self.app_dir = app_dir
        self.studies = studies

    def config(self) -> dict[str, Any]:
        """What a client may change; shown in /info and offered by MONAI Label clients."""
        defaults = self.app_config.train
        return {"epochs": defaults.epochs, "learning_rate": defaults.learning_rate, "lr_decay": defaults.lr_decay,
                "batch_images": defaults.batch_images, "augment": defaults.augment,
                "film_framing": defaults.film_framing, "from_scratch": False,
                "multi_gpu": True, "gpus": "all"}

    def stats(self) -> dict[str, Any]:
        return read_status(self.app_config.model_path.parent / STATS_FILE)

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        try:
            job = self.job(request, datastore)
            gpus = torch.cuda.device_count() if flag(request.get("multi_gpu", True), "multi_gpu") else 0
        except (TrainError, ConfigError) as exc:
            TrainStatus(self.app_config.model_path.parent / STATS_FILE, write=True).update(
                status="ERROR", message=str(exc), end_ts=utc_now())
            raise
        if gpus > 1:
            return self._run_torchrun(job, gpus)
        return run_job(job)

    def job(self, request: dict[str, Any], datastore: Datastore) -> TrainJob:
        """The run a request asks for, checked before any work starts."""
        defaults = self.app_config.train
        from_scratch = flag(request.get("from_scratch", False), "from_scratch")
        train: dict[str, Any] = {
            "epochs": defaults.scratch_epochs if from_scratch else defaults.epochs,
            "learning_rate": defaults.scratch_learning_rate if from_scratch else defaults.learning_rate,
            "lr_decay": defaults.scratch_lr_decay if from_scratch else defaults.lr_decay,
            "batch_images": defaults.batch_images,
            "augment": flag(request.get("augment", defaults.augment), "augment"),
        }
        for key in (*_INT_PARAMS, "learning_rate", "lr_decay"):
            if request.get(key) is not None:
                train[key] = _number(request[key], key, int if key in _INT_PARAMS else float)
        if train["lr_decay"] > 1:
            raise TrainError(f"lr_decay {request['lr_decay']!r}: must be at most 1")
        train["film_framing"] = self._film_framing(request, train["augment"])
        device = request.get("device") or self.app_config.device
        if device is not None and str(device).split(":")[0] not in ("cpu", "cuda"):
            raise TrainError(f"device {device!r}: expected cpu, cuda or cuda:N")
        samples = [{"name": Path(item["image"]).name, "image": item["image"], "label": item["label"]}
                   for item in datastore.datalist()]
        if from_scratch and len(samples) < defaults.min_scratch_images:
            raise TrainError(f"training from scratch needs at least {defaults.min_scratch_images} final labels; "
                             f"the datastore has {len(samples)}. Fine-tune the current model instead.")
        return TrainJob(model_path=str(self.app_config.model_path), samples=samples, from_scratch=from_scratch,
                        train=train, device=device, threads=self.app_config.threads, studies=self.studies)

    def _film_framing(self, request: dict[str, Any], augment: bool) -> float:
        """The configured framing goes with the warps; asked for without them it would do nothing, so it is refused."""
        if request.get("film_framing") is None:
            return self.app_config.train.film_framing if augment else 0.0
        try:
            pixels = framing_pixels(request["film_framing"])
        except ValueError as exc:
            raise TrainError(f"film_framing: {exc}") from None
        if pixels and not augment:
            raise TrainError(f"film_framing {request['film_framing']!r}: the framing is one of the warps; it needs "
                             "augment true")
        return pixels

    def _run_torchrun(self, job: TrainJob, gpus: int) -> dict[str, Any]:
        work = self.app_config.model_path.parent
        with tempfile.NamedTemporaryFile(suffix=".json", prefix="train-job-", dir=work, delete=False) as handle:
            job_file = Path(handle.name)
        job.save(job_file)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (self.app_dir, os.environ.get("PYTHONPATH"))
                                                           if p)}
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                   "-m", "lib.trainers.job", str(job_file)]
        log.info("training on %d GPUs: %s", gpus, " ".join(command))
        try:
            subprocess.run(command, env=env, check=True)
        finally:
            job_file.unlink(missing_ok=True)
        return self.stats()


def _number(value: Any, key: str, kind: type[int] | type[float]) -> int | float:
    if isinstance(value, bool):
        raise TrainError(f"{key} {value!r}: expected a number")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise TrainError(f"{key} {value!r}: expected {'an integer' if kind is int else 'a number'}") from None
    if number < 0 or (number == 0 and key != "seed"):
        raise TrainError(f"{key} {value!r}: must be positive")
    return number
