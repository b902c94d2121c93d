"""The trained parts of a cascade, one phase each: what it trains, its optimiser and schedule, its draws and loss.

The loop (loop.py) owns everything the phases share: epochs, resume, data-parallel batches, checkpoints and
progress events. A phase takes the points the previous one left on every training film (step 1's centres
(n, 1, 17, 2), or corners (n, 17, 4, 2)) and, once trained, runs over the set to give the next phase its input.
Draws are seeded by the loop, so that every rank, and a resumed run, sees the same ones.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spinecascade.landmarks import N_VERTEBRAE
from spinecascade.method.cascade import Cascade, CascadeConfig, Stage, standardise
from spinecascade.method.crops import rotate, spine_directions
from spinecascade.training.augmentation import (
    CornerDrawConfig,
    CornerDraws,
    LevelDraws,
    LevelPriorConfig,
    WarpConfig,
    Warps,
)
from spinecascade.training.config import PhaseTraining, TrainConfig
from spinecascade.training.data import TrainingSet

log = logging.getLogger(__name__)

EVAL_BATCH = 16


def fit_mean_shapes(cascade: Cascade, images: TrainingSet) -> None:
    """Eq. 6-7: mean normalised centres; and the mean corner layout around each centre for step 2."""
    lm = torch.from_numpy(images.corners).double()
    centres = lm.mean(dim=2)
    offsets = lm - centres[:, :, None]
    if cascade.config.align_corner_start:
        offsets = rotate(offsets, spine_directions(centres))
    cascade.mean_centres.copy_((centres / images.sizes[:, None]).mean(dim=0))
    cascade.mean_corner_offsets.copy_(offsets.mean(dim=0))


def mean_shape_centres(cascade: Cascade, images: TrainingSet) -> np.ndarray:
    """S^0 of Eq. 8 on every film: the mean normalised shape scaled to it, (n, 1, 17, 2)."""
    with torch.no_grad():
        sizes = images.sizes.float().to(images.device)
        return cascade.initial_centres(sizes)[:, None].cpu().double().numpy()


class Phase:
    """One trained part: its module, settings (epochs, batch size, learning rate, ...) and targets."""

    name: str
    per_batch_schedule = True

    def __init__(self, cascade: Cascade, images: TrainingSet, train: TrainConfig, module: nn.Module, settings: Any,
                 targets: np.ndarray) -> None:
        self.cascade = cascade
        self.images = images
        self.train = train
        self.device = images.device
        self.module = module
        self.settings = settings
        self.epochs: int = settings.epochs
        self.batch_images: int = settings.batch_images
        self.targets = targets

    def inputs(self, points: np.ndarray) -> np.ndarray:
        """This phase's input points from the previous phase's output."""
        return points

    def setup(self, points: np.ndarray, generator: torch.Generator) -> None:
        """Once before the first epoch of a phase trained from scratch (not when fine-tuning or resuming)."""

    def trainable(self) -> nn.Module:
        """What the loop wraps for data-parallel training and calls in `loss`."""
        return self.module

    def optimizer(self) -> torch.optim.Optimizer:
        raise NotImplementedError

    def scheduler(self, optimizer: torch.optim.Optimizer, batches_per_epoch: int) -> Any:
        raise NotImplementedError

    def draws(self, n: int, generator: torch.Generator) -> Any:
        """One draw per view of a batch (warps, moved priors or windows), or None."""
        return None

    def loss(self, model: nn.Module, mine: np.ndarray, draws: Any, points: np.ndarray) -> Tensor:
        raise NotImplementedError

    def before(self, points: np.ndarray) -> np.ndarray:
        """The points this phase starts from, to report how far it moved them."""
        return points

    @torch.no_grad()
    def run(self, points: np.ndarray) -> np.ndarray:
        """The trained part's output on every training film (eval mode)."""
        raise NotImplementedError

    def _one_cycle(self, optimizer: torch.optim.Optimizer, settings: PhaseTraining,
                   batches_per_epoch: int) -> torch.optim.lr_scheduler.OneCycleLR:
        steps = max(settings.epochs * batches_per_epoch, 3)
        return torch.optim.lr_scheduler.OneCycleLR(  # a tenth of the steps warm up, at least two
            optimizer, settings.learning_rate, total_steps=steps, pct_start=max(0.1, 2 / steps))

    def _chunks(self) -> list[np.ndarray]:
        n = len(self.images)
        return [np.arange(first, min(first + EVAL_BATCH, n)) for first in range(0, n, EVAL_BATCH)]


