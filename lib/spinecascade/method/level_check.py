"""Step 1's level check: which vertebra is which, read from the regions of the spine, not from a prior.

The film start places the spine from the film's layout and the level finder follows its prior, so a spine the
film start places a whole level off stays a level off (README). A vertebra's own look does not tell T5 from T6,
but the region it lies in shows: ribs on the thoracic vertebrae, none on the lumbar ones, the neck above T1 and
the sacrum below L5. The check labels wide windows along the current chain, four levels beyond each end, with
those four regions, and moves the chain by the whole number of levels whose region boundaries fit the labels
best: three boundaries (T1, L1, S1) vote, so no single one decides.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spinecascade.landmarks import N_VERTEBRAE, VERTEBRAE
from spinecascade.method.crops import rotate
from spinecascade.method.encoder import conv3x3

# Regions by vertebra index (0 = T1): above T1 the neck, then the thoracic and lumbar spine, below L5 the sacrum.
N_REGIONS = 4
FIRST_LUMBAR = VERTEBRAE.index("L1")


@dataclass(frozen=True)
class LevelCheckConfig:
    across: float = 7.0  # window width in levels: the ribs beside a thoracic vertebra, the pelvis beside L5
    along: float = 3.0  # window height in levels: a vertebra and its neighbours
    patch: tuple[int, int] = (112, 48)  # (width, height) the window is sampled to
    beyond: int = 4  # chain positions labelled past each end
    max_shift: int = 2  # whole-level moves considered, each way
    channels: tuple[int, ...] = (24, 32, 48, 48, 64, 96)
    embedding: int = 128

    @classmethod
    def from_dict(cls, d: dict) -> LevelCheckConfig:
        return cls(d["across"], d["along"], tuple(d["patch"]), d["beyond"], d["max_shift"], tuple(d["channels"]),
                   d["embedding"])

    @property
    def positions(self) -> range:
        return range(-self.beyond, N_VERTEBRAE + self.beyond)


def region_of(index: Tensor) -> Tensor:
    """Region (0 neck, 1 thoracic, 2 lumbar, 3 sacrum) of the nearest whole vertebra index (0 = T1)."""
    i = torch.round(index)
    return (i >= 0).long() + (i >= FIRST_LUMBAR).long() + (i >= N_VERTEBRAE).long()


def along_chain(values: Tensor, positions: Tensor) -> Tensor:
    """Values (B, K, D) of a chain at continuous positions (B, P) along it, linear between neighbours and
    extrapolated from the end pairs; (B, P, D)."""
    lo = positions.floor().clamp(0, values.shape[1] - 2).long()
    t = (positions - lo)[..., None].to(values.dtype)
    index = lo[..., None].expand(-1, -1, values.shape[-1])
    a, b = torch.gather(values, 1, index), torch.gather(values, 1, index + 1)
    return a + t * (b - a)


def chain_windows(images: Tensor, centres: Tensor, positions: Tensor, config: LevelCheckConfig) -> Tensor:
    """Windows (B * P, C, ph, pw) at chain positions (B, P) of centres (B, 17, 2), each turned to the chain and
    sized by its local level spacing, so that every film's vertebrae fill them alike; one grid_sample call."""
    b, p = positions.shape
    points = along_chain(centres, positions)
    step = along_chain(centres, positions + 0.5) - along_chain(centres, positions - 0.5)
    level = step.norm(dim=-1).clamp_min(1.0)
    angle = torch.atan2(step[..., 0], step[..., 1])
    pw, ph = config.patch
    xs = ((torch.arange(pw, dtype=images.dtype, device=images.device) + 0.5) / pw - 0.5) * config.across
    ys = ((torch.arange(ph, dtype=images.dtype, device=images.device) + 0.5) / ph - 0.5) * config.along
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    upright = torch.stack([gx, gy], dim=-1).view(1, 1, ph * pw, 2) * level[..., None, None].to(images.dtype)
    grid = points[:, :, None, :].to(images.dtype) + rotate(upright, -angle.to(images.dtype))
    h, w = images.shape[-2:]
    grid = torch.stack([(2 * grid[..., 0] + 1) / w - 1, (2 * grid[..., 1] + 1) / h - 1], dim=-1)
    out = F.grid_sample(images, grid.view(b, p * ph, pw, 2), mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.view(b, -1, p, ph, pw).transpose(1, 2).reshape(b * p, -1, ph, pw)


class LevelCheck(nn.Module):
    """Moves 17 centres (B, 17, 2), pixels of the pre-processed image, by the whole number of levels that the
    regions seen along them call for."""

    def __init__(self, config: LevelCheckConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        strides = (2, 1, 2, 1, 2, 2)
        self.features = nn.Sequential(*(conv3x3(i, o, s) for i, o, s in zip((1, *c[:-1]), c, strides)))
        pw, ph = config.patch
        for s in strides:
            pw, ph = (pw - 1) // s + 1, (ph - 1) // s + 1
        # Flattened, not pooled: where the ribs or the pelvis lie in the window counts.
        self.embed = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(c[-1] * pw * ph, config.embedding),
                                   nn.ReLU(inplace=True))
        e = config.embedding
        self.along = nn.Sequential(nn.Conv1d(e, e, 3, padding=1), nn.ReLU(inplace=True),
                                   nn.Conv1d(e, e, 3, padding=2, dilation=2), nn.ReLU(inplace=True),
                                   nn.Conv1d(e, N_REGIONS, 1))

    def positions(self, n: int, device: torch.device) -> Tensor:
        return torch.tensor(self.config.positions, dtype=torch.float32, device=device)[None].expand(n, -1)

    def region_logits(self, images: Tensor, centres: Tensor) -> Tensor:
        """Region logits (B, P, 4) at the config's chain positions; images (B, 1, H, W) normalised."""
        positions = self.positions(len(centres), centres.device)
        dtype = next(self.parameters()).dtype
        windows = chain_windows(images, centres, positions, self.config).to(dtype)
        f = self.embed(self.features(windows.contiguous(memory_format=torch.channels_last)))
        return self.along(f.view(len(centres), positions.shape[1], -1).transpose(1, 2)).transpose(1, 2).float()

    def shift_scores(self, logits: Tensor) -> Tensor:
        """Log-likelihood (B, S) of each whole-level move -max_shift..max_shift: under move s, chain position p
        is vertebra p + s."""
        m = self.config.max_shift
        shifts = torch.arange(-m, m + 1, device=logits.device)
        positions = self.positions(1, logits.device)
        expected = region_of(positions + shifts[:, None])  # (S, P)
        log_p = logits.log_softmax(dim=-1)[:, None].expand(-1, len(shifts), -1, -1)
        return log_p.gather(-1, expected[None, ..., None].expand(len(logits), -1, -1, -1))[..., 0].sum(-1)

    def moved(self, centres: Tensor, logits: Tensor) -> Tensor:
        """The centres moved by the best-scoring whole-level move under region logits (B, P, 4)."""
        shift = self.shift_scores(logits).argmax(dim=-1) - self.config.max_shift
        index = torch.arange(N_VERTEBRAE, dtype=centres.dtype, device=centres.device)[None] - shift[:, None]
        return along_chain(centres, index)

    def forward(self, images: Tensor, centres: Tensor) -> Tensor:
        return self.moved(centres, self.region_logits(images, centres))
