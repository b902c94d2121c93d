"""Batched crops around points: one grid_sample call for every crop of every image in a batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def crop_patches(images: Tensor, points: Tensor, crop_size: tuple[int, int], patch_size: tuple[int, int],
                 stride: int = 1) -> Tensor:
    """Sample a crop_size (width, height) window centred on each point, resampled to patch_size (width, height).

    images: (B, C, H, W); points: (B, K, 2) pixel (x, y) in that image. Returns (B * K, C, ph, pw), the crops of
    image 0 first; with `stride` only every stride-th patch pixel (rows and columns 0, stride, ...) is sampled.
    Outside the image the crops are zero.
    """
    b, c, h, w = images.shape
    k = points.shape[1]
    pw, ph = patch_size
    cw, ch = crop_size
    # Sample positions at the centres of the output pixels, spread over the crop window.
    xs = (torch.arange(0, pw, stride, dtype=images.dtype, device=images.device) + 0.5) * (cw / pw) - cw / 2
    ys = (torch.arange(0, ph, stride, dtype=images.dtype, device=images.device) + 0.5) * (ch / ph) - ch / 2
    pw, ph = len(xs), len(ys)
    gx = (points[..., 0, None, None] + xs.view(1, 1, 1, pw)).expand(b, k, ph, pw)
    gy = (points[..., 1, None, None] + ys.view(1, 1, ph, 1)).expand(b, k, ph, pw)
    # align_corners=False: normalised -1 and 1 are the outer edges of the border pixels.
    grid = torch.stack([(2 * gx + 1) / w - 1, (2 * gy + 1) / h - 1], dim=-1).reshape(b, k * ph, pw, 2)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.view(b, c, k, ph, pw).transpose(1, 2).reshape(b * k, c, ph, pw)


def resample_films(images: Tensor, sizes: Tensor, film_size: tuple[int, int], stride: int = 1) -> Tensor:
    """Each image's own (width, height) area of a padded batch resampled to film_size (width, height).

    images: (B, C, H, W); sizes: (B, 2). Returns (B, C, fh, fw), or every stride-th pixel of it as above.
    """
    b, c, h, w = images.shape
    fw, fh = film_size
    u = (torch.arange(0, fw, stride, dtype=images.dtype, device=images.device) + 0.5) / fw
    v = (torch.arange(0, fh, stride, dtype=images.dtype, device=images.device) + 0.5) / fh
    sizes = sizes.to(images.dtype)
    gx = (2 * u.view(1, 1, -1) * sizes[:, 0, None, None] / w - 1).expand(b, len(v), len(u))
    gy = (2 * v.view(1, -1, 1) * sizes[:, 1, None, None] / h - 1).expand(b, len(v), len(u))
    return F.grid_sample(images, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="zeros",
                         align_corners=False)
