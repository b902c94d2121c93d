"""Pre-processed training images with their landmarks in resized pixels, and padded batches of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spinecascade.io.images import load_image
from spinecascade.landmarks import as_landmarks, flip_horizontal
from spinecascade.method.preprocessing import PreprocessConfig, preprocess


@dataclass(frozen=True)
class PreparedImage:
    name: str
    image: np.ndarray  # uint8 (h, w), pre-processed
    landmarks: np.ndarray  # (17, 4, 2) in pre-processed pixels

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]

    def flipped(self) -> PreparedImage:
        mirrored = np.ascontiguousarray(self.image[:, ::-1])
        return PreparedImage(self.name + " (flipped)", mirrored, flip_horizontal(self.landmarks, self.size[0]))


def prepare(name: str, image_u8: np.ndarray, landmarks: np.ndarray, config: PreprocessConfig) -> PreparedImage:
    resized = preprocess(image_u8, config)
    return PreparedImage(name, resized.image, resized.to_resized(as_landmarks(landmarks)))


def load_prepared(name: str, image_path: Path, landmarks: np.ndarray, config: PreprocessConfig) -> PreparedImage:
    return prepare(name, load_image(image_path).to_uint8(), landmarks, config)


def with_flips(images: list[PreparedImage]) -> list[PreparedImage]:
    """The paper's augmentation: every image and its mirror (left and right corners swapped)."""
    return [p for img in images for p in (img, img.flipped())]


def pad_batch(images: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (B, 1, H, W) zero-padded on the right and bottom, and the true (width, height) of each."""
    h = max(i.shape[0] for i in images)
    w = max(i.shape[1] for i in images)
    batch = np.zeros((len(images), 1, h, w), np.uint8)
    for k, img in enumerate(images):
        batch[k, 0, : img.shape[0], : img.shape[1]] = img
    sizes = torch.tensor([[i.shape[1], i.shape[0]] for i in images], dtype=torch.float32)
    return torch.from_numpy(batch), sizes
