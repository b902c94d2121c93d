"""Training warps that move the anatomy under the current estimate: shift, tilt, scale, a bend, gamma and framing.

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
    # The film's top and bottom edges each moved by up to this, independently: films are cut tighter or looser
    # around the spine, and a network that reads the spine's place from the frame misses the levels on films
    # framed unlike its training films.
    frame_y: float = 0.0

    def scaled(self, strength: float) -> WarpConfig:
        """The geometric ranges (shift, tilt, scale, bends, framing) times `strength`; gamma and probability kept."""
        return replace(self, shift_x=self.shift_x * strength, shift_y=self.shift_y * strength,
                       rotation_deg=self.rotation_deg * strength, scale=self.scale * strength,
                       bend_c=self.bend_c * strength, bend_s=self.bend_s * strength,
                       frame_y=self.frame_y * strength)


@dataclass
class Warps:
    """One warp per image; (n,) tensors. The forward map T: lateral bend, a similarity about the centre, then
    the rows stretched so that the film's top and bottom rows land `frame_top` and `frame_bottom` pixels lower."""

    shift: Tensor  # (n, 2)
    angle: Tensor
    scale: Tensor
    bend_c: Tensor
    bend_s: Tensor
    gamma: Tensor
    frame_top: Tensor
    frame_bottom: Tensor

    @classmethod
    def draw(cls, n: int, config: WarpConfig, generator: torch.Generator) -> Warps:
        def uniform(*shape: int) -> Tensor:
            return torch.rand(*shape, generator=generator, dtype=torch.float64) * 2 - 1

        on = (torch.rand(n, generator=generator, dtype=torch.float64) < config.probability).double()
        shift = uniform(n, 2) * torch.tensor([config.shift_x, config.shift_y], dtype=torch.float64)
        draws = dict(
            shift=shift * on[:, None],
            angle=uniform(n) * math.radians(config.rotation_deg) * on,
            scale=1 + uniform(n) * config.scale * on,
            bend_c=uniform(n) * config.bend_c * on,
            bend_s=uniform(n) * config.bend_s * on,
            gamma=torch.exp(uniform(n) * math.log1p(config.gamma) * on),
        )
        # Drawn last and only when asked for, so that the other draws of a seed stay what they were.
        frame = (uniform(n, 2) * config.frame_y * on[:, None] if config.frame_y
                 else torch.zeros(n, 2, dtype=torch.float64))
        return cls(**draws, frame_top=frame[:, 0], frame_bottom=frame[:, 1])

    def __getitem__(self, index) -> Warps:
        return Warps(self.shift[index], self.angle[index], self.scale[index], self.bend_c[index],
                     self.bend_s[index], self.gamma[index], self.frame_top[index], self.frame_bottom[index])

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
        top, bottom, height = self.frame_top.view(view), self.frame_bottom.view(view), sizes[:, 1].view(view)
        return torch.stack([out_x, top + out_y * (height + bottom - top) / height], dim=-1)

    def to(self, device: torch.device) -> Warps:
        return Warps(*(t.to(device) for t in (self.shift, self.angle, self.scale, self.bend_c, self.bend_s,
                                                self.gamma, self.frame_top, self.frame_bottom)))

    def images(self, images01: Tensor, sizes: Tensor) -> Tensor:
        """Resample (n, 1, H, W) images in [0, 1] (zero-padded beyond each image's size) by T, then gamma."""
        n, _, h, w = images01.shape
        device = images01.device
        warps, sizes = self.to(device), sizes.to(device, torch.float64)
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=device),
                                torch.arange(w, dtype=torch.float64, device=device), indexing="ij")
        centre = sizes[:, :, None, None] / 2
        # T^-1: undo the framing, the similarity, then the bend (which moves x only, by an amount that depends on y).
        top, bottom, height = (t[:, None, None] for t in (warps.frame_top, warps.frame_bottom, sizes[:, 1]))
        unframed = (ys[None] - top) * height / (height + bottom - top)
        dx = xs[None] - centre[:, 0] - warps.shift[:, 0, None, None]
        dy = unframed - centre[:, 1] - warps.shift[:, 1, None, None]
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


@dataclass(frozen=True)
class LevelPriorConfig:
    """How the level finder's training priors miss the truth: as the film start misses unseen films
    (docs/experiments.md: a whole-spine vertical shift of 10 px on average, and little sideways). Pixels of the
    680-px image."""

    shift_y: float = 16.0  # standard deviations of normal draws from here on
    scale_y: float = 0.04  # relative, about the spine's middle
    each_y: float = 4.0
    shift_x: float = 4.0
    each_x: float = 2.0
    bend_x: float = 4.0  # amplitude of a one-arc lateral bend
    row_scale: float = 0.15  # uniform range of the strip's vertical stretch (relative) ...
    row_shift: float = 60.0  # ... and shift: different vertebra sizes and film framings
    gamma: float = 0.4  # log-uniform in [1 / (1 + g), 1 + g]
    contrast: float = 0.2  # uniform in [1 - c, 1 + c]

    def for_height(self, height: int) -> LevelPriorConfig:
        """The pixel ranges for images `height` pixels high instead of 680."""
        f = height / 680
        return replace(self, shift_y=self.shift_y * f, each_y=self.each_y * f,
                       shift_x=self.shift_x * f, each_x=self.each_x * f, bend_x=self.bend_x * f,
                       row_shift=self.row_shift * f)


