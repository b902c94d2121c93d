"""Training warps that move the anatomy under the current estimate: shift, tilt, scale, a bend, and gamma.

The paper augments with mirrors only. Step 1 then starts every epoch from the same mean shape on the same 862
views, learns those films by heart, and the later stages only ever see the small residuals it leaves on them.
Warping an image and its landmarks, but not the stage's input points, gives each epoch new offsets, of the size a
stage meets on films it has not seen: the spine displaced sideways, tilted, or more (or less) curved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class WarpConfig:
    """Ranges of the uniform draws, in pixels of the 680-px pre-processed image unless said otherwise."""

    probability: float = 0.5  # the rest of the samples stay as they are
    shift_x: float = 20.0
    shift_y: float = 10.0
    rotation_deg: float = 5.0
    scale: float = 0.05  # relative
    bend_c: float = 15.0  # amplitude of a one-arc (C) lateral bend
    bend_s: float = 8.0  # amplitude of a two-arc (S) lateral bend
    gamma: float = 0.2  # log-uniform in [1 / (1 + g), 1 + g]

    def scaled(self, strength: float) -> WarpConfig:
        """The geometric ranges (shift, tilt, scale, bends) times `strength`; gamma and probability as they are."""
        return replace(self, shift_x=self.shift_x * strength, shift_y=self.shift_y * strength,
                       rotation_deg=self.rotation_deg * strength, scale=self.scale * strength,
                       bend_c=self.bend_c * strength, bend_s=self.bend_s * strength)


@dataclass
class Warps:
    """One warp per image; (n,) tensors. The forward map T: lateral bend, then a similarity about the centre."""

    shift: Tensor  # (n, 2)
    angle: Tensor
    scale: Tensor
    bend_c: Tensor
    bend_s: Tensor
    gamma: Tensor

    @classmethod
    def draw(cls, n: int, config: WarpConfig, generator: torch.Generator) -> Warps:
        def uniform(*shape: int) -> Tensor:
            return torch.rand(*shape, generator=generator, dtype=torch.float64) * 2 - 1

        on = (torch.rand(n, generator=generator, dtype=torch.float64) < config.probability).double()
        shift = uniform(n, 2) * torch.tensor([config.shift_x, config.shift_y], dtype=torch.float64)
        return cls(
            shift=shift * on[:, None],
            angle=uniform(n) * math.radians(config.rotation_deg) * on,
            scale=1 + uniform(n) * config.scale * on,
            bend_c=uniform(n) * config.bend_c * on,
            bend_s=uniform(n) * config.bend_s * on,
            gamma=torch.exp(uniform(n) * math.log1p(config.gamma) * on),
        )

    def __getitem__(self, index) -> Warps:
        return Warps(self.shift[index], self.angle[index], self.scale[index], self.bend_c[index],
                     self.bend_s[index], self.gamma[index])

    def _bend(self, y: Tensor, height: Tensor) -> Tensor:
        """Lateral displacement at rows y (n, ...) of images `height` (n,) high."""
        view = (-1,) + (1,) * (y.dim() - 1)
        phase = math.pi * y / height.view(view)
        return self.bend_c.view(view) * torch.sin(phase) + self.bend_s.view(view) * torch.sin(2 * phase)

    def points(self, points: Tensor, sizes: Tensor) -> Tensor:
        """T applied to (n, ..., 2) pixel points of images of sizes (n, 2) = (width, height)."""
        points, sizes = points.double(), sizes.double()
        view = (-1,) + (1,) * (points.dim() - 2)
        y = points[..., 1]
        x = points[..., 0] + self._bend(y, sizes[:, 1])
        centre = sizes / 2
        dx, dy = x - centre[:, 0].view(view), y - centre[:, 1].view(view)
        cos, sin, s = (t.view(view) for t in (torch.cos(self.angle), torch.sin(self.angle), self.scale))
        out_x = centre[:, 0].view(view) + s * (cos * dx - sin * dy) + self.shift[:, 0].view(view)
        out_y = centre[:, 1].view(view) + s * (sin * dx + cos * dy) + self.shift[:, 1].view(view)
        return torch.stack([out_x, out_y], dim=-1)

    def to(self, device: torch.device) -> Warps:
        return Warps(*(t.to(device) for t in (self.shift, self.angle, self.scale, self.bend_c, self.bend_s,
                                                self.gamma)))

    def images(self, images01: Tensor, sizes: Tensor) -> Tensor:
        """Resample (n, 1, H, W) images in [0, 1] (zero-padded beyond each image's size) by T, then gamma."""
        n, _, h, w = images01.shape
        device = images01.device
        warps, sizes = self.to(device), sizes.to(device, torch.float64)
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=device),
                                torch.arange(w, dtype=torch.float64, device=device), indexing="ij")
        centre = sizes[:, :, None, None] / 2
        # T^-1: undo the similarity, then the bend (which moves x only, by an amount that depends on y).
        dx = xs[None] - centre[:, 0] - warps.shift[:, 0, None, None]
        dy = ys[None] - centre[:, 1] - warps.shift[:, 1, None, None]
        cos, sin = torch.cos(warps.angle)[:, None, None], torch.sin(warps.angle)[:, None, None]
        s = warps.scale[:, None, None]
        src_x = centre[:, 0] + (cos * dx + sin * dy) / s
        src_y = centre[:, 1] + (-sin * dx + cos * dy) / s
        src_x = src_x - warps._bend(src_y, sizes[:, 1])
        grid = torch.stack([(2 * src_x + 1) / w - 1, (2 * src_y + 1) / h - 1], dim=-1)
        warped = F.grid_sample(images01, grid.to(images01.dtype), mode="bilinear", padding_mode="zeros",
                               align_corners=False)
        # Content moved past an image's own edge stays out of it: beyond it a batch holds padding.
        inside = (xs[None] < sizes[:, 0, None, None]) & (ys[None] < sizes[:, 1, None, None])
        gamma = warps.gamma.to(images01.dtype).view(n, 1, 1, 1)
        return warped.clamp(0, 1) ** gamma * inside[:, None].to(images01.dtype)
