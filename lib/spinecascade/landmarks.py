"""The landmark data model: 17 vertebrae (T1-T12, L1-L5), 4 corners each, in the AASCE point order.

Every other module takes the order, the names and the array layout from here, so that the file formats,
the Cobb algorithm, the cascade, the MONAI Label app and the Slicer module agree by construction.
Arrays are float64 of shape (17, 4, 2) holding pixel (x, y) with the origin at the image's top-left.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from spinecascade.errors import LabelError

VERTEBRAE: tuple[str, ...] = tuple([f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)])
CORNERS: tuple[str, ...] = ("top-left", "top-right", "bottom-left", "bottom-right")
N_VERTEBRAE = len(VERTEBRAE)
N_CORNERS = len(CORNERS)
N_POINTS = N_VERTEBRAE * N_CORNERS
SHAPE = (N_VERTEBRAE, N_CORNERS, 2)

# Corner index that a horizontal mirror turns each corner into.
FLIP_CORNER_ORDER = (1, 0, 3, 2)

# How far outside the image a point may lie (fraction of the image size) before it is rejected:
# annotators do place corners a few pixels past the border of tightly cropped films.
OUTSIDE_TOLERANCE = 0.05


def point_names() -> list[str]:
    """The 68 point names in storage order, like "L3 top-left"."""
    return [f"{v} {c}" for v in VERTEBRAE for c in CORNERS]


def point_index(name: str) -> int:
    """Index (0-67) of a point name such as "L3 top-left"."""
    try:
        vertebra, corner = name.strip().split(" ", 1)
        return VERTEBRAE.index(vertebra) * N_CORNERS + CORNERS.index(corner)
    except ValueError:
        raise LabelError(f"unknown landmark name {name!r}; expected e.g. 'L3 top-left'") from None


def as_landmarks(points: np.ndarray | list, source: str = "landmarks") -> np.ndarray:
    """Coerce (68, 2), (136,) or (17, 4, 2) to the canonical (17, 4, 2) float64 array."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.size != N_POINTS * 2:
        raise LabelError(f"{source}: expected {N_POINTS} points (x, y), got an array of shape {arr.shape}")
    if arr.shape not in ((N_POINTS, 2), SHAPE, (N_POINTS * 2,)):
        raise LabelError(f"{source}: expected shape (68, 2) or (17, 4, 2), got {arr.shape}")
    return arr.reshape(SHAPE).copy()


def centres(landmarks: np.ndarray) -> np.ndarray:
    """Vertebra centres, the mean of the 4 corners: (17, 2)."""
    return np.asarray(landmarks, dtype=np.float64).reshape(SHAPE).mean(axis=1)


def normalise(landmarks: np.ndarray, width: float, height: float) -> np.ndarray:
    """Pixel to [0, 1] image-relative coordinates (x / width, y / height)."""
    return np.asarray(landmarks, dtype=np.float64) / np.array([width, height], dtype=np.float64)


def denormalise(landmarks: np.ndarray, width: float, height: float) -> np.ndarray:
    """Image-relative [0, 1] coordinates back to pixels."""
    return np.asarray(landmarks, dtype=np.float64) * np.array([width, height], dtype=np.float64)


def flip_horizontal(landmarks: np.ndarray, width: float) -> np.ndarray:
    """Landmarks of the mirrored image: x -> (width - 1) - x, left and right corners swapped.

    Pixel centres run from 0 to width - 1, so mirroring about (width - 1) / 2 maps the image grid onto itself
    and flipping twice returns exactly the input.
    """
    arr = as_landmarks(landmarks)
    flipped = arr[:, FLIP_CORNER_ORDER, :].copy()
    flipped[..., 0] = (width - 1) - flipped[..., 0]
    return flipped


def validate(
    landmarks: np.ndarray, width: float | None = None, height: float | None = None, source: str = "landmarks"
) -> np.ndarray:
    """Canonical array, or a LabelError naming the first bad point and why."""
    arr = as_landmarks(landmarks, source)
    names = point_names()
    flat = arr.reshape(N_POINTS, 2)
    bad = ~np.isfinite(flat).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise LabelError(f"{source}: point {i} ({names[i]}) is not finite: {tuple(flat[i])}")
    if width is not None and height is not None:
        if width <= 0 or height <= 0:
            raise LabelError(f"{source}: image size must be positive, got {width} x {height}")
        margin = OUTSIDE_TOLERANCE * np.array([width, height])
        low = -margin
        high = np.array([width, height]) + margin
        outside = ((flat < low) | (flat > high)).any(axis=1)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise LabelError(
                f"{source}: point {i} ({names[i]}) at ({flat[i, 0]:.1f}, {flat[i, 1]:.1f}) lies far outside "
                f"the {width:g} x {height:g} image"
            )
    return arr


def move_levels(landmarks: np.ndarray, levels: int) -> tuple[np.ndarray, list[int]]:
    """The same chain of vertebrae named `levels` vertebrae further down the spine (negative: up), for an answer
    that is whole levels off: with `levels` = 1, the corners named T2 become T1's, ..., those named L5 become
    L4's. Each vertebra the chain did not have is its end vertebra moved on by that end's last step between
    centres, once per missing level. Returns the landmarks and the indices (0-67) of those new points."""
    arr = as_landmarks(landmarks)
    if not isinstance(levels, (int, np.integer)) or abs(levels) >= N_VERTEBRAE:
        raise LabelError(f"levels must be a whole number between {1 - N_VERTEBRAE} and {N_VERTEBRAE - 1}, "
                         f"got {levels!r}")
    mid = centres(arr)
    moved = np.empty_like(arr)
    added = []
    for k in range(N_VERTEBRAE):
        source = k + int(levels)
        if 0 <= source < N_VERTEBRAE:
            moved[k] = arr[source]
            continue
        end, inner = (N_VERTEBRAE - 1, N_VERTEBRAE - 2) if source >= N_VERTEBRAE else (0, 1)
        beyond = abs(source - end)
        moved[k] = arr[end] + beyond * (mid[end] - mid[inner])
        added += range(k * N_CORNERS, (k + 1) * N_CORNERS)
    return moved, added


def on_larger_grid(coordinates: np.ndarray, factor: float) -> np.ndarray:
    """Pixel coordinates on a grid `factor` times finer, pixel centres mapped to centres."""
    return (np.asarray(coordinates, float) + 0.5) * factor - 0.5


@dataclass(frozen=True)
class SpineExtent:
    """What the locator found, in the film's pixels; spreads in levels (the T1-L5 span / 17)."""

    t1_top: float  # row of T1's top endplate
    l5_bottom: float  # row of L5's bottom endplate
    x: float  # the spine's column between them
    t1_spread: float
    l5_spread: float

    @property
    def level(self) -> float:
        return (self.l5_bottom - self.t1_top) / N_VERTEBRAE

    def scaled(self, factor: float) -> SpineExtent:
        """The same extent in a film `factor` times larger (pixel centres map to centres); spreads unchanged."""
        t1_top, l5_bottom, x = on_larger_grid(np.array([self.t1_top, self.l5_bottom, self.x]), factor)
        return replace(self, t1_top=float(t1_top), l5_bottom=float(l5_bottom), x=float(x))

    def as_dict(self) -> dict:
        return {k: round(v, 2) for k, v in asdict(self).items()}
