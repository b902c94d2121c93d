"""The official AASCE Cobb angle algorithm (the challenge's MATLAB tool), with the end vertebrae kept.

It reproduces the challenge's `angles.csv` from the training labels within 0.01 degrees, so predicted angles
are comparable with every published AASCE result. Degenerate input never raises: it is reported in
`CobbResult.degenerate` and handled the way IEEE arithmetic in the official tool handles it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spinecascade.landmarks import N_VERTEBRAE, VERTEBRAE, as_landmarks

ANGLE_NAMES = ("PT", "MT", "TL")
_MIN_DIRECTION_LENGTH = 1e-9


@dataclass(frozen=True)
class CobbAngle:
    """One Cobb angle, measured between the end plates of two vertebrae (indices into VERTEBRAE)."""

    name: str
    degrees: float
    upper: int
    lower: int

    @property
    def end_vertebrae(self) -> tuple[str, str]:
        return VERTEBRAE[self.upper], VERTEBRAE[self.lower]

    def as_dict(self) -> dict:
        return {
            "degrees": self.degrees,
            "upper_vertebra": VERTEBRAE[self.upper],
            "lower_vertebra": VERTEBRAE[self.lower],
        }


@dataclass(frozen=True)
class CobbResult:
    pt: CobbAngle
    mt: CobbAngle
    tl: CobbAngle
    s_shaped: bool
    degenerate: tuple[str, ...] = field(default=())

    @property
    def angles(self) -> tuple[CobbAngle, CobbAngle, CobbAngle]:
        return self.pt, self.mt, self.tl

    def as_array(self) -> np.ndarray:
        return np.array([a.degrees for a in self.angles])

    def as_dict(self) -> dict:
        return {
            **{a.name: a.as_dict() for a in self.angles},
            "curve": "S" if self.s_shaped else "C",
            "degenerate": list(self.degenerate),
        }


def _pair(name: str, degrees: float, a: int, b: int) -> CobbAngle:
    return CobbAngle(name, float(degrees), int(min(a, b)), int(max(a, b)))


def vertebra_directions(landmarks: np.ndarray) -> np.ndarray:
    """Left-to-right direction of each vertebra: mean of the right corners minus mean of the left ones."""
    p = as_landmarks(landmarks)
    left = (p[:, 0] + p[:, 2]) / 2
    right = (p[:, 1] + p[:, 3]) / 2
    return right - left


def pairwise_angles(directions: np.ndarray) -> np.ndarray:
    """Angle in degrees between every two direction vectors; 0 where a vector has no length."""
    length = np.linalg.norm(directions, axis=1)
    safe = np.where(length > _MIN_DIRECTION_LENGTH, length, 1.0)
    unit = directions / safe[:, None]
    cos = np.clip(unit @ unit.T, -1.0, 1.0)
    angles = np.degrees(np.arccos(cos))
    zero = length <= _MIN_DIRECTION_LENGTH
    angles[zero, :] = 0.0
    angles[:, zero] = 0.0
    return angles


def _is_s_shaped(midpoints: np.ndarray, notes: list[str]) -> bool:
    first, last = midpoints[0], midpoints[-1]
    dy, dx = first[1] - last[1], first[0] - last[0]
    if dx == 0 or dy == 0:
        axis = "vertically" if dx == 0 else "horizontally"
        notes.append(
            f"the first and last endplate midpoints are {axis} aligned: the S test divides by zero and, "
            "as in the official tool, the curve counts as S-shaped"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        inner = midpoints[:-2]
        line = (inner[:, 1] - last[1]) / dy - (inner[:, 0] - last[0]) / dx
        products = np.outer(line, line)
        return bool(np.sum(products) != np.sum(np.abs(products)))


def cobb_angles(landmarks: np.ndarray, image_height: float) -> CobbResult:
    """PT, MT and TL in degrees from 68 landmarks in pixels and the image height in pixels."""
    p = as_landmarks(landmarks).reshape(-1, 2)
    notes: list[str] = []
    if not np.isfinite(p).all():
        raise ValueError("landmarks contain NaN or infinite values")
    midpoints = (p[0::2] + p[1::2]) / 2
    directions = vertebra_directions(p)
    short = np.flatnonzero(np.linalg.norm(directions, axis=1) <= _MIN_DIRECTION_LENGTH)
    if short.size:
        names = ", ".join(VERTEBRAE[i] for i in short)
        notes.append(f"vertebrae with coincident left and right corners (no direction, angle 0): {names}")
    angles = pairwise_angles(directions)

    best_row = angles.argmax(axis=0)
    best = angles.max(axis=0)
    pos2 = int(best.argmax())
    p1 = int(best_row[pos2])
    pt = _pair("PT", angles[p1, pos2], pos2, p1)

    last = N_VERTEBRAE - 1
    if not _is_s_shaped(midpoints, notes):
        mt = _pair("MT", angles[0, pos2], 0, pos2)
        tl = _pair("TL", angles[last, p1], last, p1)
        return CobbResult(pt, mt, tl, False, tuple(notes))

    j1 = int(angles[pos2, : pos2 + 1].argmax())
    mt = _pair("MT", angles[pos2, j1], pos2, j1)
    if midpoints[2 * pos2 + 1, 1] + midpoints[2 * p1 + 1, 1] < image_height:
        j2 = p1 + int(angles[p1, p1:].argmax())
        tl = _pair("TL", angles[p1, j2], p1, j2)
    else:
        j2 = int(angles[j1, : j1 + 1].argmax())
        tl = _pair("TL", angles[j1, j2], j1, j2)
    return CobbResult(pt, mt, tl, True, tuple(notes))
