"""The training loop: the phases one after another, resumable and data-parallel.

After every epoch the complete training state is checkpointed atomically, so a killed run started again with
the same data and settings resumes and ends with the same weights. Under torchrun each process takes a share of
every batch (DistributedDataParallel; gloo on CPU, NCCL on GPU) and only rank 0 writes. Each epoch and each phase
reports an event ({"event": "epoch_done" | "stage_done", ...}) to `on_event`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from spinecascade.io.atomic import atomic_path
from spinecascade.method.cascade import Cascade
from spinecascade.training.config import TrainConfig
from spinecascade.training.data import TrainingSet
from spinecascade.training.phases import Phase, cascade_phases, mean_shape_centres

log = logging.getLogger(__name__)

Events = Callable[[dict], None]


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


def seeded(*key: object) -> torch.Generator:
    """A generator seeded by `key`: the same draws on every rank and on a resumed run."""
    seed = int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little")
    return torch.Generator().manual_seed(seed)


class TrainingLoop:
    def __init__(self, cascade: Cascade, images: TrainingSet, train: TrainConfig, checkpoint: Path,
                 fingerprint: str, fit_shape_models: bool = True, progress: bool = True,
                 on_event: Events | None = None, should_stop: Callable[[], bool] | None = None,
                 phases: list[Phase] | None = None) -> None:
        """`phases`: what to train (default: every part of the cascade, cascade_phases)."""
        self.cascade = cascade
        self.images = images
        self.train = train
        self.checkpoint = checkpoint
        self.fingerprint = fingerprint
        self.phases = phases if phases is not None else cascade_phases(cascade, images, train, fit_shape_models)
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        self.progress = progress and self.rank == 0
        self.on_event = on_event or (lambda event: None)
        self.should_stop = should_stop or (lambda: False)
        self.history: list[dict] = []
        self.phase_started = time.monotonic()

    def run(self) -> list[dict]:
        """Train every phase from the checkpoint's place on; returns the per-phase history."""
        state = self._load()
        first_phase, first_epoch = (state["phase"], state["epoch"]) if state else (0, 0)
        points = state["points"] if state else mean_shape_centres(self.cascade, self.images)
        for p in range(first_phase, len(self.phases)):
            phase = self.phases[p]
            resume = state if (state and p == first_phase and first_epoch > 0) else None
            points = self._run_phase(p, phase, points, resume)
        return self.history

    def _run_phase(self, p: int, phase: Phase, points: np.ndarray, resume: dict | None) -> np.ndarray:
        inputs = phase.inputs(points)
        first_epoch = resume["epoch"] if resume else 0
        self.phase_started = time.monotonic() - (resume.get("phase_seconds", 0.0) if resume else 0.0)
        if resume is None:
            phase.setup(inputs, seeded(self.train.seed, p))
        optimizer = phase.optimizer()
        batches_per_epoch = -(-len(self.images) // phase.batch_images)
        scheduler = phase.scheduler(optimizer, batches_per_epoch)
        if resume and resume.get("optimizer"):
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
        model = phase.trainable()
        if dist.is_initialized():
            model = DistributedDataParallel(model)
        for epoch in range(first_epoch, phase.epochs):
            phase.module.train()
            self._epoch(p, phase, epoch, model, optimizer, scheduler, inputs)
            if not phase.per_batch_schedule:
                scheduler.step()
            _sync_buffers(phase.module)
            if epoch + 1 < phase.epochs:
                self._save(p, epoch + 1, inputs, optimizer, scheduler)
        return self._phase_done(p, phase, phase.before(inputs), phase.run(inputs))

    def _epoch(self, p: int, phase: Phase, epoch: int, model: torch.nn.Module, optimizer, scheduler,
               points: np.ndarray) -> None:
        """One epoch in a seeded order; under torchrun each rank takes its share of every batch and its draws."""
        order = np.random.default_rng([self.train.seed, p, epoch]).permutation(len(self.images))
        size = phase.batch_images
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        bar = tqdm(batches, desc=f"{phase.name} epoch {epoch + 1}/{phase.epochs}", disable=not self.progress,
                   leave=False, unit="batch")
        total, count = 0.0, 0
        for number, batch in enumerate(bar):
            if self.should_stop():
                raise TrainingStopped(f"stopped during {phase.name}, epoch {epoch + 1}")
            part = np.arange(len(batch))[self.rank :: self.world]
            if len(part) == 0:
                part = np.arange(1)
            mine = batch[part]
            draws = phase.draws(len(batch), seeded(self.train.seed, p, epoch, number))
            loss = phase.loss(model, mine, draws[torch.from_numpy(part)] if draws is not None else None, points)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if phase.per_batch_schedule:
                scheduler.step()
            total += loss.item() * len(mine)
            count += len(mine)
            bar.set_postfix(loss=f"{total / count:.4g}")
        self.on_event({"event": "epoch_done", "stage": phase.name, "epoch": epoch + 1,
                       "loss": total / max(count, 1)})

    def _phase_done(self, p: int, phase: Phase, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """Record, log and checkpoint a finished phase; its output points are the next phase's input."""
        mse = self.images.mse(after, phase.targets)
        seconds = round(time.monotonic() - self.phase_started, 1)
        self.history.append({"stage": phase.name, "train_mse": mse, "seconds": seconds})
        log.info("%s done in %.0f s: training-set normalised MSE %.3e (before %.3e)", phase.name, seconds, mse,
                 self.images.mse(before, phase.targets))
        self.on_event({"event": "stage_done", "stage": phase.name, "train_mse": mse})
        self._save(p + 1, 0, after, None, None)
        return after

    def _save(self, phase: int, epoch: int, points: np.ndarray, optimizer, scheduler) -> None:
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
            "phase_seconds": time.monotonic() - self.phase_started,
        }
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.checkpoint) as tmp:
            torch.save(state, tmp)

    def _load(self) -> dict | None:
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


def _sync_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's batch-norm statistics so that all ranks hold the same model."""
    if dist.is_initialized():
        for b in module.buffers():
            dist.broadcast(b, 0)


def fingerprint(images: TrainingSet, model: dict, train: TrainConfig, base: str) -> str:
    """What a checkpoint must have been made with to be resumed: data, settings and the starting model."""
    h = hashlib.sha256()
    h.update(json.dumps([model, train.as_dict(), base], sort_keys=True, default=str).encode())
    for img in images.images:
        h.update(img.name.encode())
        h.update(np.ascontiguousarray(img.landmarks, np.float64).tobytes())
    return h.hexdigest()
