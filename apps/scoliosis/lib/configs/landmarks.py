"""Every setting of the scoliosis app, in one place: the defaults below, overridden by `--conf KEY VALUE`.

MONAI Label hands `--conf` values over as strings, also to the processes it starts for training and scoring,
so each value is parsed and checked here once, with an error that names the key. How a model is trained is a
recipe of the library (spinecascade.training.recipes), the same for the app and the command line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from spinecascade.training.recipes import RECIPES

TASK = "vertebral_landmarks"
STRATEGY = "landmark_uncertainty"
SCORING = "landmark_uncertainty"
MODEL_FILE = Path("model") / "spinecascade.safetensors"  # relative to the app directory

# Key -> what it sets; README.md lists the same table.
OPTIONS = {
    "model_path": "model file to serve and to publish trained models to (default: "
                  "<app>/model/spinecascade.safetensors, which starts as a copy of the shipped model)",
    "device": "cpu, cuda or cuda:N for inference and training (default: CUDA when present)",
    "threads": "torch CPU threads per process (default 2)",
    "recipe": f"the recipe a training from scratch follows ({', '.join(RECIPES)}; default: the served model's)",
    "min_scratch_images": "final labels needed before training from scratch (default 20)",
    "on_demand_scores": "unscored images the active-learning strategy may score per request (default 8)",
}


class ConfigError(ValueError):
    """A `--conf` value that cannot be used; the server refuses to start rather than guess."""


@dataclass(frozen=True)
class AppConfig:
    model_path: Path
    device: str | None = None
    threads: int = 2
    recipe: str | None = None  # None: the served model's recipe
    min_scratch_images: int = 20
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
        recipe = conf.get("recipe") or None
        if recipe is not None and recipe not in RECIPES:
            raise ConfigError(f"--conf recipe {recipe!r}: the recipes are {', '.join(RECIPES)}")
        return cls(
            model_path=model.resolve(),
            device=device,
            threads=_positive(conf, "threads", cls.threads),
            recipe=recipe,
            min_scratch_images=_positive(conf, "min_scratch_images", cls.min_scratch_images),
            on_demand_scores=_positive(conf, "on_demand_scores", cls.on_demand_scores),
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


def _positive(conf: Mapping[str, str], key: str, default: int) -> int:
    raw = conf.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"--conf {key} {raw!r}: expected an integer") from None
    if value <= 0:
        raise ConfigError(f"--conf {key} {raw!r}: must be positive")
    return value
