"""Image pre-processing shared by training and prediction: proportional resize, then CLAHE.

Resizing first keeps CLAHE cheap (it runs on the 680-px image, not the 3000-px film). Coordinates map between
the original and the resized image with the pixel-centre convention x' = (x + 0.5) * s - 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class PreprocessConfig:
    height: int = 680
    clahe_clip: float = 2.0
    clahe_tiles: int = 8


@dataclass(frozen=True)
class Resized:
    """A pre-processed image and how its pixel grid relates to the original one."""

    image: np.ndarray  # uint8 (height, width)
    scale_x: float
    scale_y: float
    original_size: tuple[int, int]  # (width, height)

    def to_resized(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, float) + 0.5) * [self.scale_x, self.scale_y] - 0.5

    def to_original(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, float) + 0.5) / [self.scale_x, self.scale_y] - 0.5


def preprocess(image_u8: np.ndarray, config: PreprocessConfig) -> Resized:
    """Resize an 8-bit radiograph to `config.height` rows, keeping its aspect, and equalise it with CLAHE."""
    height, width = image_u8.shape
    new_w = max(1, round(width * config.height / height))
    interpolation = cv2.INTER_AREA if height > config.height else cv2.INTER_LINEAR
    small = cv2.resize(image_u8, (new_w, config.height), interpolation=interpolation)
    clahe = cv2.createCLAHE(clipLimit=config.clahe_clip, tileGridSize=(config.clahe_tiles, config.clahe_tiles))
    return Resized(clahe.apply(small), new_w / width, config.height / height, (width, height))
