"""One training run on the datastore's final labels, in this process or in every process torchrun starts.

The library's one training entry does the work (spinecascade.training.train.train_model: label cleaning, the
recipe's phases, resuming from model/training.safetensors.checkpoint when a stopped run is started again with
the same data and settings, an atomic model write). The new model is written beside the served one; the
served one is then copied to model/history/ and replaced in one rename. Progress goes to the log and to
model/train_stats.json, which the server shows in /info.

Run as `python -m lib.trainers.job JOB.json` (what torchrun starts on each GPU).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
import torch

from spinecascade.errors import ImageError, LabelError
from spinecascade.io.atomic import atomic_path, atomic_write_text
from spinecascade.io.dataset import Sample, image_size
from spinecascade.io.labels import read_label
from spinecascade.method.model_file import read_metadata
from spinecascade.training.loop import TrainingStopped, init_distributed
from spinecascade.training.recipes import Recipe, configure
from spinecascade.training.train import TrainingError, phase_count, train_model

log = logging.getLogger(__name__)

STATS_FILE = "train_stats.json"
NEW_MODEL_FILE = "training.safetensors"  # the run's model before it replaces the served one
HISTORY_DIR = "history"


class TrainError(Exception):
    """The run cannot start or cannot produce a model; the message says what to do."""


@dataclass
class TrainJob:
    model_path: str
    samples: list[dict[str, str]]  # name, image, label: the datastore's images with final labels
    from_scratch: bool
    recipe: str  # what a training from scratch follows; a fine-tuning follows the recipe's fine-tuning settings
    settings: list[str]  # `field=value` changes to the recipe
    epochs: int | None
    batch: int | None
    seed: int | None
    device: str | None
    threads: int
    studies: str

    def resolved(self) -> Recipe:
        """The recipe with this job's changes; ConfigError names a setting that cannot be used."""
        return configure(self.recipe, self.settings, epochs=self.epochs, batch=self.batch, seed=self.seed,
                         finetune=not self.from_scratch)

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> TrainJob:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


class TrainStatus:
    """The state of the run, written by the process that publishes the model (rank 0)."""

    def __init__(self, path: Path, write: bool) -> None:
        self.path = path
        self.write = write
        self.state: dict[str, Any] = {}

    def update(self, **fields: Any) -> None:
        self.state.update(fields)
        if self.write:
            atomic_write_text(self.path, json.dumps(self.state, indent=2, default=str))

    def on_event(self, event: dict[str, Any]) -> None:
        """Callback of train_model: after every epoch and every phase (all ranks see the same)."""
        if not self.write:
            return
        if event["event"] == "epoch_done":
            log.info("training: %s, epoch %d: loss %.5f", event["stage"], event["epoch"], event["loss"])
            self.update(stage=event["stage"], epoch=event["epoch"], loss=event["loss"])
        elif event["event"] == "stage_done":
            done = self.state.get("stages_done", 0) + 1
            figure = {k: event[k] for k in ("train_mse", "loss") if k in event}  # the locator reports its loss
            log.info("training: %s done (%d of %d stages): %s", event["stage"], done, self.state.get("stages_total", 0),
                     ", ".join(f"{k} {v:.3e}" for k, v in figure.items()))
            self.update(stages_done=done, stages=[*self.state.get("stages", []), {"stage": event["stage"], **figure}])