class FilmStartPhase(Phase):
    """Step 1's start: the 17 centres regressed from the whole film, trained on warped (and reframed) films."""

    name = "film start"

    def __init__(self, cascade: Cascade, images: TrainingSet, train: TrainConfig) -> None:
        super().__init__(cascade, images, train, cascade.film_start, train.film_start, images.centres)
        self.factor = cascade.config.centre.source_downsample

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.module.parameters(), lr=self.settings.learning_rate)

    def scheduler(self, optimizer, batches_per_epoch):
        return self._one_cycle(optimizer, self.settings, batches_per_epoch)

    def draws(self, n: int, generator: torch.Generator) -> Warps | None:
        if not self.train.augment:
            return None
        # The film start sees each whole film 80 times (40 epochs, and mirrors): most views are warped.
        return Warps.draw(n, WarpConfig(probability=0.8, frame_y=self.settings.framing), generator)

    def loss(self, model, mine, draws, points):
        sizes = self.images.sizes[mine]
        truth = torch.from_numpy(self.targets[mine][:, 0])
        if draws is not None:
            truth = draws.points(truth, sizes)
        source, batch_sizes = self.images.batch(mine, self.factor, draws)
        offsets = (truth / sizes[:, None] - self.cascade.mean_centres.double().cpu()).float().to(self.device)
        return F.smooth_l1_loss(model(source, batch_sizes), offsets, beta=self.settings.smooth_l1_beta)

    @torch.no_grad()
    def run(self, points):
        self.module.eval()
        out = []
        for idx in self._chunks():
            source, sizes = self.images.batch(idx, self.factor)
            out.append(self.cascade.initial_centres(sizes, source)[:, None].cpu().numpy())
        return np.concatenate(out).astype(np.float64)


class _Coefficients(nn.Module):
    """A stage's regression as a forward pass, so that DistributedDataParallel can wrap it."""

    def __init__(self, stage: Stage) -> None:
        super().__init__()
        self.stage = stage

    def forward(self, source: Tensor, points: Tensor) -> Tensor:
        return self.stage.coefficients(source, points)


