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


def strip_rows(height: int, step: int, like: Tensor) -> Tensor:
    """Image rows (pixel centres) a strip samples: every `step`-th row down the whole height; (height // step,)."""
    return (torch.arange(height // step, dtype=like.dtype, device=like.device) + 0.5) * step - 0.5


def centreline(centres: Tensor, rows: Tensor) -> Tensor:
    """x (B, R) of the spine at image rows (B, R): the polyline through the centres (B, K, 2), held at the first
    and last centre's x above and below them."""
    order = centres[..., 1].argsort(dim=1)
    ordered = torch.gather(centres, 1, order[..., None].expand(-1, -1, 2))
    cy, cx = ordered[..., 1].contiguous(), ordered[..., 0]
    rows = rows.contiguous()
    hi = torch.searchsorted(cy, rows).clamp(1, cy.shape[1] - 1)
    y0, y1 = torch.gather(cy, 1, hi - 1), torch.gather(cy, 1, hi)
    x0, x1 = torch.gather(cx, 1, hi - 1), torch.gather(cx, 1, hi)
    t = ((rows - y0) / (y1 - y0).clamp_min(1e-3)).clamp(0, 1)
    return x0 + t * (x1 - x0)


def spine_strips(images: Tensor, centres: Tensor, width: int, step: int, row_scale: Tensor | None = None,
                 row_shift: Tensor | None = None) -> Tensor:
    """A strip `width` pixels wide along the spine through `centres`, down the images' whole height.

    images: (B, C, H, W); centres: (B, K, 2). Samples lie `step` pixels apart; row r of a strip is centred on the
    spine at image row y_r (strip_rows), or at row_scale * y_r + row_shift with those (B,) tensors (training
    warps). Returns (B, C, H // step, width // step); outside the image the strips are zero.
    """
    b, _, h, w = images.shape
    rows = strip_rows(h, step, images)[None].expand(b, -1)
    if row_scale is not None and row_shift is not None:
        rows = row_scale[:, None].to(images) * rows + row_shift[:, None].to(images)
    across = (torch.arange(width // step, dtype=images.dtype, device=images.device) - (width // step - 1) / 2) * step
    gx = centreline(centres.to(images), rows)[..., None] + across
    gy = rows[..., None].expand_as(gx)
    grid = torch.stack([(2 * gx + 1) / w - 1, (2 * gy + 1) / h - 1], dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def spine_directions(centres: Tensor) -> Tensor:
    """Angle from the vertical of the line through each centre's neighbours (one-sided at the ends); (B, 17)."""
    step = torch.gradient(centres, dim=1)[0]
    return torch.atan2(step[..., 0], step[..., 1])


def rotate(offsets: Tensor, angles: Tensor) -> Tensor:
    """Turn the offsets (B, V, K, 2) of each vertebra by its angle (B, V), in image axes (y down)."""
    c, s = torch.cos(angles)[..., None], torch.sin(angles)[..., None]
    x, y = offsets[..., 0], offsets[..., 1]
    return torch.stack([x * c - y * s, x * s + y * c], dim=-1)


def turned_windows(images: Tensor, centres: Tensor, angles: Tensor, size: float, spacing: float) -> Tensor:
    """A square window `size` pixels wide around each centre, sampled every `spacing` pixels in a frame turned by
    its angle, so that a vertebra on a tilted spine stands upright in it.

    images: (B, C, H, W); centres: (B, K, 2); angles: (B, K), as spine_directions gives them. Returns
    (B * K, C, n, n) with n = round(size / spacing), the windows of image 0 first; outside the image they are zero.
    """
    b, c, h, w = images.shape
    k = centres.shape[1]
    n = round(size / spacing)
    steps = (torch.arange(n, dtype=images.dtype, device=images.device) + 0.5) * spacing - size / 2
    gy, gx = torch.meshgrid(steps, steps, indexing="ij")
    upright = torch.stack([gx, gy], dim=-1).view(1, 1, n * n, 2).expand(b, k, n * n, 2)
    points = centres.to(images.dtype)[:, :, None, :] + rotate(upright, -angles.to(images.dtype))
    grid = torch.stack([(2 * points[..., 0] + 1) / w - 1, (2 * points[..., 1] + 1) / h - 1], dim=-1)
    out = F.grid_sample(images, grid.view(b, k * n, n, 2), mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.view(b, c, k, n, n).transpose(1, 2).reshape(b * k, c, n, n)
