"""Named recipes: the model configuration and the training settings of each kind of model, in one place.

- `paper`: the method as published (Wang et al.): step 1 from the mean shape, three PCA-constrained stages per
  step, mirrors only, Adam at 5e-4 halved every epoch, 8 epochs a stage.
- `shipped`: the shipped model: the spine locator (the crop the cascade reads, found by anatomy on the whole
  film), the film start (trained on warped and reframed films), the level finder and the corner heatmaps; no PCA
  stage runs. docs/method.md has the measurements behind each part. Fine-tuning keeps the locator as it is.
- `small`: every part at a size that trains on synthetic spines in a minute or two on a CPU (tests, demos).

Each recipe also says how to fine-tune a model it made (`finetune`). `configure` applies a user's changes
(`--set field=value`, epochs, batch, seed) and checks the result once, with errors that name the setting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from spinecascade.method.cascade import CascadeConfig, StepConfig
from spinecascade.method.corner_heatmaps import CornerHeatmapConfig
from spinecascade.method.level_finder import LevelConfig
from spinecascade.method.preprocessing import PreprocessConfig
from spinecascade.method.spine_locator import LocatorConfig
from spinecascade.training.config import (
    ConfigError,
    FilmStartTraining,
    LocatorTraining,
    PhaseTraining,
    StageTraining,
    TrainConfig,
)


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    model: CascadeConfig
    train: TrainConfig
    finetune: TrainConfig  # how a model of this recipe is fine-tuned on new labels

    def as_dict(self) -> dict:
        return {"recipe": self.name, "summary": self.summary, "model": self.model.as_dict(),
                "train": self.train.as_dict(), "finetune": self.finetune.as_dict()}


_PAPER = Recipe(
    "paper",
    "the published method: mean-shape start, three PCA-constrained stages per step, mirrors only",
    CascadeConfig(),
    TrainConfig(stages=StageTraining(epochs=8, corner_epochs=8, learning_rate=5e-4, lr_decay=0.5, batch_images=8)),
    TrainConfig(stages=StageTraining(epochs=2, corner_epochs=2, learning_rate=2e-4, lr_decay=0.5, batch_images=8)),
)

_SHIPPED = Recipe(
    "shipped",
    "the shipped model: spine locator, film start, level finder and corner heatmaps, no PCA stage",
    CascadeConfig(n_stages=0, align_corner_start=True, film_start=(128, 320), level_finder=LevelConfig(),
                  corner_heatmaps=CornerHeatmapConfig(), spine_locator=LocatorConfig()),
    TrainConfig(augment=True, film_start=FilmStartTraining(epochs=40, framing=40.0),
                level_finder=PhaseTraining(epochs=30), corner_heatmaps=PhaseTraining(epochs=12)),
    TrainConfig(augment=True, film_start=FilmStartTraining(epochs=10, framing=40.0),
                level_finder=PhaseTraining(epochs=8), corner_heatmaps=PhaseTraining(epochs=3),
                spine_locator=LocatorTraining(epochs=0)),
)

_SMALL = Recipe(
    "small",
    "every part, small: for synthetic 96 x 240 spines in tests and demos",
    CascadeConfig(
        PreprocessConfig(height=240),
        StepConfig((96, 48), (48, 24), 8, 2),
        StepConfig((24, 24), (24, 24), 6, 1),
        n_stages=1,
        align_corner_start=True,
        film_start=(48, 120),
        level_finder=LevelConfig(width=48, step=2, channels=32, dilations=(1, 2, 4, 8)),
        corner_heatmaps=CornerHeatmapConfig(window=32, spacing=1.0, channels=(8, 16, 32, 32), decoder=16),
    ),
    TrainConfig(augment=True, film_start=FilmStartTraining(epochs=40),
                stages=StageTraining(epochs=4, corner_epochs=4, learning_rate=2e-3, batch_images=2),
                level_finder=PhaseTraining(epochs=12), corner_heatmaps=PhaseTraining(epochs=10)),
    TrainConfig(augment=True, film_start=FilmStartTraining(epochs=4),
                stages=StageTraining(epochs=1, corner_epochs=1, learning_rate=5e-4, batch_images=2),
                level_finder=PhaseTraining(epochs=2), corner_heatmaps=PhaseTraining(epochs=2)),
)

RECIPES = {r.name: r for r in (_PAPER, _SHIPPED, _SMALL)}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"recipe {name!r}: unknown; the recipes are {', '.join(RECIPES)}") from None


def configure(name: str, settings: list[str] | tuple[str, ...] = (), epochs: int | None = None,
              batch: int | None = None, seed: int | None = None, finetune: bool = False) -> Recipe:
    """The recipe `name` with the user's changes; its `train` is the one to run (the fine-tuning settings when
    `finetune`). `settings` are `field=value` strings: `train.stages.lr_decay=0.9`, `model.n_stages=2`, or without
    the prefix where only one of the two has the field. Values are JSON (numbers, true, null, [128, 320]) or text.
    """
    recipe = get_recipe(name)
    train = recipe.finetune if finetune else recipe.train
    model_dict, train_dict = recipe.model.as_dict(), train.as_dict()
    for setting in settings:
        path, value = _parse(setting)
        target = _target(path, model_dict, train_dict)
        _assign(target, path, value)
    try:
        model = CascadeConfig.from_dict(model_dict)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"model.{exc}" if isinstance(exc, ValueError) else f"model settings: {exc}") from None
    train = TrainConfig.from_dict(train_dict)
    if epochs is not None:
        train = train.with_epochs(epochs)
    if batch is not None:
        train = train.with_batch(batch)
    if seed is not None:
        train = TrainConfig.from_dict({**train.as_dict(), "seed": seed})
    return replace(recipe, model=model, train=train)


def _parse(setting: str) -> tuple[list[str], object]:
    key, sep, text = setting.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {setting!r}: expected field=value, e.g. train.stages.lr_decay=0.9")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    return key.strip().split("."), value


def _target(path: list[str], model: dict, train: dict) -> dict:
    """The dict `path` lives in: the prefix says which, else the one of the two where its first part is."""
    if path[0] in ("model", "train") and len(path) > 1:
        found = model if path[0] == "model" else train
        del path[0]
        return found
    in_model, in_train = path[0] in model, path[0] in train
    if in_model and in_train:
        raise ConfigError(f"{'.'.join(path)}: both the model and the training have it; write model.{path[0]} or "
                          f"train.{path[0]}")
    if not (in_model or in_train):
        raise ConfigError(f"{'.'.join(path)}: no such setting; the model's are {', '.join(sorted(model))}; the "
                          f"training's are {', '.join(sorted(train))}")
    return model if in_model else train


def _assign(d: dict, path: list[str], value: object) -> None:
    name = ".".join(path)
    for i, part in enumerate(path[:-1]):
        inner = d.get(part)
        if not isinstance(inner, dict):
            raise ConfigError(f"{name}: {'.'.join(path[: i + 1])} has no settings of its own in this recipe")
        d = inner
    if path[-1] not in d:
        raise ConfigError(f"{name}: no such setting; here there are {', '.join(sorted(d))}")
    d[path[-1]] = value
