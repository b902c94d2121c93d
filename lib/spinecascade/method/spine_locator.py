"""The spine locator: where T1 begins, where L5 ends and where the spine runs, on a thumbnail of the whole film.

The cascade reads the frame: it was trained on tight crops, where T1's top lies 3.4 % of the T1-L5 span below the
film's top edge and L5's bottom 7.8 % above its bottom edge, so on any film it stretches its 17 levels between
those margins. A full-length film (skull to femurs) then gets its levels spread over neck and pelvis, and a crop
framed lower than the training films gets L5 on L4. The locator finds the levels by anatomy instead, and the
cascade runs on a crop framed like its training films around what the locator found (`framing_window`).

The network sees the film resized to a fixed thumbnail (aspect dropped) and is translation-equivariant along the
rows: convolutions keep a row every four thumbnail pixels, an attention over the columns pools each row (the
spine's column, not the arms or the ruler), dilated 1-D convolutions along the rows read the context of each row
(the first ribs and clavicles about T1, the sacrum and iliac crests about L5), and a softmax over the rows gives a
distribution for T1's top and one for L5's bottom, trained towards a Gaussian about the true row (a 1-D heatmap
per coordinate, as SimCC does for keypoints). Its mode is the row found; its spread about the mode, in levels, is
how sure the locator is. A softmax over the columns, of features pooled over the rows the same way, gives the
spine's column. Trained with fields of view cut and padded at random (training/spine_locator.py), it cannot read the
answer from the edges.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from spinecascade.landmarks import N_VERTEBRAE, SpineExtent

# Framing of the AASCE training films: median margins above T1's top and below L5's bottom, as fractions of the
# T1-L5 span, and the median width / height of the 481 films.
TRAINING_FRAMING = (0.034, 0.078, 0.372)


@dataclass(frozen=True)
class LocatorConfig:
    thumbnail: tuple[int, int] = (128, 384)  # (width, height) every film is resized to
    channels: tuple[int, ...] = (16, 32, 48, 64)  # the 2-D convolutions; the first two halve rows and columns
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16)  # the 1-D convolutions along the rows
    # The crop the cascade reads, around the found spine: margins above T1 and below L5 as fractions of the span,
    # and its width / height.
    top_margin: float = TRAINING_FRAMING[0]
    bottom_margin: float = TRAINING_FRAMING[1]
    aspect: float = TRAINING_FRAMING[2]
    # The cascade reads the crop only where it is shorter than this share of the film: a film framed about like
    # the training films is read whole, as they were (docs/experiments.md, 2026-12-05 afternoon).
    crop_below: float = 0.8
    # The crop ends below L5 only where the locator is sure of L5 (its spread, in levels, at most this) or the film
    # shows much above T1 (T1's top below this share of the film: a full-length film); else at the film's bottom.
    # On tight crops L5's bottom is what the locator knows least (it learns it from the full-length films only).
    l5_spread_limit: float = 1.0
    full_length_t1: float = 0.1
    # No crop at all where the locator cannot place T1 within this spread (levels): its crop would rest on nothing.
    t1_spread_limit: float = 2.0

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LocatorConfig:
        return cls(tuple(d["thumbnail"]), tuple(d["channels"]), tuple(d["dilations"]), d["top_margin"],
                   d["bottom_margin"], d["aspect"], d["crop_below"], d["l5_spread_limit"], d["full_length_t1"],
                   d["t1_spread_limit"])


def locator_input(film_u8: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The thumbnail the locator reads: the film resized to `size` (width, height), equalised; float32 in [0, 1]."""
    small = cv2.resize(film_u8, size, interpolation=cv2.INTER_AREA)
    return cv2.createCLAHE(2.0, (4, 4)).apply(small).astype(np.float32) / 255.0


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _AlongAxis(nn.Module):
    """Features (B, C, H, W) pooled over one axis by a learned attention, then dilated 1-D convolutions along the
    other, ending in `outputs` logits per position."""

    def __init__(self, channels: int, dilations: tuple[int, ...], outputs: int, pool_dim: int) -> None:
        super().__init__()
        self.pool_dim = pool_dim
        self.attention = nn.Conv2d(channels, 1, 1)
        self.along = nn.Sequential(*(nn.Sequential(nn.Conv1d(channels, channels, 3, 1, d, d),
                                                   nn.BatchNorm1d(channels), nn.ReLU(inplace=True))
                                     for d in dilations))
        self.logits = nn.Conv1d(channels, outputs, 1)

    def forward(self, features: Tensor) -> Tensor:
        weights = torch.softmax(self.attention(features), dim=self.pool_dim)
        pooled = (features * weights).sum(dim=self.pool_dim)
        return self.logits(self.along(pooled))


