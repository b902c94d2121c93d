"""Every setting of the scoliosis app, in one place: the defaults below, overridden by `--conf KEY VALUE`.

MONAI Label hands `--conf` values over as strings, also to the processes it starts for training and scoring,
so each value is parsed and checked here once, with an error that names the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from spinecascade.method.augmentation import framing_pixels

TASK = "vertebral_landmarks"
STRATEGY = "landmark_uncertainty"
SCORING = "landmark_uncertainty"
MODEL_FILE = Path("model") / "spinecascade.safetensors"  # relative to the app directory

# Key -> what it sets; README.md lists the same table.
OPTIONS = {
    "model_path": "model file to serve and to fine-tune (default: <app>/model/spinecascade.safetensors)",
    "device": "cpu, cuda or cuda:N for inference and training (default: CUDA when present)",
    "threads": "torch CPU threads per process (default 2)",
    "epochs": "epochs per stage when fine-tuning (default 2)",
    "scratch_epochs": "epochs per stage when training from scratch (default 8)",
    "learning_rate": "learning rate when fine-tuning (default 2e-4)",
    "scratch_learning_rate": "learning rate when training from scratch (default 5e-4)",
    "lr_decay": "learning-rate factor after every epoch when fine-tuning (default 0.5)",
    "scratch_lr_decay": "learning-rate factor after every epoch when training from scratch (default 0.9)",
    "batch_images": "images per training batch (default 8)",
    "augment": "warp the films in training beyond mirroring them: shift, tilt, scale, bend, gamma for step 1, gamma "
               "for step 2 (default true)",
    "film_framing": "with augment: move each film's top and bottom edges by up to this many pixels of the 680-px "
                    "image when training the film start, so that it finds the levels on films framed unlike "
                    "the training films (default 40, the shipped model's recipe; 0 turns it off)",
    "min_scratch_images": "final labels needed before training from scratch (default 20)",
    "on_demand_scores": "unscored images the active-learning strategy may score per request (default 8)",
}


class ConfigError(ValueError):
    """A `--conf` value that cannot be used; the server refuses to start rather than guess."""


@dataclass(frozen=True)
class TrainDefaults:
    """Training settings a request may override (POST /train/vertebral_landmarks with a JSON body)."""

    epochs: int = 2
    scratch_epochs: int = 8
    learning_rate: float = 2e-4
    scratch_learning_rate: float = 5e-4
    batch_images: int = 8
    min_scratch_images: int = 20
    augment: bool = True
    lr_decay: float = 0.5
    scratch_lr_decay: float = 0.9  # the shipped model's recipe: the paper's 0.5 leaves step 1 under-trained
    film_framing: float = 40.0  # the shipped model's recipe (pixels of the 680-px film)


@dataclass(frozen=True)
class AppConfig:
    model_path: Path
    device: str | None = None
    threads: int = 2
    train: TrainDefaults = TrainDefaults()
    on_demand_scores: int = 8

    @classmethod
    def from_conf(cls, app_dir: str | Path, conf: Mapping[str, str]) -> AppConfig:
        unknown = sorted(set(conf) - set(OPTIONS) - {"server_mode"})
        if unknown:
            raise ConfigError(f"unknown --conf key(s) {unknown}; known keys: {sorted(OPTIONS)}")
        model = Path(conf.get("model_path") or Path(app_dir) / MODEL_FILE).expanduser()
        device = conf.get("device") or None
        if device is not None and device.split(":")[0] not in ("cpu", "cuda"):
            raise ConfigError(f"--conf device {device!r}: expected cpu, cuda or cuda:N")
        base = TrainDefaults()
        train = TrainDefaults(
            epochs=_positive(conf, "epochs", int, base.epochs),
            scratch_epochs=_positive(conf, "scratch_epochs", int, base.scratch_epochs),
            learning_rate=_positive(conf, "learning_rate", float, base.learning_rate),
            scratch_learning_rate=_positive(conf, "scratch_learning_rate", float, base.scratch_learning_rate),
            batch_images=_positive(conf, "batch_images", int, base.batch_images),
            min_scratch_images=_positive(conf, "min_scratch_images", int, base.min_scratch_images),
            augment=flag(conf["augment"], "--conf augment") if "augment" in conf else base.augment,
            lr_decay=_decay(conf, "lr_decay", base.lr_decay),
            scratch_lr_decay=_decay(conf, "scratch_lr_decay", base.scratch_lr_decay),
            film_framing=_framing(conf, base.film_framing),
        )
        return cls(
            model_path=model.resolve(),
            device=device,
            threads=_positive(conf, "threads", int, cls.threads),
            train=train,
            on_demand_scores=_positive(conf, "on_demand_scores", int, cls.on_demand_scores),
        )


def flag(value: object, key: str) -> bool:
    """A request's yes/no parameter: JSON true/false, or the strings MONAI Label clients send."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", "", "none"):
        return False
    raise ConfigError(f"{key} {value!r}: expected true or false")


def _positive(conf: Mapping[str, str], key: str, kind: type[int] | type[float], default: int | float):
    raw = conf.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"--conf {key} {raw!r}: expected {'an integer' if kind is int else 'a number'}") from None
    if value <= 0:
        raise ConfigError(f"--conf {key} {raw!r}: must be positive")
    return value


def _decay(conf: Mapping[str, str], key: str, default: float) -> float:
    value = _positive(conf, key, float, default)
    if value > 1:
        raise ConfigError(f"--conf {key} {conf[key]!r}: must be at most 1 (it multiplies the learning rate)")
    return value


def _framing(conf: Mapping[str, str], default: float) -> float:
    raw = conf.get("film_framing")
    if raw is None or raw == "":
        return default
    try:
        return framing_pixels(raw)
    except ValueError as exc:
        raise ConfigError(f"--conf film_framing: {exc}") from None
