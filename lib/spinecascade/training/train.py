"""The one way into training, for the command line and the MONAI Label app alike.

`train_model` cleans the labels (repairs what the checker can, excludes the rest), prepares and mirrors the films,
trains every phase of the recipe's model (resuming from `<out>.checkpoint` when a stopped run is started again with
the same data and settings), then the spine locator where the model has one (on the labelled films and, when given,
the annotated full-length films; on rank 0, not resumed: it takes minutes), and writes the model file atomically
with one metadata layout: the recipe, the data, the settings, the workers and the per-phase history. Fine-tuning a
model that lacks a part the recipe has adds that part. A new spine locator needs the annotated full-length films:
without them the model is made without one.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from spinecascade.errors import SpineCascadeError
from spinecascade.io.dataset import Sample
from spinecascade.method.cascade import Cascade, CascadeConfig
from spinecascade.method.model_file import load_model, read_metadata, save_model
from spinecascade.training.config import TrainConfig
from spinecascade.training.data import TrainingSet, load_training_images
from spinecascade.training.label_cleaning import CleanedSamples
from spinecascade.training.loop import Events, TrainingLoop, fingerprint, init_distributed, pick_device
from spinecascade.training.phases import fit_mean_shapes, phase_names
from spinecascade.training.recipes import Recipe, configure
from spinecascade.training.spine_locator import (
    annotated_examples,
    fit_spine_locator,
    labelled_examples,
)

log = logging.getLogger(__name__)


class TrainingError(SpineCascadeError):
    """A training that cannot start: no usable labels, or a model to fine-tune that cannot be."""


@dataclass
class TrainedModel:
    cascade: Cascade
    info: dict  # what the model file's metadata holds under "info"
    cleaned: CleanedSamples
    written: bool  # False on the ranks other than 0, which do not write


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".checkpoint")


def model_config(recipe: Recipe, base: Cascade | None, full_length: Path | None) -> CascadeConfig:
    """The configuration a training makes: the recipe's, or the base model's with the recipe's spine locator
    added where the base has none; a new locator only with the annotated full-length films it learns L5 from."""
    config = recipe.model if base is None else base.config
    if base is not None and base.config.spine_locator is not None:
        return config
    return replace(config, spine_locator=recipe.model.spine_locator if full_length is not None else None)


def phase_count(recipe: Recipe, base: Path | None = None, full_length: Path | None = None) -> int:
    """How many phases a training of `recipe` (or a fine-tuning of `base`) runs; each ends with "stage_done"."""
    config = model_config(recipe, load_model(base)[0] if base is not None else None, full_length)
    locator = config.spine_locator is not None and recipe.train.spine_locator.epochs > 0
    return len(phase_names(config)) + locator


def train_model(recipe: Recipe, samples: list[Sample], out: Path, base: Path | None = None,
                device: str | None = None, data: dict | None = None, progress: bool = True,
                on_event: Events | None = None, should_stop: Callable[[], bool] | None = None,
                full_length: Path | None = None) -> TrainedModel:
    """Train `recipe` on `samples` (or fine-tune the model at `base` with `recipe.train`) and write `out`.

    `data` describes the samples' origin for the model file (folder, split, ...); `full_length` is a folder of
    the full-length films with annotated rows (training/fullspine_annotations.json) for the spine locator.
    Raises TrainingError when nothing can be trained, TrainingStopped (loop.py) when `should_stop` says so.
    """
    rank, world = init_distributed()
    started = time.time()
    base_cascade, base_version = None, None
    if base is not None:
        base_cascade = load_model(base)[0]
        base_version = read_metadata(base)["sha256"][:12]
    config = model_config(recipe, base_cascade, full_length)
    train = recipe.train
    if config.spine_locator is None and recipe.model.spine_locator is not None:
        log.warning("no full-length films (--full-length): the spine locator, which learns L5 from them, is left "
                    "out; the model reads every film whole")
    images, cleaned = load_training_images(samples, config.preprocess, clean=train.clean_labels,
                                           progress=progress and rank == 0)
    if not images:
        why = f": every label was excluded ({', '.join(cleaned.excluded)})" if cleaned.excluded else ""
        raise TrainingError(f"no training images{why}")
    torch.manual_seed(train.seed)
    cascade = Cascade(config)
    dev = pick_device(device)
    training_set = TrainingSet(images, dev)
    if base_cascade is not None:
        missing, _ = cascade.load_state_dict(base_cascade.state_dict(), strict=False)
        new_part = [k for k in missing if not k.startswith("spine_locator.")]
        if new_part:
            raise TrainingError(f"{base}: the model lacks {', '.join(new_part[:3])}; it cannot be fine-tuned")
    else:
        fit_mean_shapes(cascade, training_set)
    cascade.to(dev)
    checkpoint = checkpoint_path(out)
    run_id = fingerprint(training_set, config.as_dict(), train, base_version or "scratch")
    log.info("training %s (%s) on %d films (mirrors included), %d worker(s), %s", recipe.name,
             "fine-tuning " + base_version if base_version else "from scratch", len(images), world, dev)
    history = TrainingLoop(cascade, training_set, train, checkpoint, run_id, fit_shape_models=base is None,
                           progress=progress, on_event=on_event, should_stop=should_stop).run()
    cascade = cascade.cpu().eval()
    if cascade.spine_locator is not None and train.spine_locator.epochs > 0 and rank == 0:
        history.append(_train_locator(cascade, cleaned.kept, full_length, train, dev, progress))
        (on_event or (lambda event: None))({"event": "stage_done", "stage": "spine locator",
                                            "loss": history[-1]["loss"][-1]})
        cascade.spine_locator.cpu().eval()
    info = {
        "name": out.stem,
        "recipe": recipe.name,
        "trained": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": {**(data or {}), "n_images": len(cleaned.kept), "flip_augmented": True,
                 **({"full_length": str(full_length)} if full_length is not None else {}),
                 "repaired": cleaned.repaired, "excluded": cleaned.excluded},
        "train": {**train.as_dict(), "workers": world, "device": str(dev), "seconds": round(time.time() - started, 1),
                  "finetuned_from": base_version},
        "history": history,
    }
    if rank == 0:
        save_model(out, cascade, info)
        checkpoint.unlink(missing_ok=True)
    return TrainedModel(cascade, info, cleaned, rank == 0)


def _train_locator(cascade: Cascade, samples: list[Sample], full_length: Path | None, train: TrainConfig,
                   device: torch.device, progress: bool) -> dict:
    """Train the spine locator in place; its history entry."""
    settings = train.spine_locator
    examples = labelled_examples(samples, progress)
    repeats = [1] * len(examples)
    if full_length is not None:
        annotated = annotated_examples(full_length, progress=progress)
        if not annotated:
            raise TrainingError(f"{full_length}: none of the annotated full-length films is in this folder")
        examples += annotated
        repeats += [settings.annotated_repeats] * len(annotated)
    log.info("training the spine locator on %d films (%d annotated full-length)", len(examples),
             len(examples) - len(samples))
    losses = fit_spine_locator(cascade.spine_locator.to(device), examples, settings, repeats, train.seed, progress)
    return {"stage": "spine locator", "films": len(examples), "loss": [round(v, 5) for v in losses]}


def train_synthetic_model(out: Path, n_images: int = 40, seed: int = 0, progress: bool = False) -> Path:
    """Train the `small` recipe on synthetic spines and write it to `out`: a real model file for tests and demos."""
    from spinecascade.io.images import save_image
    from spinecascade.synthetic import make_spine

    with tempfile.TemporaryDirectory() as folder:
        samples = []
        for i in range(n_images):
            spine = make_spine(seed * 100_000 + i, 96, 240)
            path = Path(folder) / f"synthetic-{i}.png"
            save_image(path, spine.image)
            samples.append(Sample(path.name, path, None, spine.landmarks, None, 96, 240))
        train_model(configure("small", seed=seed), samples, out, data={"synthetic_images": n_images, "seed": seed},
                    progress=progress)
    return out