def read_status(path: Path) -> dict[str, Any]:
    """The last run's state; a run whose process is gone without finishing was stopped or killed."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        return {"status": "UNKNOWN", "message": f"{path.name} cannot be read: {exc}"}
    if state.get("status") == "RUNNING" and not psutil.pid_exists(int(state.get("pid", 0))):
        state["status"] = "STOPPED"
        state["message"] = "the training process ended before finishing (stopped with DELETE /train, or killed)"
    return state


class ParentWatch:
    """should_stop for train_model: stop when the process that started this run (the server) is gone."""

    def __init__(self) -> None:
        self.parent = os.getppid()

    def __call__(self) -> bool:
        return os.getppid() != self.parent


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def run_job(job: TrainJob) -> dict[str, Any]:
    """Train and publish; returns what /info shows under train_stats."""
    torch.set_num_threads(job.threads)
    rank, world = init_distributed()
    model_path = Path(job.model_path)
    status = TrainStatus(model_path.parent / STATS_FILE, write=rank == 0)
    status.update(status="RUNNING", pid=os.getpid(), start_ts=utc_now(), workers=world,
                  mode="from scratch" if job.from_scratch else "fine-tune", labelled_images=len(job.samples),
                  recipe=job.recipe)
    started = time.time()
    try:
        result = _train(job, model_path, status, rank)
    except TrainingStopped as exc:
        log.warning("training stopped: %s", exc)
        status.update(status="STOPPED", message=str(exc), end_ts=utc_now())
        return status.state
    except Exception as exc:
        status.update(status="ERROR", message=str(exc), end_ts=utc_now())
        raise
    status.update(status="DONE", end_ts=utc_now(), seconds=round(time.time() - started, 1), **result)
    return status.state


def _train(job: TrainJob, model_path: Path, status: TrainStatus, rank: int) -> dict[str, Any]:
    recipe = job.resolved()
    base = None if job.from_scratch else model_path
    if base is not None and not base.is_file():
        raise TrainError(f"no model at {model_path} to fine-tune; train from scratch (from_scratch: true)")
    previous_version = read_metadata(model_path)["sha256"][:12] if model_path.is_file() else None
    samples = [s for s in (_sample(entry) for entry in job.samples) if s is not None]
    if not samples:
        raise TrainError("no images with final labels in the datastore: save some labels (tag final) first")
    status.update(train=recipe.train.as_dict(), stages_done=0, stages_total=phase_count(recipe, base), stages=[])
    new_model = model_path.parent / NEW_MODEL_FILE
    data = {"source": "MONAI Label datastore", "studies": job.studies}
    try:
        result = train_model(recipe, samples, new_model, base=base, device=job.device, data=data, progress=False,
                             on_event=status.on_event, should_stop=ParentWatch())
    except TrainingError as exc:
        raise TrainError(str(exc)) from None
    status.update(images=len(result.cleaned.kept), repaired=result.cleaned.repaired,
                  excluded=result.cleaned.excluded)
    if rank != 0:
        return {}
    kept = _keep_previous(model_path, previous_version) if previous_version else None
    os.replace(new_model, model_path)
    version = read_metadata(model_path)["sha256"][:12]
    log.info("new model %s published at %s (previous %s kept as %s)", version, model_path, previous_version, kept)
    return {"model_version": version, "previous_version": previous_version, "previous_model": kept}


def _sample(entry: dict[str, str]) -> Sample | None:
    """A datastore image with its final label; one that cannot be read is left out with a warning."""
    image, label_path = Path(entry["image"]), Path(entry["label"])
    try:
        width, height = image_size(image)
        label = read_label(label_path, (width, height))
    except (ImageError, LabelError) as exc:
        log.warning("leaving %s out of training: %s", entry["name"], exc)
        return None
    return Sample(entry["name"], image, label_path, label.landmarks, None, width, height)


def _keep_previous(model_path: Path, version: str) -> str:
    history = model_path.parent / HISTORY_DIR
    history.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = history / f"{model_path.stem}-{stamp}-{version}{model_path.suffix}"
    with atomic_path(target) as temporary:
        shutil.copyfile(model_path, temporary)
    return str(target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One training run of the scoliosis app (started by torchrun).")
    parser.add_argument("job", type=Path, help="the job file the training task wrote")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(process)s] [%(levelname)s] %(name)s - %(message)s")
    run_job(TrainJob.load(args.job))
    return 0


if __name__ == "__main__":
    sys.exit(main())
