"""Training task `vertebral_landmarks`: POST /train/vertebral_landmarks fine-tunes the served model.

MONAI Label runs the task in a process of its own and stops it (DELETE /train) by killing that process; the
library's per-epoch checkpoint and atomic model writes make that safe, and a stopped run started again with
the same labels and settings resumes where it was. With `multi_gpu` and more than one GPU the run is started
under torchrun, one process per GPU; otherwise it runs right here.

Request parameters (JSON body): from_scratch, recipe (for a training from scratch), epochs, batch, seed, set
(changes to the recipe, as `spinecascade train --set` takes them: ["train.stages.lr_decay=0.7"] or
{"train.stages.lr_decay": 0.7}), device, multi_gpu. A fine-tuning follows the served model's recipe's
fine-tuning settings; the recipes are the library's (spinecascade.training.recipes), as on the command line.
"""

from __future__ import annotations

import json
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
from spinecascade.errors import ModelFileError, SpineCascadeError
from spinecascade.method.model_file import load_model

log = logging.getLogger(__name__)

# What MONAI Label itself puts into training requests (monailabel.utils.async_tasks, interfaces.utils.app).
_MONAI_LABEL_KEYS = ("model", "bundle_path", "gpus", "local_rank")


class VertebralLandmarksTrain(TrainTask):
    def __init__(self, app_config: AppConfig, app_dir: str, studies: str) -> None:
        super().__init__("Fine-tune the landmark cascade on the final labels (or train it from scratch)")
        self.app_config = app_config
        self.app_dir = app_dir
        self.studies = studies

    def config(self) -> dict[str, Any]:
        """What a client may change, with its defaults (None: the recipe's); shown in /info, and merged by MONAI
        Label into every request."""
        return {"from_scratch": False, "recipe": self.app_config.recipe, "epochs": None, "batch": None,
                "seed": None, "set": [], "device": self.app_config.device, "multi_gpu": True}

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
        known = {*_MONAI_LABEL_KEYS, *self.config()}
        unknown = sorted(set(request) - known)
        if unknown:
            raise TrainError(f"unknown training parameter(s) {', '.join(unknown)}; this server takes "
                             f"{', '.join(sorted(set(self.config())))}; other settings go in set, e.g. "
                             '{"set": ["train.stages.lr_decay=0.7"]}')
        from_scratch = flag(request.get("from_scratch", False), "from_scratch")
        device = request.get("device") or self.app_config.device
        if device is not None and str(device).split(":")[0] not in ("cpu", "cuda"):
            raise TrainError(f"device {device!r}: expected cpu, cuda or cuda:N")
        samples = [{"name": Path(item["image"]).name, "image": item["image"], "label": item["label"]}
                   for item in datastore.datalist()]
        if from_scratch and len(samples) < self.app_config.min_scratch_images:
            raise TrainError(f"training from scratch needs at least {self.app_config.min_scratch_images} final "
                             f"labels; the datastore has {len(samples)}. Fine-tune the current model instead.")
        job = TrainJob(model_path=str(self.app_config.model_path), samples=samples, from_scratch=from_scratch,
                       recipe=self._recipe(request, from_scratch), settings=_settings(request.get("set")),
                       epochs=_optional_int(request, "epochs"), batch=_optional_int(request, "batch"),
                       seed=_optional_int(request, "seed", low=0), device=device, threads=self.app_config.threads,
                       studies=self.studies)
        try:
            job.resolved()
        except SpineCascadeError as exc:
            raise TrainError(str(exc)) from None
        return job

    def _recipe(self, request: dict[str, Any], from_scratch: bool) -> str:
        """From scratch: the request's recipe, else the app's, else the served model's; a fine-tuning: the served
        model's (its file names it)."""
        asked = request.get("recipe") or None
        if from_scratch and (asked or self.app_config.recipe):
            return str(asked or self.app_config.recipe)
        try:
            served = load_model(self.app_config.model_path)[1].get("recipe")
        except ModelFileError as exc:
            if not from_scratch:
                raise TrainError(f"cannot fine-tune: {exc}") from None
            served = None
        if not from_scratch and asked and asked != served:
            raise TrainError(f"recipe {asked!r}: a fine-tuning follows the served model's recipe ({served}); train "
                             "from scratch (from_scratch: true) to change it")
        return served or "shipped"

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


def _optional_int(request: dict[str, Any], key: str, low: int = 1) -> int | None:
    value = request.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TrainError(f"{key} {value!r}: expected a whole number")
    try:
        number = int(value)
    except ValueError:
        raise TrainError(f"{key} {value!r}: expected a whole number") from None
    if number < low:
        raise TrainError(f"{key} {value!r}: must be at least {low}")
    return number


def _settings(value: Any) -> list[str]:
    """`set` as a list of "field=value" strings or a {field: value} object, in `--set`'s form."""
    if value in (None, "", []):
        return []
    if isinstance(value, dict):
        return [f"{k}={json.dumps(v)}" for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise TrainError(f"set {value!r}: expected a list of \"field=value\" strings or an object of settings")
