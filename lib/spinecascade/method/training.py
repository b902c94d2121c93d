"""Stage-wise training of the cascade (Algorithm 2 of the paper), resumable and data-parallel.

The film start is trained first, then the stages one after another, each on the outputs of the previous one
over the whole training set; a level finder, where the config has one, between step 1 and step 2, and corner
heatmaps, where it has them, before step 2's stages.
After every epoch the complete training state is checkpointed atomically, so a killed run started again with
the same arguments resumes and ends with the same weights. Under torchrun each process takes a share of every
batch (DistributedDataParallel; gloo on CPU, NCCL on GPU) and only rank 0 writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from spinecascade.io.atomic import atomic_path
from spinecascade.landmarks import N_VERTEBRAE
from spinecascade.measurement.metrics import normalised_mse
from spinecascade.method.augmentation import (
    CornerDrawConfig,
    CornerDraws,
    LevelDraws,
    LevelPriorConfig,
    WarpConfig,
    Warps,
)
from spinecascade.method.cascade import Cascade, CascadeConfig, Stage, downsample, standardise
from spinecascade.method.crops import rotate, spine_directions
from spinecascade.method.samples import PreparedImage, pad_batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 8
    corner_epochs: int | None = None  # step 2 costs 4x step 1 per image; None trains it for `epochs` too
    learning_rate: float = 5e-4
    lr_decay: float = 0.5
    smooth_l1_beta: float = 1e-3
    batch_images: int = 8
    seed: int = 0
    augment: bool = False  # warps beyond the paper's mirrors (augmentation.py)
    warp_strength: float = 1.0  # multiplies the warps' geometric ranges
    corner_warp_strength: float = 0.0  # the same for step 2: gamma only, measured best on held-out images
    film_framing: float = 0.0  # the film start's warps move the film's top and bottom edges by up to this (px)
    start_epochs: int | None = None  # the film start's (one-cycle schedule); None: 5 x `epochs`, a film is cheap
    start_learning_rate: float = 1e-3  # the schedule's peak
    start_batch_images: int = 16
    level_epochs: int | None = None  # the level finder's (one-cycle schedule); None: 4 x `epochs`
    level_learning_rate: float = 2e-3  # the schedule's peak
    heatmap_epochs: int | None = None  # the corner heatmaps' (one-cycle schedule); None: 1.5 x `epochs`
    heatmap_learning_rate: float = 2e-3  # the schedule's peak
    stages: tuple[int, int] | None = None  # step-1 and step-2 stages to train (those a prediction runs); None: all


class TrainingStopped(Exception):
    """Raised when `should_stop` asks a run to stop; the last checkpoint stays for a later resume."""


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    if dist.is_available() and dist.is_initialized() and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def init_distributed() -> tuple[int, int]:
    """Join the torchrun process group when launched by torchrun; (rank, world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _phases(config: CascadeConfig, stages: tuple[int, int] | None = None) -> list[tuple[str, int]]:
    """The training's phases in order. Stages after those a prediction runs are left out: they would cost
    hours, and the level finder and step 2 would learn from centres a prediction never gives them."""
    centre, corner = stages if stages is not None else (config.n_stages, config.n_stages)
    start = [("start", 0)] if config.film_start else []
    levels = [("levels", 0)] if config.level_finder else []
    heatmaps = [("heatmaps", 0)] if config.corner_heatmaps else []
    return start + [("centre", i) for i in range(centre)] + levels + heatmaps + [("corner", i) for i in range(corner)]


def phase_count(config: CascadeConfig, stages: tuple[int, int] | None = None) -> int:
    """How many phases a training of `config` runs (each reports one "stage_done" event)."""
    return len(_phases(config, stages))


def _fingerprint(images: list[PreparedImage], config: CascadeConfig, train: TrainConfig, base: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([config.as_dict(), train.__dict__, base], sort_keys=True, default=str).encode())
    for img in images:
        h.update(img.name.encode())
        h.update(np.ascontiguousarray(img.landmarks, np.float64).tobytes())
    return h.hexdigest()


def _targets(images: list[PreparedImage], step: str) -> np.ndarray:
    lm = np.stack([img.landmarks for img in images])
    return lm.mean(axis=2)[:, None] if step == "centre" else lm


def fit_mean_shapes(cascade: Cascade, images: list[PreparedImage]) -> None:
    """Eq. 6-7: mean normalised centres; and the mean corner layout around each centre for step 2."""
    lm = torch.from_numpy(np.stack([img.landmarks for img in images])).double()
    sizes = torch.tensor([img.size for img in images], dtype=torch.float64)
    centres = lm.mean(dim=2)
    offsets = lm - centres[:, :, None]
    if cascade.config.align_corner_start:
        offsets = rotate(offsets, spine_directions(centres))
    cascade.mean_centres.copy_((centres / sizes[:, None]).mean(dim=0))
    cascade.mean_corner_offsets.copy_(offsets.mean(dim=0))


class _Trainer:
    def __init__(self, cascade: Cascade, images: list[PreparedImage], train: TrainConfig, device: torch.device,
                 checkpoint: Path, fingerprint: str, progress: bool,
                 on_event: Callable[[dict], None] | None, should_stop: Callable[[], bool] | None) -> None:
        self.cascade = cascade
        self.images = images
        self.train = train
        self.device = device
        self.checkpoint = checkpoint
        self.fingerprint = fingerprint
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        self.progress = progress and self.rank == 0
        self.on_event = on_event or (lambda event: None)
        self.should_stop = should_stop or (lambda: False)
        self.history: list[dict] = []
        self.stage_started = time.monotonic()

    # Batches -----------------------------------------------------------------------------------------------
    def _batch(self, idx: np.ndarray, step: str, warps: Warps | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        u8, sizes = pad_batch([self.images[i].image for i in idx])
        images01 = u8.to(self.device).float() / 255.0
        if warps is not None:
            images01 = warps.images(images01, sizes.to(self.device))
        factors = {"corner": self.cascade.config.corner.source_downsample, "levels": 1, "heatmaps": 1}
        factor = factors.get(step, self.cascade.config.centre.source_downsample)
        return downsample(standardise(images01), factor), sizes.to(self.device)

    def _warps(self, n: int, step: str, *key: int) -> Warps | LevelDraws | CornerDraws | None:
        """The same draws for a batch on every rank and on a resumed run: seeded by (seed, *key).

        The level finder always trains on moved priors and stretched strips, and the corner heatmaps on moved
        centres: without them neither has anything to find.
        """
        seed = int.from_bytes(hashlib.sha256(repr((self.train.seed, *key)).encode()).digest()[:8], "little")
        height = self.cascade.config.preprocess.height
        if step == "levels":
            config = LevelPriorConfig().for_height(height)
            return LevelDraws.draw(n, config, torch.Generator().manual_seed(seed), N_VERTEBRAE)
        if step == "heatmaps":
            return CornerDraws.draw(n, CornerDrawConfig().for_height(height), torch.Generator().manual_seed(seed),
                                    N_VERTEBRAE)
        if not self.train.augment:
            return None
        strength = self.train.corner_warp_strength if step == "corner" else self.train.warp_strength
        # The film start sees each whole film 80 times (40 epochs, and mirrors): most views are warped.
        config = WarpConfig(probability=0.8, frame_y=self.train.film_framing) if step == "start" else WarpConfig()
        return Warps.draw(n, config.scaled(strength), torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def run_stage(self, stage: Stage, points: np.ndarray, step: str, batch: int = 16) -> np.ndarray:
        """The stage's output for every training image (eval mode)."""
        stage.eval()
        out = []
        for start in range(0, len(points), batch):
            idx = np.arange(start, min(start + batch, len(points)))
            source, _ = self._batch(idx, step)
            out.append(stage(source, torch.from_numpy(points[idx]).float().to(self.device)).cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    @torch.no_grad()
    def run_start(self, batch: int = 16) -> np.ndarray:
        """The film start's centres (n, 1, 17, 2) for every training image (eval mode)."""
        self.cascade.film_start.eval()
        out = []
        for first in range(0, len(self.images), batch):
            idx = np.arange(first, min(first + batch, len(self.images)))
            source, sizes = self._batch(idx, "start")
            out.append(self.cascade.initial_centres(sizes, source)[:, None].cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    def run_levels(self, points: np.ndarray) -> np.ndarray:
        """The level finder's centres (n, 1, 17, 2) from step 1's (eval mode)."""
        return self._run_at_centres(self.cascade.level_finder, "levels", points)[:, None]

    def run_corner_heatmaps(self, points: np.ndarray) -> np.ndarray:
        """The corner heatmaps' corners (n, 17, 4, 2) around step 1's centres (n, 1, 17, 2) (eval mode)."""
        return self._run_at_centres(self.cascade.corner_heatmaps, "heatmaps", points)

    @torch.no_grad()
    def _run_at_centres(self, module: torch.nn.Module, kind: str, points: np.ndarray, batch: int = 16) -> np.ndarray:
        module.eval()
        out = []
        for first in range(0, len(points), batch):
            idx = np.arange(first, min(first + batch, len(points)))
            images, _ = self._batch(idx, kind)
            out.append(module(images, torch.from_numpy(points[idx, 0]).float().to(self.device)).cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    # Checkpoints -------------------------------------------------------------------------------------------
    def save(self, phase: int, epoch: int, points: np.ndarray, optimizer, scheduler) -> None:
        if self.rank != 0:
            return
        state = {
            "fingerprint": self.fingerprint,
            "phase": phase,
            "epoch": epoch,
            "points": points,
            "cascade": self.cascade.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer else None,
            "scheduler": scheduler.state_dict() if scheduler else None,
            "history": self.history,
            "stage_seconds": time.monotonic() - self.stage_started,
        }
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.checkpoint) as tmp:
            torch.save(state, tmp)

    def load(self) -> dict | None:
        if not self.checkpoint.exists():
            return None
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        if state.get("fingerprint") != self.fingerprint:
            log.warning("ignoring checkpoint %s: it was made with other data or settings", self.checkpoint)
            return None
        self.cascade.load_state_dict(state["cascade"])
        self.history = state["history"]
        log.info("resuming from %s (phase %d, epoch %d)", self.checkpoint, state["phase"] + 1, state["epoch"])
        return state

    # Training ----------------------------------------------------------------------------------------------
    def _initial_points(self, step: str, centre_points: np.ndarray | None) -> np.ndarray:
        with torch.no_grad():
            if step == "centre":
                sizes = torch.tensor([img.size for img in self.images], dtype=torch.float32)
                return self.cascade.initial_centres(sizes.to(self.device))[:, None].cpu().double().numpy()
            return self.cascade.initial_corners(torch.from_numpy(centre_points[:, 0]).float().to(self.device)
                                                ).cpu().double().numpy()

    def fit(self, fit_pca: bool, first_phase: int = 0) -> None:
        """Train the phases from `first_phase` on; the ones before it (step 1) are run, not trained."""
        phases = _phases(self.cascade.config, self.train.stages)
        state = self.load()
        start_phase, start_epoch = (state["phase"], state["epoch"]) if state else (first_phase, 0)
        points = state["points"] if state else self._initial_points("centre", None)
        if not state:
            for step, index in phases[:first_phase]:
                if step == "start":
                    points = self.run_start()
                elif step == "levels":
                    points = self.run_levels(points)
                else:
                    points = self.run_stage(self.cascade.centre_stages[index], points, step)
        for p in range(start_phase, len(phases)):
            step, index = phases[p]
            resume = state if (state and p == start_phase) else None
            if step == "start":
                points = self._fit_start(p, resume, start_epoch if resume else 0)
                continue
            if step == "levels":
                points = self._fit_levels(p, points, resume, start_epoch if resume else 0)
                continue
            if step == "heatmaps":
                points = self._fit_heatmaps(p, points, resume, start_epoch if resume else 0)
                continue
            if step == "corner" and points.shape[1:] == (1, N_VERTEBRAE, 2):
                points = self._initial_points(step, points)
            stage = (self.cascade.centre_stages if step == "centre" else self.cascade.corner_stages)[index]
            points = self._fit_stage(p, step, index, stage, points, fit_pca, resume, start_epoch if resume else 0)

    def _fit_start(self, phase: int, resume: dict | None, first_epoch: int) -> np.ndarray:
        """Train the film start on the training films (warped like step 1's), then run it over all of them."""
        name = "film start"
        module = self.cascade.film_start
        targets = _targets(self.images, "centre")
        self._time_phase(resume, first_epoch)
        epochs = self.train.start_epochs or 5 * self.train.epochs
        size = self.train.start_batch_images
        optimizer = torch.optim.Adam(module.parameters(), lr=self.train.start_learning_rate)
        scheduler = self._one_cycle(optimizer, self.train.start_learning_rate, epochs, size, resume, first_epoch)
        model: torch.nn.Module = DistributedDataParallel(module) if dist.is_initialized() else module
        sizes = self._sizes()
        initial = self._initial_points("centre", None)
        mean = self.cascade.mean_centres.double().cpu()

        def loss_of(mine: np.ndarray, warps: Warps | None) -> torch.Tensor:
            truth = torch.from_numpy(targets[mine][:, 0])
            if warps is not None:
                truth = warps.points(truth, sizes[mine])
            source, batch_sizes = self._batch(mine, "start", warps)
            offsets = (truth / sizes[mine, None] - mean).float().to(self.device)
            return F.smooth_l1_loss(model(source, batch_sizes), offsets, beta=self.train.smooth_l1_beta)

        self._train_module(module, name, "start", phase, first_epoch, epochs, size, optimizer, loss_of, scheduler,
                           initial)
        return self._phase_done(phase, name, initial, self.run_start(), targets)

    def _train_module(self, module: torch.nn.Module, name: str, step: str, phase: int, first_epoch: int, epochs: int,
                      batch_size: int, optimizer, loss_of, scheduler, points: np.ndarray) -> None:
        """Epochs of a phase that trains one module; a checkpoint after each but the last lets a kill resume."""
        for epoch in range(first_epoch, epochs):
            module.train()
            self._train_epoch(name, step, phase, epoch, epochs, batch_size, optimizer, loss_of, scheduler)
            _sync_buffers(module)
            if epoch + 1 < epochs:
                self.save(phase, epoch + 1, points, optimizer, scheduler)

    def _one_cycle(self, optimizer, peak: float, epochs: int, batch_size: int, resume: dict | None,
                   first_epoch: int) -> torch.optim.lr_scheduler.OneCycleLR:
        """A per-batch one-cycle schedule; a resumed phase gets its optimizer's and schedule's state back."""
        steps = max(epochs * -(-len(self.images) // batch_size), 3)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(  # a tenth of the steps warm up, at least two
            optimizer, peak, total_steps=steps, pct_start=max(0.1, 2 / steps))
        if resume and resume.get("optimizer") and first_epoch > 0:
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
        return scheduler

    def _fit_levels(self, phase: int, points: np.ndarray, resume: dict | None, first_epoch: int) -> np.ndarray:
        """Train the level finder on priors drawn around the truth, then run it on step 1's centres."""
        name = "level finder"
        module = self.cascade.level_finder
        targets = _targets(self.images, "centre")
        self._time_phase(resume, first_epoch)
        epochs = self.train.level_epochs or 4 * self.train.epochs
        size = self.train.batch_images
        optimizer = torch.optim.AdamW(module.parameters(), lr=self.train.level_learning_rate, weight_decay=1e-4)
        scheduler = self._one_cycle(optimizer, self.train.level_learning_rate, epochs, size, resume, first_epoch)
        model: torch.nn.Module = DistributedDataParallel(module) if dist.is_initialized() else module

        def loss_of(mine: np.ndarray, draws: LevelDraws) -> torch.Tensor:
            truth = torch.from_numpy(targets[mine][:, 0])
            u8, _ = pad_batch([self.images[i].image for i in mine])
            images = standardise(draws.images(u8.to(self.device).float() / 255.0))
            priors = draws.priors(truth).float().to(self.device)
            found = model(images, priors, draws.row_scale.float().to(self.device),
                          draws.row_shift.float().to(self.device))
            return F.smooth_l1_loss(found, truth.float().to(self.device), beta=2.0)

        self._train_module(module, name, "levels", phase, first_epoch, epochs, size, optimizer, loss_of, scheduler,
                           points)
        return self._phase_done(phase, name, points, self.run_levels(points), targets)

    def _fit_heatmaps(self, phase: int, points: np.ndarray, resume: dict | None, first_epoch: int) -> np.ndarray:
        """Train the corner heatmaps in windows around moved true centres, then run them at step 1's centres.

        Step 1's outputs on its own training films are nearer the truth than on unseen ones, so the windows are
        placed by drawn misses instead, as the level finder's priors are.
        """
        name = "corner heatmaps"
        module = self.cascade.corner_heatmaps
        targets = _targets(self.images, "corner")
        self._time_phase(resume, first_epoch)
        epochs = self.train.heatmap_epochs or -(-3 * self.train.epochs // 2)
        size = self.train.batch_images
        optimizer = torch.optim.AdamW(module.parameters(), lr=self.train.heatmap_learning_rate, weight_decay=1e-4)
        scheduler = self._one_cycle(optimizer, self.train.heatmap_learning_rate, epochs, size, resume, first_epoch)
        model: torch.nn.Module = _Locate(module)
        if dist.is_initialized():
            model = DistributedDataParallel(model)
        beta = self.cascade.config.preprocess.height / 680  # a pixel of the 680-px image

        def loss_of(mine: np.ndarray, draws: CornerDraws) -> torch.Tensor:
            truth = torch.from_numpy(targets[mine]).to(self.device, torch.float32)
            u8, _ = pad_batch([self.images[i].image for i in mine])
            images = standardise(draws.images(u8.to(self.device).float() / 255.0))
            centres = truth.mean(dim=2)
            moved = centres + draws.centre_noise.to(centres)
            angles = spine_directions(centres + draws.direction_noise.to(centres))
            picked = draws.vertebrae.to(self.device)
            found = model(images, torch.gather(moved, 1, picked[..., None].expand(-1, -1, 2)),
                          torch.gather(angles, 1, picked))
            wanted = torch.gather(truth, 1, picked[..., None, None].expand(-1, -1, *truth.shape[2:]))
            return F.smooth_l1_loss(found, wanted, beta=beta)

        self._train_module(module, name, "heatmaps", phase, first_epoch, epochs, size, optimizer, loss_of,
                           scheduler, points)
        before = self._initial_points("corner", points)
        return self._phase_done(phase, name, before, self.run_corner_heatmaps(points), targets)

    def _fit_stage(self, phase: int, step: str, index: int, stage: Stage, points: np.ndarray, fit_pca: bool,
                   resume: dict | None, first_epoch: int) -> np.ndarray:
        n_stages = self.cascade.config.n_stages
        name = f"{step} stage {index + 1}/{n_stages}"
        targets = _targets(self.images, step)
        self._time_phase(resume, first_epoch)
        stage.to(self.device)
        if fit_pca and first_epoch == 0:
            offsets = (targets - points).reshape(len(points) * points.shape[1], -1)
            warps = self._warps(len(points), step, phase)
            if warps is not None:  # the shape model also spans the offsets the warps add
                warped = warps.points(torch.from_numpy(targets), self._sizes()).numpy()
                offsets = np.concatenate([offsets, (warped - points).reshape(offsets.shape)])
            explained = stage.shape_model.fit(offsets, self.cascade.config.centred_pca,
                                              stage.step.n_components is not None)
            q = stage.shape_model.n_components
            log.info("%s: %d PCA components explain %.4f of the offset variance", name, q, explained[:q].sum())
        optimizer = torch.optim.Adam(stage.parameters(), lr=self.train.learning_rate)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=self.train.lr_decay)
        if resume and resume.get("optimizer") and first_epoch > 0:
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
        model: torch.nn.Module = _Coefficients(stage)
        if dist.is_initialized():
            model = DistributedDataParallel(model)
        epochs = self._epochs(step)
        for epoch in range(first_epoch, epochs):
            self._epoch(model, stage, optimizer, points, targets, step, phase, epoch, name, epochs)
            scheduler.step()
            _sync_buffers(stage)
            if epoch + 1 < epochs:
                self.save(phase, epoch + 1, points, optimizer, scheduler)
        return self._phase_done(phase, name, points, self.run_stage(stage, points, step), targets)

    def _time_phase(self, resume: dict | None, first_epoch: int) -> None:
        """A resumed phase counts the seconds it ran before the interruption."""
        resumed_seconds = resume.get("stage_seconds", 0.0) if resume and first_epoch > 0 else 0.0
        self.stage_started = time.monotonic() - resumed_seconds

    def _phase_done(self, phase: int, name: str, before: np.ndarray, after: np.ndarray,
                    targets: np.ndarray) -> np.ndarray:
        """Record, log and checkpoint a finished phase; its output points are the next phase's input."""
        mse = self._mse(after, targets)
        seconds = round(time.monotonic() - self.stage_started, 1)
        self.history.append({"stage": name, "train_mse": mse, "seconds": seconds})
        log.info("%s done in %.0f s: training-set normalised MSE %.3e (before %.3e)", name, seconds, mse,
                 self._mse(before, targets))
        self.on_event({"event": "stage_done", "stage": name, "train_mse": mse})
        self.save(phase + 1, 0, after, None, None)
        return after

    def _epochs(self, step: str) -> int:
        if step == "corner" and self.train.corner_epochs is not None:
            return self.train.corner_epochs
        return self.train.epochs

    def _epoch(self, model, stage: Stage, optimizer, points: np.ndarray, targets: np.ndarray, step: str,
               phase: int, epoch: int, name: str, epochs: int) -> None:
        stage.train()
        sizes = self._sizes()

        def loss_of(mine: np.ndarray, warps: Warps | None) -> torch.Tensor:
            truth = torch.from_numpy(targets[mine])
            if warps is not None:
                truth = warps.points(truth, sizes[mine])
            source, _ = self._batch(mine, step, warps)
            pts = torch.from_numpy(points[mine]).float().to(self.device)
            coeffs = stage.shape_model.encode((truth.float().to(self.device) - pts).flatten(0, 1))
            return F.smooth_l1_loss(model(source, pts), coeffs, beta=self.train.smooth_l1_beta)

        self._train_epoch(name, step, phase, epoch, epochs, self.train.batch_images, optimizer, loss_of)

    def _train_epoch(self, name: str, step: str, phase: int, epoch: int, epochs: int, batch_size: int, optimizer,
                     loss_of: Callable[[np.ndarray, Warps | None], torch.Tensor], per_batch=None) -> None:
        """One epoch in a seeded order; under torchrun each rank takes its share of every batch and its warps.

        `per_batch` is a learning-rate schedule that steps after every batch rather than every epoch.
        """
        order = np.random.default_rng([self.train.seed, phase, epoch]).permutation(len(self.images))
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        bar = tqdm(batches, desc=f"{name} epoch {epoch + 1}/{epochs}", disable=not self.progress,
                   leave=False, unit="batch")
        total, count = 0.0, 0
        for number, batch in enumerate(bar):
            if self.should_stop():
                raise TrainingStopped(f"stopped during {name}, epoch {epoch + 1}")
            part = np.arange(len(batch))[self.rank :: self.world]
            if len(part) == 0:
                part = np.arange(1)
            mine = batch[part]
            warps = self._warps(len(batch), step, phase, epoch, number)
            loss = loss_of(mine, warps[torch.from_numpy(part)] if warps is not None else None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if per_batch is not None:
                per_batch.step()
            total += loss.item() * len(mine)
            count += len(mine)
            bar.set_postfix(loss=f"{total / count:.4g}")
        self.on_event({"event": "epoch_done", "stage": name, "epoch": epoch + 1, "loss": total / max(count, 1)})

    def _sizes(self) -> torch.Tensor:
        return torch.tensor([img.size for img in self.images], dtype=torch.float64)

    def _mse(self, points: np.ndarray, targets: np.ndarray) -> float:
        sizes = [img.size for img in self.images]
        return float(np.mean([normalised_mse(p, t, *s) for p, t, s in zip(points, targets, sizes)]))


class _Coefficients(torch.nn.Module):
    """A stage's regression as a forward pass, so that DistributedDataParallel can wrap it."""

    def __init__(self, stage: Stage) -> None:
        super().__init__()
        self.stage = stage

    def forward(self, source: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return self.stage.coefficients(source, points)


class _Locate(torch.nn.Module):
    """The corner heatmaps' windows at chosen centres and turns as a forward pass, for DistributedDataParallel."""

    def __init__(self, heatmaps: torch.nn.Module) -> None:
        super().__init__()
        self.heatmaps = heatmaps

    def forward(self, images: torch.Tensor, centres: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        return self.heatmaps.locate(images, centres, angles)


def _sync_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's batch-norm statistics so that all ranks hold the same model."""
    if dist.is_initialized():
        for b in module.buffers():
            dist.broadcast(b, 0)


def _step1_settings(config: CascadeConfig) -> tuple:
    return config.preprocess, config.centre, config.n_stages, config.feature_dim, config.centred_pca, config.film_start


def train_cascade(
    images: list[PreparedImage],
    checkpoint: Path,
    config: CascadeConfig | None = None,
    train: TrainConfig | None = None,
    base: Cascade | None = None,
    step1_from: Cascade | None = None,
    device: str | None = None,
    progress: bool = True,
    on_event: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[Cascade, list[dict]]:
    """Train (or fine-tune `base`) on already flip-augmented images; returns the cascade and per-stage history.

    With `step1_from`, step 1 (mean centre shape and centre stages) is taken from that cascade and only step 2
    is trained, with step 2's settings from `config` (default: those of `step1_from`): step-2 choices then cost
    a fraction of a whole training. A level finder in `config` that `step1_from` lacks is trained before it.
    """
    if not images:
        raise ValueError("no training images")
    if base is not None and step1_from is not None:
        raise ValueError("fine-tune a whole cascade or reuse another's step 1, not both")
    train = train or TrainConfig()
    source = base if base is not None else step1_from
    if base is not None:
        config = base.config
    elif step1_from is not None:
        config = config or step1_from.config
        if _step1_settings(config) != _step1_settings(step1_from.config):
            raise ValueError("the step-1 settings differ from those of the model step 1 is taken from")
    else:
        config = config or CascadeConfig()
    torch.manual_seed(train.seed)
    cascade = Cascade(config)
    if base is not None:
        cascade.load_state_dict(base.state_dict())
    else:
        fit_mean_shapes(cascade, images)
    if train.stages is not None:  # the trained model runs what was trained
        cascade.set_prediction_stages(*train.stages)
    if step1_from is not None:
        cascade.mean_centres.copy_(step1_from.mean_centres)
        cascade.centre_stages.load_state_dict(step1_from.centre_stages.state_dict())
        if cascade.film_start is not None:
            cascade.film_start.load_state_dict(step1_from.film_start.state_dict())
        if cascade.level_finder is not None and step1_from.level_finder is not None:
            cascade.level_finder.load_state_dict(step1_from.level_finder.state_dict())
    dev = pick_device(device)
    cascade.to(dev)
    base_id = "scratch"
    if source is not None:
        digest = hashlib.sha256(b"".join(t.detach().cpu().numpy().tobytes() for t in source.state_dict().values()))
        base_id = ("step1 " if step1_from is not None else "") + digest.hexdigest()
    trainer = _Trainer(cascade, images, train, dev, checkpoint, _fingerprint(images, config, train, base_id),
                       progress, on_event, should_stop)
    steps = [step for step, _ in _phases(config, train.stages)]
    first = 0
    if step1_from is not None:  # a level finder the model lacks is trained before step 2
        step2 = "heatmaps" if config.corner_heatmaps else "corner"
        first = steps.index("levels" if config.level_finder and step1_from.level_finder is None else step2)
    trainer.fit(fit_pca=base is None, first_phase=first)
    return cascade.cpu().eval(), trainer.history
