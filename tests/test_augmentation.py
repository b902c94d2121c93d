"""Training warps: the image and its landmarks move together, identity when off, reproducible from a seed."""

import numpy as np
import pytest
import torch

from spinecascade.training.augmentation import WarpConfig, Warps


def _blobs(points: np.ndarray, width: int, height: int, pad_w: int) -> torch.Tensor:
    ys, xs = np.mgrid[0:height, 0:pad_w]
    img = np.zeros((height, pad_w))
    for x, y in points:
        img += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 2.0**2))
    img[:, width:] = 0
    return torch.from_numpy(img).float()[None, None]


def _peak(image: torch.Tensor, near: np.ndarray, radius: int = 6) -> np.ndarray:
    """Intensity-weighted centre of the blob near a point."""
    a = image[0, 0].numpy()
    x0, y0 = np.round(near).astype(int)
    win = a[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1]
    ys, xs = np.mgrid[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1]
    return np.array([(xs * win).sum(), (ys * win).sum()]) / win.sum()


@pytest.mark.parametrize("frame_y", [0.0, 30.0])
def test_image_and_points_move_together(frame_y: float):
    width, height = 180, 300
    points = np.array([[60.0, 50.0], [90.0, 150.0], [120.0, 250.0]])
    image = _blobs(points, width, height, pad_w=200)
    sizes = torch.tensor([[width, height]], dtype=torch.float32)
    strong = WarpConfig(probability=1.0, shift_x=15, shift_y=8, rotation_deg=6, scale=0.08, bend_c=12, bend_s=6,
                        frame_y=frame_y)
    warps = Warps.draw(1, strong, torch.Generator().manual_seed(3))
    moved = warps.points(torch.from_numpy(points)[None], sizes)[0].numpy()
    warped = warps.images(image, sizes)
    assert np.abs(moved - points).max() > 5  # the warp does move things
    for p in moved:
        assert np.linalg.norm(_peak(warped, p) - p) < 0.6
    assert warped[0, 0, :, width:].abs().max() == 0  # nothing spills into the padding


def test_probability_zero_is_identity():
    warps = Warps.draw(4, WarpConfig(probability=0.0), torch.Generator().manual_seed(0))
    pts = torch.rand(4, 17, 4, 2, dtype=torch.float64) * 100
    sizes = torch.tensor([[120.0, 200.0]] * 4)
    assert torch.allclose(warps.points(pts, sizes), pts)
    image = torch.rand(4, 1, 200, 120)
    assert (warps.images(image, sizes) - image).abs().max() < 1e-3


def test_draws_are_reproducible_and_indexable():
    a = Warps.draw(6, WarpConfig(), torch.Generator().manual_seed(7))
    b = Warps.draw(6, WarpConfig(), torch.Generator().manual_seed(7))
    assert torch.equal(a.angle, b.angle) and torch.equal(a.shift, b.shift)
    part = a[torch.tensor([1, 4])]
    assert torch.equal(part.bend_c, a.bend_c[[1, 4]])
    assert part.gamma.shape == (2,)


def test_framing_moves_the_top_and_bottom_edges_and_leaves_the_other_draws_alone():
    plain = Warps.draw(200, WarpConfig(probability=1.0), torch.Generator().manual_seed(5))
    framed = Warps.draw(200, WarpConfig(probability=1.0, frame_y=40.0), torch.Generator().manual_seed(5))
    assert torch.equal(plain.shift, framed.shift) and torch.equal(plain.gamma, framed.gamma)
    assert torch.all(plain.frame_top == 0) and torch.all(plain.frame_bottom == 0)
    assert framed.frame_top.abs().max() <= 40 and framed.frame_bottom.abs().max() > 30
    assert not torch.allclose(framed.frame_top, framed.frame_bottom)  # independent edges: stretch as well as shift
    zero = torch.zeros(200, dtype=torch.float64)
    only_framing = Warps(shift=torch.zeros(200, 2, dtype=torch.float64), angle=zero, scale=zero + 1, bend_c=zero,
                         bend_s=zero, gamma=zero + 1, frame_top=framed.frame_top, frame_bottom=framed.frame_bottom)
    sizes = torch.tensor([[250.0, 680.0]] * 200)
    edges = torch.tensor([[125.0, 0.0], [125.0, 680.0]], dtype=torch.float64).expand(200, 2, 2)
    moved = only_framing.points(edges, sizes)
    assert torch.allclose(moved[:, 0, 1], framed.frame_top)
    assert torch.allclose(moved[:, 1, 1], 680 + framed.frame_bottom)
    assert torch.allclose(moved[..., 0], edges[..., 0])


@pytest.mark.parametrize("shape", [(3, 1, 17, 2), (3, 17, 4, 2)])
def test_points_keep_their_shape(shape):
    warps = Warps.draw(3, WarpConfig(probability=1.0), torch.Generator().manual_seed(1))
    pts = torch.rand(*shape, dtype=torch.float64) * 100
    assert warps.points(pts, torch.tensor([[100.0, 200.0]] * 3)).shape == shape


def test_strength_scales_the_geometry_only():
    base = WarpConfig()
    doubled = base.scaled(2.0)
    for name in ("shift_x", "shift_y", "rotation_deg", "scale", "bend_c", "bend_s", "frame_y"):
        assert getattr(doubled, name) == 2 * getattr(base, name)
    assert (doubled.gamma, doubled.probability) == (base.gamma, base.probability)
    sizes = torch.tensor([[250.0, 680.0]] * 64)
    points = torch.rand(64, 17, 2, dtype=torch.float64) * sizes[:, None].double()
    moves = [(Warps.draw(64, cfg, torch.Generator().manual_seed(1)).points(points, sizes) - points).abs().mean()
             for cfg in (base, doubled)]
    assert moves[1] > 1.5 * moves[0]