class SpineLocator(nn.Module):
    """Thumbnails (B, 1, H, W), standardised, to the distributions of T1's top and L5's bottom over the rows and of
    the spine over the columns."""

    def __init__(self, config: LocatorConfig) -> None:
        super().__init__()
        self.config = config
        chans = (1, *config.channels)
        self.features = nn.Sequential(*(_block(chans[i], chans[i + 1], 2 if i < 2 else 1)
                                        for i in range(len(config.channels))))
        self.rows = _AlongAxis(chans[-1], config.dilations, 2, pool_dim=3)
        self.columns = _AlongAxis(chans[-1], config.dilations[:3], 1, pool_dim=2)

    def forward(self, thumbnails: Tensor) -> tuple[Tensor, Tensor]:
        """Probabilities over the feature rows (B, 2, H/4) for T1's top and L5's bottom, and over the feature
        columns (B, W/4) for the spine."""
        features = self.features(thumbnails)
        rows = torch.softmax(self.rows(features.float()), dim=2)
        columns = torch.softmax(self.columns(features.float())[:, 0], dim=1)
        return rows, columns

    @staticmethod
    def decode(rows: Tensor, columns: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Rows (B, 2) and column (B,) as fractions of the thumbnail: the mode of each distribution, refined by
        the mean within two cells of it; and the rows' standard deviations about it (B, 2), as fractions of the
        thumbnail's height (large where the distribution has more than one peak)."""
        row_mode, spread = _mode(rows)
        column_mode, _ = _mode(columns[:, None])
        return row_mode, column_mode[:, 0], spread

    @torch.inference_mode()
    def locate(self, film_u8: np.ndarray) -> SpineExtent:
        """The spine's extent in an 8-bit film (H, W), in its pixels."""
        height, width = film_u8.shape
        thumb = torch.from_numpy(locator_input(film_u8, self.config.thumbnail))[None, None]
        parameter = next(self.parameters())
        rows, columns = self((thumb.to(parameter.device, parameter.dtype) - 0.5) / 0.25)
        mean, x, spread = (t[0].double().cpu().numpy() for t in self.decode(rows.double(), columns.double()))
        t1, l5 = mean * height
        level = max(abs(l5 - t1) / N_VERTEBRAE, 1.0)
        return SpineExtent(float(t1), float(l5), float(x * width), float(spread[0] * height / level),
                           float(spread[1] * height / level))


def _mode(probabilities: Tensor, reach: int = 2) -> tuple[Tensor, Tensor]:
    """(B, K, N) distributions over N cells: each one's mode refined by the mean within `reach` cells, and its
    standard deviation about that, as fractions of N."""
    n = probabilities.shape[-1]
    cells = torch.arange(n, dtype=probabilities.dtype, device=probabilities.device)
    peak = probabilities.argmax(dim=-1, keepdim=True)
    near = ((cells - peak).abs() <= reach).to(probabilities.dtype) * probabilities
    mode = (near * cells).sum(dim=-1) / near.sum(dim=-1).clamp_min(1e-12)
    spread = (probabilities * (cells - mode[..., None]) ** 2).sum(dim=-1).sqrt()
    return (mode + 0.5) / n, spread / n


def framing_window(extent: SpineExtent, width: int, height: int, config: LocatorConfig) -> tuple[int, int, int, int]:
    """The crop (x0, y0, x1, y1) framed like the training films around `extent`, inside the film, ending at the
    film's bottom where L5 is uncertain on a film that starts near T1; the whole film where that crop would not be
    much shorter than the film (`config.crop_below`), where T1 is too uncertain, or where the crop is degenerate."""
    span = max(extent.l5_bottom - extent.t1_top, 1.0)
    top = extent.t1_top - config.top_margin * span
    bottom = extent.l5_bottom + config.bottom_margin * span
    if extent.l5_spread > config.l5_spread_limit and extent.t1_top < config.full_length_t1 * height:
        bottom = height
    half = config.aspect * (bottom - top) / 2
    x0, y0 = max(0, int(np.floor(extent.x - half))), max(0, int(np.floor(top)))
    x1, y1 = min(width, int(np.ceil(extent.x + half))), min(height, int(np.ceil(bottom)))
    short = bottom - top < config.crop_below * height
    if x1 - x0 < 8 or y1 - y0 < 8 or not short or extent.t1_spread > config.t1_spread_limit:
        return 0, 0, width, height
    return x0, y0, x1, y1
