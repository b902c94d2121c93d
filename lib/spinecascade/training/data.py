"""The training set as the phases use it: cleaned labels, pre-processed and mirrored films, batches on a device."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from spinecascade.io.dataset import Sample
from spinecascade.measurement.metrics import normalised_mse
from spinecascade.method.cascade import downsample, standardise
from spinecascade.method.preprocessing import PreprocessConfig
from spinecascade.method.samples import PreparedImage, load_prepared, pad_batch, with_flips
from spinecascade.training.augmentation import Warps
from spinecascade.training.label_cleaning import CleanedSamples, clean_samples


def load_training_images(samples: list[Sample], config: PreprocessConfig, clean: bool = True,
                         progress: bool = True) -> tuple[list[PreparedImage], CleanedSamples]:
    """Each kept sample pre-processed, followed by its mirror (the paper's augmentation)."""
    cleaned = clean_samples(samples) if clean else CleanedSamples(list(samples), {}, {})
    images = [load_prepared(s.name, s.image_path, s.landmarks, config)
              for s in tqdm(cleaned.kept, desc="loading images", unit="image", disable=not progress)]
    return with_flips(images), cleaned


class TrainingSet:
    """Pre-processed films with their landmarks, and their batches on one device."""

    def __init__(self, images: list[PreparedImage], device: torch.device) -> None:
        if not images:
            raise ValueError("no training images")
        self.images = images
        self.device = device
        self.sizes = torch.tensor([img.size for img in images], dtype=torch.float64)
        landmarks = np.stack([img.landmarks for img in images])
        self.corners = landmarks  # (n, 17, 4, 2)
        self.centres = landmarks.mean(axis=2)[:, None]  # (n, 1, 17, 2)

    def __len__(self) -> int:
        return len(self.images)

    def films(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The films of `idx` in [0, 1], zero-padded to one size, (B, 1, H, W), and their (width, height)."""
        u8, sizes = pad_batch([self.images[i].image for i in idx])
        return u8.to(self.device).float() / 255.0, sizes.to(self.device)

    def batch(self, idx: np.ndarray, factor: int, warps: Warps | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's input for `idx`, warped where `warps` are given, average-pooled by `factor`."""
        films, sizes = self.films(idx)
        if warps is not None:
            films = warps.images(films, sizes)
        return downsample(standardise(films), factor), sizes

    def mse(self, points: np.ndarray, targets: np.ndarray) -> float:
        """Mean normalised MSE (Eq. 13) of points against targets over the whole set."""
        return float(np.mean([normalised_mse(p, t, *img.size) for p, t, img in zip(points, targets, self.images)]))
