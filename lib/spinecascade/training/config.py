"""How a model is trained: one settings block per trained part, each value checked here once.

A part's block holds what that part's phase needs (epochs, learning rate, batch size and its own extras); the
parts a training runs are the ones the model configuration has (film start, PCA stages, level finder, corner
heatmaps). Errors name the setting as `--set` spells it, e.g. ``stages.lr_decay``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from spinecascade.errors import SpineCascadeError

MAX_FRAMING = 170.0  # a quarter of the 680-px film: the spine (about 87 % of it) still fits between the edges


class ConfigError(SpineCascadeError, ValueError):
    """A setting that cannot be used; the message names it."""


def _check(ok: bool, name: str, value: object, why: str) -> None:
    if not ok:
        raise ConfigError(f"{name} {value!r}: {why}")


def _whole(name: str, value: object, low: int = 1) -> None:
    _check(isinstance(value, int) and not isinstance(value, bool) and value >= low, name, value,
           f"expected a whole number of at least {low}")


def _number(name: str, value: object, low: float, high: float, low_open: bool = True) -> None:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    inside = is_number and (low < value if low_open else low <= value) and value <= high
    bracket = "(" if low_open else "["
    _check(inside, name, value, f"expected a number in {bracket}{low:g}, {high:g}]")


@dataclass(frozen=True)
class PhaseTraining:
    """A part trained with a per-batch one-cycle schedule (AdamW, peak `learning_rate`)."""

    epochs: int
    learning_rate: float = 2e-3
    batch_images: int = 4

    def check(self, prefix: str) -> None:
        _whole(f"{prefix}.epochs", self.epochs, low=0)  # 0: the part is kept as the base model has it
        _number(f"{prefix}.learning_rate", self.learning_rate, 0, 1)
        _whole(f"{prefix}.batch_images", self.batch_images)


@dataclass(frozen=True)
class FilmStartTraining(PhaseTraining):
    """The whole-film regression of step 1's start (Adam, one-cycle schedule, the training warps)."""

    epochs: int = 40
    learning_rate: float = 1e-3
    batch_images: int = 16
    smooth_l1_beta: float = 1e-3
    # The film's top and bottom edges each moved by up to this many pixels of the 680-px image.
    framing: float = 0.0

    def check(self, prefix: str) -> None:
        super().check(prefix)
        _number(f"{prefix}.smooth_l1_beta", self.smooth_l1_beta, 0, 1)
        _number(f"{prefix}.framing", self.framing, 0, MAX_FRAMING, low_open=False)


@dataclass(frozen=True)
class StageTraining:
    """The paper's PCA-constrained stages, trained one after another (Adam, lr times `lr_decay` each epoch)."""

    epochs: int = 8
    corner_epochs: int = 8  # a step-2 stage costs four times a step-1 stage per image
    learning_rate: float = 5e-4
    lr_decay: float = 0.5
    batch_images: int = 8
    smooth_l1_beta: float = 1e-3
    warp_strength: float = 1.0  # multiplies the warps' geometric ranges for step 1
    corner_warp_strength: float = 0.0  # the same for step 2: gamma only, measured best on held-out images

    def check(self, prefix: str) -> None:
        _whole(f"{prefix}.epochs", self.epochs, low=0)
        _whole(f"{prefix}.corner_epochs", self.corner_epochs, low=0)
        _number(f"{prefix}.learning_rate", self.learning_rate, 0, 1)
        _number(f"{prefix}.lr_decay", self.lr_decay, 0, 1)
        _whole(f"{prefix}.batch_images", self.batch_images)
        _number(f"{prefix}.smooth_l1_beta", self.smooth_l1_beta, 0, 1)
        _number(f"{prefix}.warp_strength", self.warp_strength, 0, 4, low_open=False)
        _number(f"{prefix}.corner_warp_strength", self.corner_warp_strength, 0, 4, low_open=False)


@dataclass(frozen=True)
class LocatorTraining(PhaseTraining):
    """The spine locator (training/spine_locator.py): AdamW under a one-cycle schedule on reframed views."""

    epochs: int = 20
    learning_rate: float = 2e-3
    batch_images: int = 32
    annotated_repeats: int = 8  # views of each annotated full-length film per epoch (a labelled film gets one)

    def check(self, prefix: str) -> None:
        super().check(prefix)
        _whole(f"{prefix}.annotated_repeats", self.annotated_repeats)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    augment: bool = False  # warp the films beyond the paper's mirrors (augmentation.py)
    clean_labels: bool = True  # repair or exclude labels the checker rejects
    film_start: FilmStartTraining = field(default_factory=FilmStartTraining)
    stages: StageTraining = field(default_factory=StageTraining)
    level_finder: PhaseTraining = field(default_factory=lambda: PhaseTraining(epochs=32))
    corner_heatmaps: PhaseTraining = field(default_factory=lambda: PhaseTraining(epochs=12))
    spine_locator: LocatorTraining = field(default_factory=LocatorTraining)

    def __post_init__(self) -> None:
        _whole("seed", self.seed, low=0)
        _check(isinstance(self.augment, bool), "augment", self.augment, "expected true or false")
        _check(isinstance(self.clean_labels, bool), "clean_labels", self.clean_labels, "expected true or false")
        for part in _PARTS:
            getattr(self, part).check(part)
        if self.film_start.framing and not self.augment:
            raise ConfigError(f"film_start.framing {self.film_start.framing!r}: the framing is one of the training "
                              "warps; it needs augment true")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """From `as_dict`'s layout; unknown keys are refused with the known ones listed."""
        parts = {"film_start": FilmStartTraining, "stages": StageTraining, "level_finder": PhaseTraining,
                 "corner_heatmaps": PhaseTraining, "spine_locator": LocatorTraining}
        _known(d, cls, "")
        values = dict(d)
        for name, kind in parts.items():
            if name in values:
                _check(isinstance(values[name], dict), name, values[name], "expected a group of settings")
                _known(values[name], kind, f"{name}.")
                values[name] = kind(**values[name])
        return cls(**values)

    def with_epochs(self, epochs: int) -> TrainConfig:
        """Every part trained for `epochs` epochs."""
        _whole("epochs", epochs)
        return self._every_part(epochs=epochs, corner_epochs=epochs)

    def with_batch(self, batch_images: int) -> TrainConfig:
        """Every part trained on batches of `batch_images` images."""
        _whole("batch", batch_images)
        return self._every_part(batch_images=batch_images)

    def _every_part(self, **values: int) -> TrainConfig:
        d = self.as_dict()
        for part in _PARTS:
            d[part].update({k: v for k, v in values.items() if k in d[part]})
        return TrainConfig.from_dict(d)


_PARTS = ("film_start", "stages", "level_finder", "corner_heatmaps", "spine_locator")


def _known(d: dict, kind: type, prefix: str) -> None:
    names = {f.name for f in fields(kind)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(prefix + u for u in unknown)}; known: "
                          f"{', '.join(prefix + n for n in sorted(names))}")
