"""Step 1's level finder: where each vertebra lies along the spine, read off a strip that follows it.

The film start and the crop stages regress positions from features that have lost them (global pooling, or one
dense layer over a whole film). On unseen films neither places the levels vertically better than the mean shape
does, and no crop stage undoes a vertical shift of the whole spine (docs/experiments.md, method section). A strip
cut along the current spine, the film's whole height, keeps every row where it is: its convolutions see the
endplates and discs, a stack of dilated 1-D convolutions along it sees far enough to tell the levels apart, and
each vertebra's row is a soft-argmax of its own logits under a Gaussian prior around its current row. A second
output per row moves the vertebra sideways. Every layer is translation-equivariant along the strip, so a level
found on one film is found on another wherever the spine lies. A prediction first takes the 17 rows as one chain
(chain_rows), so that no vertebra is skipped or counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spinecascade.landmarks import N_VERTEBRAE
from spinecascade.method.crops import centreline, spine_strips
from spinecascade.method.encoder import conv3x3


@dataclass(frozen=True)
class LevelConfig:
    width: int = 96  # pixels of the pre-processed image across the strip
    step: int = 2  # pixels between strip samples, along and across
    channels: int = 96
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32)  # 1-D layers along the strip; their reach is ~500 px
    # Predictions first decode the 17 as one chain (chain_rows), each gap within about this log-ratio of the
    # prior's; None: each vertebra alone under its prior.
    chain_sigma: float | None = 0.07

    @classmethod
    def from_dict(cls, d: dict) -> LevelConfig:
        return cls(d["width"], d["step"], d["channels"], tuple(d["dilations"]), d["chain_sigma"])


class DilatedBlock(nn.Module):
    """Two dilated 1-D convolutions along the strip with a residual connection."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(channels, channels, 3, 1, dilation, dilation, bias=False), nn.BatchNorm1d(channels),
            nn.ReLU(inplace=True),
            nn.Conv1d(channels, channels, 3, 1, dilation, dilation, bias=False), nn.BatchNorm1d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.body(x))


class LevelFinder(nn.Module):
    """Moves 17 centres (B, 17, 2), pixels of the pre-processed image, to the levels found on their strip."""

    def __init__(self, config: LevelConfig) -> None:
        super().__init__()
        self.config = config
        # Halve the rows once (4-px rows), the columns three times: across the strip only the layout counts.
        self.rows_stride = 2
        self.features = nn.Sequential(
            conv3x3(1, 16), conv3x3(16, 32, 2), conv3x3(32, 32), conv3x3(32, 48, (1, 2)), conv3x3(48, 64, (1, 2)),
        )
        columns = config.width // config.step
        for _ in range(3):
            columns = (columns + 1) // 2
        self.squeeze = nn.Sequential(nn.Conv1d(64 * columns, config.channels, 1, bias=False),
                                     nn.BatchNorm1d(config.channels), nn.ReLU(inplace=True))
        self.along = nn.Sequential(*(DilatedBlock(config.channels, d) for d in config.dilations))
        self.level_logits = nn.Conv1d(config.channels, N_VERTEBRAE, 1)
        self.sideways = nn.Conv1d(config.channels, 1, 1)  # in strip samples
        nn.init.zeros_(self.sideways.weight)
        nn.init.zeros_(self.sideways.bias)
        # Width of the prior around each current row, in levels (the current spine's length / 16).
        self.log_prior_width = nn.Parameter(torch.zeros(()))

    def forward(self, images: Tensor, centres: Tensor, row_scale: Tensor | None = None,
                row_shift: Tensor | None = None) -> Tensor:
        """images: (B, 1, H, W) normalised, full resolution; with row_scale and row_shift (B,), the strip is cut
        from rows stretched and moved by them (training warps) and the answer mapped back to the image."""
        strips = spine_strips(images, centres, self.config.width, self.config.step, row_scale, row_shift)
        if row_scale is not None and row_shift is not None:
            centres = torch.stack([centres[..., 0], (centres[..., 1] - row_shift[:, None]) / row_scale[:, None]], -1)
        found = self._locate(strips, centres)
        if row_scale is not None and row_shift is not None:
            found = torch.stack([found[..., 0], found[..., 1] * row_scale[:, None] + row_shift[:, None]], -1)
        return found

    def _locate(self, strips: Tensor, centres: Tensor) -> Tensor:
        dtype = next(self.parameters()).dtype
        f = self.features(strips.to(dtype).contiguous(memory_format=torch.channels_last)).float()
        b, c, rows, columns = f.shape
        f = self.along(self.squeeze(f.permute(0, 1, 3, 2).reshape(b, c * columns, rows)))
        row_px = self.config.step * self.rows_stride
        ys = (torch.arange(rows, dtype=f.dtype, device=f.device) + 0.5) * row_px - 0.5
        prior_y = centres[..., 1]
        level = ((prior_y[:, -1] - prior_y[:, 0]).abs() / (N_VERTEBRAE - 1)).clamp_min(1.0)
        width = self.log_prior_width.exp() * level[:, None, None]
        evidence = self.level_logits(f)

        def under_prior(rows: Tensor) -> Tensor:
            return evidence - 0.5 * ((ys - rows[..., None]) / width) ** 2

        if self.config.chain_sigma is not None and not self.training:
            prior_y = chain_rows(under_prior(prior_y), ys, prior_y.diff(dim=1), self.config.chain_sigma)
        weights = under_prior(prior_y).softmax(dim=-1)  # (B, 17, rows)
        y = (weights * ys).sum(-1)
        dx = (weights * self.sideways(f)).sum(-1) * self.config.step
        return torch.stack([centreline(centres, y) + dx, y], dim=-1)


def chain_rows(scores: Tensor, ys: Tensor, gaps: Tensor, sigma: float) -> Tensor:
    """The rows (B, 17) of the best chain under row scores (B, 17, R) at rows ys (R,): each vertebra below the one
    before it, each gap near the prior's gaps (B, 16) on a log scale. Scored alone, two vertebrae can settle on
    the same one and the rest of the spine then sits a level off; a chain cannot skip or double a vertebra.
    Exact by dynamic programming (Viterbi), one vertebra at a time."""
    unary = scores.log_softmax(dim=-1)
    rise = ys[None, :] - ys[:, None]  # (R, R): from row r to row r'
    below = rise > 0
    log_rise = rise.clamp_min(1e-3).log()
    total, back = unary[:, 0], []
    for k in range(unary.shape[1] - 1):
        mismatch = (log_rise - gaps[:, k, None, None].clamp_min(1.0).log()) / sigma
        pair = torch.where(below, -0.5 * mismatch**2, torch.finfo(scores.dtype).min / 4)  # (B, R, R')
        total, arg = (total[:, :, None] + pair).max(dim=1)
        total = total + unary[:, k + 1]
        back.append(arg)
    rows = [total.argmax(dim=-1)]
    for arg in reversed(back):
        rows.append(arg.gather(1, rows[-1][:, None])[:, 0])
    return ys[torch.stack(rows[::-1], dim=1)]
