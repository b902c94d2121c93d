"""Step 2's start read off the film: four corner heatmaps in a window around each centre, turned to the spine.

The paper starts step 2 from the mean corner layout at each centre (here turned to the spine). That start knows
nothing of the film: it follows the spine's direction but not a vertebra's own tilt or wedge, which the Cobb angles
measure, and wherever step 1's centre is off the whole vertebra is off with it. A stage that regresses a few PCA
coefficients from pooled features moves it little. A small fully convolutional network reads a square window around
each centre, sampled in the vertebra's upright frame (turned by the spine's direction there, as the turned start
is), and gives one heatmap per corner; the soft-argmax of each places that corner. Every layer keeps positions, and
the four corners are found where the endplates are, not where the mean layout puts them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spinecascade.landmarks import N_CORNERS
from spinecascade.method.crops import rotate, spine_directions, turned_windows
from spinecascade.method.encoder import conv3x3


@dataclass(frozen=True)
class CornerHeatmapConfig:
    window: int = 96  # side of the square window around each centre, pixels of the pre-processed image
    spacing: float = 1.0  # pixels of the pre-processed image between window samples
    channels: tuple[int, ...] = (16, 32, 64, 96)  # after the stem and each further halving
    decoder: int = 32

    @classmethod
    def from_dict(cls, d: dict) -> CornerHeatmapConfig:
        return cls(d["window"], d["spacing"], tuple(d["channels"]), d["decoder"])

    @property
    def samples(self) -> int:
        return round(self.window / self.spacing)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv3x3(channels, channels), nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.body(x))


class CornerHeatmaps(nn.Module):
    """Moves step 2's start to the corners found around each centre; pixels of the pre-processed image."""

    def __init__(self, config: CornerHeatmapConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.stem = conv3x3(1, c[0], 2)
        self.down = nn.ModuleList(nn.Sequential(conv3x3(a, b, 2), ResidualBlock(b)) for a, b in zip(c, c[1:]))
        self.lateral = nn.ModuleList(nn.Conv2d(n, config.decoder, 1) for n in c)
        self.smooth = nn.ModuleList(conv3x3(config.decoder, config.decoder) for _ in c[1:])
        self.heads = nn.Conv2d(config.decoder, N_CORNERS, 3, 1, 1)

    def forward(self, images: Tensor, centres: Tensor) -> Tensor:
        """images: (B, 1, H, W) normalised, full resolution; centres (B, V, 2). Returns corners (B, V, 4, 2)."""
        return self.locate(images, centres, spine_directions(centres))

    def locate(self, images: Tensor, centres: Tensor, angles: Tensor) -> Tensor:
        """The corners of windows at `centres` turned by `angles` (B, V): training picks some vertebrae and turns
        them by directions of its own."""
        windows = turned_windows(images, centres, angles, self.config.window, self.config.spacing)
        dtype = next(self.parameters()).dtype
        logits = self.heatmaps(windows.to(dtype).contiguous(memory_format=torch.channels_last)).float()
        upright = soft_argmax(logits) * (self.config.window / logits.shape[-1]) - self.config.window / 2
        b, v = centres.shape[:2]
        return centres[:, :, None, :] + rotate(upright.view(b, v, N_CORNERS, 2), -angles)

    def heatmaps(self, windows: Tensor) -> Tensor:
        """Logits (N, 4, h, w) at half the windows' resolution: the top-down sum of every scale, as an FPN does."""
        features = [self.stem(windows)]
        for block in self.down:
            features.append(block(features[-1]))
        top = self.lateral[-1](features[-1])
        for lateral, smooth, f in zip(reversed(self.lateral[:-1]), reversed(self.smooth), reversed(features[:-1])):
            top = smooth(lateral(f) + F.interpolate(top, size=f.shape[-2:], mode="bilinear", align_corners=False))
        return self.heads(top)


def soft_argmax(logits: Tensor) -> Tensor:
    """Expected (x, y) of each map's softmax, in cells from the maps' top-left edge; (N, K, 2)."""
    n, k, h, w = logits.shape
    weights = logits.flatten(2).softmax(-1).view(n, k, h, w)
    xs = torch.arange(w, dtype=weights.dtype, device=weights.device) + 0.5
    ys = torch.arange(h, dtype=weights.dtype, device=weights.device) + 0.5
    return torch.stack([(weights.sum(2) * xs).sum(-1), (weights.sum(3) * ys).sum(-1)], dim=-1)