class StagePhase(Phase):
    """One of the paper's stages: PCA coefficients of the offset regressed from crops around the current points."""

    per_batch_schedule = False

    def __init__(self, cascade: Cascade, images: TrainingSet, train: TrainConfig, step: str, index: int,
                 fit_shape_model: bool) -> None:
        centre = step == "centre"
        super().__init__(cascade, images, train, (cascade.centre_stages if centre else cascade.corner_stages)[index],
                         train.stages, images.centres if centre else images.corners)
        self.step = step
        self.index = index
        self.fit_shape_model = fit_shape_model
        self.name = f"{step} stage {index + 1}/{cascade.config.n_stages}"
        self.epochs = self.settings.epochs if centre else self.settings.corner_epochs
        step_config = cascade.config.centre if step == "centre" else cascade.config.corner
        self.factor = step_config.source_downsample
        self.strength = self.settings.warp_strength if step == "centre" else self.settings.corner_warp_strength

    def inputs(self, points):
        if self.step == "corner" and points.shape[1:] == (1, N_VERTEBRAE, 2):
            with torch.no_grad():
                centres = torch.from_numpy(points[:, 0]).float().to(self.device)
                return self.cascade.initial_corners(centres).cpu().double().numpy()
        return points

    def setup(self, points, generator):
        if not self.fit_shape_model:
            return
        offsets = (self.targets - points).reshape(len(points) * points.shape[1], -1)
        warps = self.draws(len(points), generator)
        if warps is not None:  # the shape model also spans the offsets the warps add
            warped = warps.points(torch.from_numpy(self.targets), self.images.sizes).numpy()
            offsets = np.concatenate([offsets, (warped - points).reshape(offsets.shape)])
        stage = self.module
        explained = stage.shape_model.fit(offsets, self.cascade.config.centred_pca, stage.step.n_components is not None)
        q = stage.shape_model.n_components
        log.info("%s: %d PCA components explain %.4f of the offset variance", self.name, q, explained[:q].sum())

    def trainable(self) -> nn.Module:
        return _Coefficients(self.module)

    def optimizer(self):
        return torch.optim.Adam(self.module.parameters(), lr=self.settings.learning_rate)

    def scheduler(self, optimizer, batches_per_epoch):
        return torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=self.settings.lr_decay)

    def draws(self, n, generator):
        if not self.train.augment:
            return None
        return Warps.draw(n, WarpConfig().scaled(self.strength), generator)

    def loss(self, model, mine, draws, points):
        truth = torch.from_numpy(self.targets[mine])
        if draws is not None:
            truth = draws.points(truth, self.images.sizes[mine])
        source, _ = self.images.batch(mine, self.factor, draws)
        pts = torch.from_numpy(points[mine]).float().to(self.device)
        coeffs = self.module.shape_model.encode((truth.float().to(self.device) - pts).flatten(0, 1))
        return F.smooth_l1_loss(model(source, pts), coeffs, beta=self.settings.smooth_l1_beta)

    @torch.no_grad()
    def run(self, points):
        self.module.eval()
        out = []
        for idx in self._chunks():
            source, _ = self.images.batch(idx, self.factor)
            out.append(self.module(source, torch.from_numpy(points[idx]).float().to(self.device)).cpu().numpy())
        return np.concatenate(out).astype(np.float64)


class _AlongTheSpinePhase(Phase):
    """A part that reads the full-resolution film around given centres, trained with AdamW under a one-cycle
    schedule (the level finder and the corner heatmaps)."""

    def optimizer(self):
        return torch.optim.AdamW(self.module.parameters(), lr=self.settings.learning_rate, weight_decay=1e-4)

    def scheduler(self, optimizer, batches_per_epoch):
        return self._one_cycle(optimizer, self.settings, batches_per_epoch)

    @torch.no_grad()
    def _run_at(self, points: np.ndarray) -> np.ndarray:
        self.module.eval()
        out = []
        for idx in self._chunks():
            films, _ = self.images.films(idx)
            centres = torch.from_numpy(points[idx, 0]).float().to(self.device)
            out.append(self.module(standardise(films), centres).cpu().numpy())
        return np.concatenate(out).astype(np.float64)


class LevelFinderPhase(_AlongTheSpinePhase):
    """The level finder, trained on priors drawn around the true centres and strips stretched and shifted."""

    name = "level finder"

    def __init__(self, cascade: Cascade, images: TrainingSet, train: TrainConfig) -> None:
        super().__init__(cascade, images, train, cascade.level_finder, train.level_finder, images.centres)
        self.draw_config = LevelPriorConfig().for_height(cascade.config.preprocess.height)

    def draws(self, n, generator):
        return LevelDraws.draw(n, self.draw_config, generator, N_VERTEBRAE)

    def loss(self, model, mine, draws, points):
        truth = torch.from_numpy(self.targets[mine][:, 0])
        films, _ = self.images.films(mine)
        priors = draws.priors(truth).float().to(self.device)
        found = model(standardise(draws.images(films)), priors, draws.row_scale.float().to(self.device),
                      draws.row_shift.float().to(self.device))
        return F.smooth_l1_loss(found, truth.float().to(self.device), beta=2.0)

    def run(self, points):
        return self._run_at(points)[:, None]