@dataclass
class LevelDraws:
    """One draw per training view for the level finder; tensors with n rows."""

    prior_noise: Tensor  # (n, 4): shift_y, scale_y, shift_x, bend_x
    each: Tensor  # (n, 17, 2): per-vertebra x and y
    row_scale: Tensor
    row_shift: Tensor
    gamma: Tensor
    contrast: Tensor

    @classmethod
    def draw(cls, n: int, config: LevelPriorConfig, generator: torch.Generator, n_points: int) -> LevelDraws:
        def uniform(*shape: int) -> Tensor:
            return torch.rand(*shape, generator=generator, dtype=torch.float64) * 2 - 1

        scales = torch.tensor([config.shift_y, config.scale_y, config.shift_x, config.bend_x], dtype=torch.float64)
        return cls(
            prior_noise=torch.randn(n, 4, generator=generator, dtype=torch.float64) * scales,
            each=torch.randn(n, n_points, 2, generator=generator, dtype=torch.float64)
            * torch.tensor([config.each_x, config.each_y], dtype=torch.float64),
            row_scale=1 + uniform(n) * config.row_scale,
            row_shift=uniform(n) * config.row_shift,
            gamma=torch.exp(uniform(n) * math.log1p(config.gamma)),
            contrast=1 + uniform(n) * config.contrast,
        )

    def __getitem__(self, index) -> LevelDraws:
        return LevelDraws(self.prior_noise[index], self.each[index], self.row_scale[index], self.row_shift[index],
                          self.gamma[index], self.contrast[index])

    def priors(self, centres: Tensor) -> Tensor:
        """The true centres (n, 17, 2) moved: whole-spine shift and stretch, a sideways bend, per-vertebra noise."""
        centres = centres.double()
        shift_y, scale_y, shift_x, bend_x = self.prior_noise.unbind(-1)
        middle = centres[..., 1].mean(dim=1, keepdim=True)
        y = middle + (centres[..., 1] - middle) * (1 + scale_y[:, None]) + shift_y[:, None]
        arc = torch.sin(torch.linspace(0, math.pi, centres.shape[1], dtype=torch.float64))
        x = centres[..., 0] + shift_x[:, None] + bend_x[:, None] * arc
        return torch.stack([x, y], dim=-1) + self.each

    def images(self, images01: Tensor) -> Tensor:
        """Gamma and contrast about mid-grey, for (n, 1, H, W) images in [0, 1]."""
        view = (-1, 1, 1, 1)
        gamma = self.gamma.to(images01).view(view)
        contrast = self.contrast.to(images01).view(view)
        return ((images01.clamp(0, 1) ** gamma - 0.5) * contrast + 0.5).clamp(0, 1)


@dataclass(frozen=True)
class CornerDrawConfig:
    """How the corner heatmaps' training windows miss the true centres: by a few pixels each way, as step 1 misses
    unseen films on most vertebrae (docs/experiments.md). Pixels of the 680-px image."""

    centre: float = 4.0  # standard deviation of normal draws, per vertebra and axis
    direction: float = 4.0  # the same for the centres the windows' turn is measured from (drawn apart)
    vertebrae: int = 8  # windows per view of the 17, drawn anew every batch: half the cost of all of them
    gamma: float = 0.2  # log-uniform in [1 / (1 + g), 1 + g]

    def for_height(self, height: int) -> CornerDrawConfig:
        f = height / 680
        return replace(self, centre=self.centre * f, direction=self.direction * f)


@dataclass
class CornerDraws:
    """One draw per training view for the corner heatmaps; tensors with n rows."""

    centre_noise: Tensor  # (n, V, 2)
    direction_noise: Tensor  # (n, V, 2)
    vertebrae: Tensor  # (n, k) indices of the windows used
    gamma: Tensor

    @classmethod
    def draw(cls, n: int, config: CornerDrawConfig, generator: torch.Generator, n_vertebrae: int) -> CornerDraws:
        k = min(config.vertebrae, n_vertebrae)
        return cls(
            centre_noise=torch.randn(n, n_vertebrae, 2, generator=generator, dtype=torch.float64) * config.centre,
            direction_noise=torch.randn(n, n_vertebrae, 2, generator=generator, dtype=torch.float64)
            * config.direction,
            vertebrae=torch.stack([torch.randperm(n_vertebrae, generator=generator)[:k] for _ in range(n)])
            if n else torch.zeros(0, k, dtype=torch.long),
            gamma=torch.exp((torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1)
                            * math.log1p(config.gamma)),
        )

    def __getitem__(self, index) -> CornerDraws:
        return CornerDraws(self.centre_noise[index], self.direction_noise[index], self.vertebrae[index],
                           self.gamma[index])

    def images(self, images01: Tensor) -> Tensor:
        return images01.clamp(0, 1) ** self.gamma.to(images01).view(-1, 1, 1, 1)
