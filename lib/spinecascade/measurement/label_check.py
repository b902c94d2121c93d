"""Finds labels that break the expected landmark structure, and repairs the ones that can be repaired safely.

32 of the 481 AASCE training labels have swapped corners, vertebrae out of order, the first vertebra stored
last (so that "L5" sits at the top of the spine), or a vertebra collapsed, doubled or duplicated. Training
on them silently hurts, so the trainer excludes or repairs them. Every tolerance below was calibrated on
those 481 labels: each sits in a wide gap between the values of correct labels and those of broken ones,
so a flag means a visibly wrong label, not an unusual spine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import Protocol

import numpy as np

from spinecascade.landmarks import N_VERTEBRAE, OUTSIDE_TOLERANCE, VERTEBRAE, point_names, validate

RULES: dict[str, str] = {
    "vertebra-order": "vertebra centres must run top to bottom, T1 first",
    "left-right": "each right corner must lie right of its left corner, on both endplates",
    "top-bottom": "each bottom corner must lie below its top corner, on both sides",
    "overlap": "a vertebra's top endplate must not lie well above the previous vertebra's bottom endplate",
    "duplicate": "no two vertebrae may (nearly) coincide",
    "size": "each vertebra's height and width must be plausible for its level in this image",
    "outside": "every point must lie inside the image, up to a small margin",
}

# Typical height and width of each vertebra (T1..L5) relative to the image's median vertebra: the medians
# over the AASCE training labels. Dividing by them lets one size tolerance fit T1 and L5 alike.
TYPICAL_HEIGHT = np.array(
    [0.65, 0.73, 0.82, 0.87, 0.92, 0.95, 0.95, 0.96, 1.0, 1.03, 1.09, 1.14, 1.16, 1.17, 1.24, 1.26, 1.18]
)
TYPICAL_WIDTH = np.array(
    [0.97, 0.9, 0.84, 0.83, 0.85, 0.87, 0.91, 0.95, 1.0, 1.02, 1.08, 1.13, 1.18, 1.22, 1.28, 1.35, 1.42]
)
# Size relative to the typical size for the level. Correct AASCE labels span 0.27-1.98 in height and
# 0.56-1.72 in width; a collapsed vertebra (both endplates on one line) is 0.02, one drawn over two 2.5.
HEIGHT_RANGE = (0.2, 2.2)
WIDTH_RANGE = (0.4, 2.5)
# An endplate shorter than this (fraction of the median width) in x, or reversed, has its corners swapped
# or one corner misplaced; correct labels of strongly tilted vertebrae keep 0.38 or more.
MIN_ENDPLATE_DX = 0.2
# Centres closer than this (in median vertebra heights) are one vertebra labelled twice: duplicates in
# AASCE are 0.02-0.2 apart, the closest distinct vertebrae 0.4.
DUPLICATE_DISTANCE = 0.3
# Adjacent vertebrae often touch and annotators let endplates overlap a little (up to 0.14 median heights
# in correct labels); a vertebra drawn over its neighbour overlaps by 0.45.
OVERLAP_TOLERANCE = 0.25


@dataclass(frozen=True)
class Finding:
    """One broken expectation: a stable rule id (a key of RULES), what is wrong, and where."""

    rule: str
    message: str
    vertebra: str | None = None

    def __str__(self) -> str:
        return f"{self.rule}: {self.message}"


class _Sample(Protocol):
    name: str
    landmarks: np.ndarray
    width: int
    height: int


def check_landmarks(landmarks: np.ndarray, width: float | None, height: float | None) -> list[Finding]:
    """Every structural problem of one label; width/height None skips the `outside` rule."""
    arr = validate(landmarks)
    geometry = _Geometry(arr)
    findings = _outside(arr, width, height)
    findings += _corner_order(arr, geometry)
    duplicates = _duplicates(geometry)
    findings += [f for f, _ in duplicates]
    in_duplicate = {i for _, pair in duplicates for i in pair}
    out_of_order = _out_of_order(geometry, in_duplicate)
    findings += [f for f, _ in out_of_order]
    skip = in_duplicate | {i for _, i in out_of_order}
    findings += _overlaps(arr, geometry, skip)
    findings += _sizes(geometry)
    return findings


def check_dataset(dataset: Iterable[_Sample]) -> dict[str, list[Finding]]:
    """Name -> findings, only for the samples (of an AasceDataset, say) that have any."""
    result = {}
    for sample in dataset:
        findings = check_landmarks(sample.landmarks, sample.width, sample.height)
        if findings:
            result[sample.name] = findings
    return result


def repair_landmarks(
    landmarks: np.ndarray, width: float | None = None, height: float | None = None
) -> np.ndarray | None:
    """A corrected copy, or None when the label cannot be repaired without guessing.

    Only whole-vertebra mirrors (both endplates left-right reversed, or both sides upside down) are undone,
    and vertebrae are re-sorted top to bottom only once every vertebra is consistent in itself. Anything
    else, such as one misplaced corner, a collapsed or doubled vertebra, or a duplicate, needs a person.
    """
    arr = validate(landmarks).copy()
    for v in arr:
        if v[1, 0] < v[0, 0] and v[3, 0] < v[2, 0]:
            v[:] = v[[1, 0, 3, 2]]
        if v[2, 1] < v[0, 1] and v[3, 1] < v[1, 1]:
            v[:] = v[[2, 3, 0, 1]]
    if any(f.rule in ("left-right", "top-bottom", "duplicate") for f in check_landmarks(arr, width, height)):
        return None
    arr = arr[np.argsort(_Geometry(arr).centres[:, 1], kind="stable")]
    return None if check_landmarks(arr, width, height) else arr


class _Geometry:
    """Per-vertebra centres, widths and heights; heights from the area so a collapsed box measures ~0."""

    def __init__(self, arr: np.ndarray) -> None:
        self.centres = arr.mean(axis=1)
        top = np.linalg.norm(arr[:, 1] - arr[:, 0], axis=1)
        bottom = np.linalg.norm(arr[:, 3] - arr[:, 2], axis=1)
        self.widths = (top + bottom) / 2
        ring = arr[:, [0, 1, 3, 2]]
        x, y = ring[..., 0], ring[..., 1]
        area = 0.5 * np.abs((x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1))
        self.heights = area / np.maximum(self.widths, 1e-9)
        self.median_width = float(np.median(self.widths))
        self.median_height = float(np.median(self.heights))


def _outside(arr: np.ndarray, width: float | None, height: float | None) -> list[Finding]:
    if width is None or height is None:
        return []
    flat = arr.reshape(-1, 2)
    size = np.array([width, height], dtype=np.float64)
    margin = OUTSIDE_TOLERANCE * size
    outside = ((flat < -margin) | (flat > size + margin)).any(axis=1)
    names = point_names()
    return [
        Finding(
            "outside",
            f"{names[i]} at ({flat[i, 0]:.0f}, {flat[i, 1]:.0f}) lies outside the {width:g} x {height:g} "
            "image",
            VERTEBRAE[i // 4],
        )
        for i in np.flatnonzero(outside)
    ]


def _corner_order(arr: np.ndarray, geometry: _Geometry) -> list[Finding]:
    min_dx = MIN_ENDPLATE_DX * geometry.median_width
    findings = []
    for name, v in zip(VERTEBRAE, arr, strict=True):
        for endplate, (left, right) in (("top", (0, 1)), ("bottom", (2, 3))):
            dx = v[right, 0] - v[left, 0]
            if dx < min_dx:
                findings.append(
                    Finding(
                        "left-right",
                        f"{name} {endplate}-right corner is {'left of' if dx < 0 else 'on'} its "
                        f"{endplate}-left corner (x {v[right, 0]:.0f} vs {v[left, 0]:.0f})",
                        name,
                    )
                )
        for side, (top, bottom) in (("left", (0, 2)), ("right", (1, 3))):
            if v[bottom, 1] <= v[top, 1]:
                findings.append(
                    Finding(
                        "top-bottom",
                        f"{name} bottom-{side} corner is not below its top-{side} corner "
                        f"(y {v[bottom, 1]:.0f} vs {v[top, 1]:.0f})",
                        name,
                    )
                )
    return findings


def _duplicates(geometry: _Geometry) -> list[tuple[Finding, tuple[int, int]]]:
    c = geometry.centres
    limit = DUPLICATE_DISTANCE * geometry.median_height
    found = []
    for i in range(N_VERTEBRAE):
        for j in range(i + 1, N_VERTEBRAE):
            distance = float(np.linalg.norm(c[j] - c[i]))
            if distance < limit:
                message = (
                    f"{VERTEBRAE[j]} nearly coincides with {VERTEBRAE[i]} (centres {distance:.0f} px apart, "
                    f"median vertebra height {geometry.median_height:.0f} px)"
                )
                found.append((Finding("duplicate", message, VERTEBRAE[j]), (i, j)))
    return found


def _out_of_order(geometry: _Geometry, ignore: set[int]) -> list[tuple[Finding, int]]:
    """Vertebrae outside the longest run whose centres go down the image: the fewest that are misplaced."""
    y = geometry.centres[:, 1]
    candidates = [i for i in range(N_VERTEBRAE) if i not in ignore]
    kept = _longest_increasing(candidates, y)
    found = []
    for i in candidates:
        if i in kept:
            continue
        below = [k for k in kept if y[k] > y[i]]
        above = [k for k in kept if y[k] < y[i]]
        if not above:
            where = f"above {VERTEBRAE[below[0]]}" if below else "alone"
        elif not below:
            where = f"below {VERTEBRAE[above[-1]]}"
        else:
            where = f"between {VERTEBRAE[above[-1]]} and {VERTEBRAE[below[0]]}"
        message = f"{VERTEBRAE[i]} is out of order: its centre (y = {y[i]:.0f} px) lies {where}"
        found.append((Finding("vertebra-order", message, VERTEBRAE[i]), i))
    return found


def _longest_increasing(indices: list[int], y: np.ndarray) -> set[int]:
    best: list[list[int]] = []
    for n, i in enumerate(indices):
        chains = [best[m] for m in range(n) if y[indices[m]] < y[i]]
        best.append(max(chains, key=len, default=[]) + [i])
    return set(max(best, key=len, default=[]))


def _overlaps(arr: np.ndarray, geometry: _Geometry, skip: set[int]) -> list[Finding]:
    """Overlap along the local spine direction, so a tilted segment of a curve is judged fairly."""
    tolerance = OVERLAP_TOLERANCE * geometry.median_height
    order = [i for i in range(N_VERTEBRAE) if i not in skip]
    findings = []
    for upper, lower in pairwise(order):
        axis = geometry.centres[lower] - geometry.centres[upper]
        axis /= max(float(np.linalg.norm(axis)), 1e-9)
        bottom_mid = arr[upper, 2:].mean(axis=0)
        top_mid = arr[lower, :2].mean(axis=0)
        gap = float((top_mid - bottom_mid) @ axis)
        if gap < -tolerance:
            findings.append(
                Finding(
                    "overlap",
                    f"{VERTEBRAE[lower]} top endplate lies {-gap:.0f} px above {VERTEBRAE[upper]} bottom "
                    f"endplate (median vertebra height {geometry.median_height:.0f} px)",
                    VERTEBRAE[lower],
                )
            )
    return findings


def _sizes(geometry: _Geometry) -> list[Finding]:
    findings = []
    for what, sizes, typical, (low, high) in (
        ("height", geometry.heights, TYPICAL_HEIGHT, HEIGHT_RANGE),
        ("width", geometry.widths, TYPICAL_WIDTH, WIDTH_RANGE),
    ):
        level = sizes / typical
        relative = level / max(float(np.median(level)), 1e-9)
        for i in np.flatnonzero((relative < low) | (relative > high)):
            findings.append(
                Finding(
                    "size",
                    f"{VERTEBRAE[i]} {what} {sizes[i]:.0f} px is {relative[i]:.2f}x the usual {what} for its "
                    f"level in this image (allowed {low:g}-{high:g}x)",
                    VERTEBRAE[i],
                )
            )
    return findings
