"""From dataset samples to what the trainer needs: cleaned labels, pre-processed and mirrored images."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from spinecascade.io.dataset import Sample
from spinecascade.method.cascade import CascadeConfig, StepConfig
from spinecascade.method.corner_heatmaps import CornerHeatmapConfig
from spinecascade.method.label_cleaning import CleanedSamples, clean_samples
from spinecascade.method.level_finder import LevelConfig
from spinecascade.method.preprocessing import PreprocessConfig
from spinecascade.method.samples import PreparedImage, load_prepared, with_flips


def cascade_config(use_pca: bool = True) -> CascadeConfig:
    """The paper's configuration, with the choices measured in benchmarks/design_choices.py."""
    default = CascadeConfig()
    if use_pca:
        return default
    return replace(default, centre=replace(default.centre, n_components=None),
                   corner=replace(default.corner, n_components=None))


def film_start_if_warped(config: CascadeConfig, augment: bool) -> CascadeConfig:
    """The film start only with the training warps: without them it learns its films by heart, and step 1,
    trained on its near-perfect outputs there, has nothing to learn for unseen films. Without it step 1 needs its
    stages: a config that kept none (a model whose prediction ran none) gets the paper's number back."""
    if augment:
        return config
    return replace(config, film_start=None, n_stages=config.n_stages or CascadeConfig().n_stages)


def load_training_images(samples: list[Sample], config: PreprocessConfig, clean: bool = True,
                         progress: bool = True) -> tuple[list[PreparedImage], CleanedSamples]:
    cleaned = clean_samples(samples) if clean else CleanedSamples(list(samples), {}, {})
    images = [load_prepared(s.name, s.image_path, s.landmarks, config)
              for s in tqdm(cleaned.kept, desc="loading images", unit="image", disable=not progress)]
    return with_flips(images), cleaned


def small_config() -> CascadeConfig:
    """A cascade small enough to train on synthetic spines in seconds on a CPU (tests, demos)."""
    return CascadeConfig(
        PreprocessConfig(height=240),
        StepConfig((96, 48), (48, 24), 8, 2),
        StepConfig((24, 24), (24, 24), 6, 1),
        n_stages=2,
        film_start=(48, 120),
    )


def small_level_config() -> LevelConfig:
    """A level finder for small_config's 240-px images."""
    return LevelConfig(width=48, step=2, channels=32, dilations=(1, 2, 4, 8))


def level_config(config: CascadeConfig) -> LevelConfig:
    """The level finder for a cascade: the small one for small_config's image height, else the full one."""
    return small_level_config() if config.preprocess.height == small_config().preprocess.height else LevelConfig()


def corner_heatmap_config(config: CascadeConfig) -> CornerHeatmapConfig:
    """Corner heatmaps for a cascade: a window of about three vertebra heights, scaled to the image height."""
    if config.preprocess.height == small_config().preprocess.height:
        return CornerHeatmapConfig(window=32, spacing=1.0, channels=(8, 16, 32, 32), decoder=16)
    return CornerHeatmapConfig()


def train_synthetic_model(out: Path, n_images: int = 40, epochs: int = 4, seed: int = 0,
                          progress: bool = False) -> Path:
    """Train `small_config()` on synthetic spines and write it to `out`: a real model file for tests and demos."""
    from spinecascade.method.model_file import save_model
    from spinecascade.method.samples import prepare
    from spinecascade.method.training import TrainConfig, train_cascade
    from spinecascade.synthetic import make_spine

    config = small_config()
    spines = [make_spine(seed * 100_000 + i, 96, 240) for i in range(n_images)]
    images = with_flips([prepare(f"synthetic-{i}", s.image, s.landmarks, config.preprocess)
                         for i, s in enumerate(spines)])
    # 40 films give the film start 5 batches an epoch: it needs twice the default epochs to settle.
    train = TrainConfig(epochs=epochs, batch_images=2, learning_rate=2e-3, seed=seed, augment=True,
                        start_epochs=10 * epochs)
    checkpoint = out.with_name(out.name + ".checkpoint")
    cascade, history = train_cascade(images, checkpoint, config, train, progress=progress)
    save_model(out, cascade, {"name": "synthetic", "data": {"synthetic_images": n_images, "seed": seed},
                              "history": history})
    checkpoint.unlink(missing_ok=True)
    return out