class _Locate(nn.Module):
    """The corner heatmaps' windows at chosen centres and turns as a forward pass, for DistributedDataParallel."""

    def __init__(self, heatmaps: nn.Module) -> None:
        super().__init__()
        self.heatmaps = heatmaps

    def forward(self, images: Tensor, centres: Tensor, angles: Tensor) -> Tensor:
        return self.heatmaps.locate(images, centres, angles)


class CornerHeatmapsPhase(_AlongTheSpinePhase):
    """The corner heatmaps, trained in windows around moved true centres: step 1's outputs on its own training
    films are nearer the truth than on unseen ones, so the windows are placed by drawn misses instead."""

    name = "corner heatmaps"

    def __init__(self, cascade: Cascade, images: TrainingSet, train: TrainConfig) -> None:
        super().__init__(cascade, images, train, cascade.corner_heatmaps, train.corner_heatmaps, images.corners)
        height = cascade.config.preprocess.height
        self.draw_config = CornerDrawConfig().for_height(height)
        self.beta = height / 680  # a pixel of the 680-px image

    def trainable(self) -> nn.Module:
        return _Locate(self.module)

    def draws(self, n, generator):
        return CornerDraws.draw(n, self.draw_config, generator, N_VERTEBRAE)

    def loss(self, model, mine, draws, points):
        truth = torch.from_numpy(self.targets[mine]).to(self.device, torch.float32)
        films, _ = self.images.films(mine)
        centres = truth.mean(dim=2)
        moved = centres + draws.centre_noise.to(centres)
        angles = spine_directions(centres + draws.direction_noise.to(centres))
        picked = draws.vertebrae.to(self.device)
        found = model(standardise(draws.images(films)), torch.gather(moved, 1, picked[..., None].expand(-1, -1, 2)),
                      torch.gather(angles, 1, picked))
        wanted = torch.gather(truth, 1, picked[..., None, None].expand(-1, -1, *truth.shape[2:]))
        return F.smooth_l1_loss(found, wanted, beta=self.beta)

    def before(self, points):
        with torch.no_grad():
            centres = torch.from_numpy(points[:, 0]).float().to(self.device)
            return self.cascade.initial_corners(centres).cpu().double().numpy()

    def run(self, points):
        return self._run_at(points)


def cascade_phases(cascade: Cascade, images: TrainingSet, train: TrainConfig, fit_shape_models: bool) -> list[Phase]:
    """The phases that train `cascade`, in order: film start, step 1's stages, level finder, corner heatmaps,
    step 2's stages (each where the model configuration has it)."""
    n = cascade.config.n_stages
    phases: list[Phase] = [FilmStartPhase(cascade, images, train)] if cascade.film_start is not None else []
    phases += [StagePhase(cascade, images, train, "centre", i, fit_shape_models) for i in range(n)]
    if cascade.level_finder is not None:
        phases.append(LevelFinderPhase(cascade, images, train))
    if cascade.corner_heatmaps is not None:
        phases.append(CornerHeatmapsPhase(cascade, images, train))
    phases += [StagePhase(cascade, images, train, "corner", i, fit_shape_models) for i in range(n)]
    return phases


def phase_names(config: CascadeConfig) -> list[str]:
    """The names of the phases `cascade_phases` makes for a model of `config`, in order."""
    n = config.n_stages
    return ([FilmStartPhase.name] * (config.film_start is not None)
            + [f"centre stage {i + 1}/{n}" for i in range(n)]
            + [LevelFinderPhase.name] * (config.level_finder is not None)
            + [CornerHeatmapsPhase.name] * (config.corner_heatmaps is not None)
            + [f"corner stage {i + 1}/{n}" for i in range(n)])
