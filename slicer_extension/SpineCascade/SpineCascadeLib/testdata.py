"""A made-up spine, volume and server answer for the module's self-test in Slicer and for the pytest tests.

The library's synthetic spines need OpenCV, which Slicer's Python lacks; for placing and measuring points a
stack of tilted rectangles along a bent midline is enough.
"""

from __future__ import annotations

import numpy as np
import slicer.util

from spinecascade.io.labels import LandmarkLabel, label_to_json_dict
from spinecascade.landmarks import N_POINTS, N_VERTEBRAE
from spinecascade.measurement.cobb import cobb_angles


def example_landmarks(width: int = 400, height: int = 1000, bend: float = 0.08, waves: float = 0.9) -> np.ndarray:
    """(17, 4, 2) corners of vertebrae along a sine-shaped midline: `waves` near 1 gives an S curve, 0.5 a C.

    `bend` is the curve's sideways depth as a fraction of the width.
    """
    t = np.linspace(0.0, 1.0, N_VERTEBRAE)
    centre_y = height * (0.1 + 0.8 * t)
    centre_x = width * (0.45 + bend * np.sin(2 * np.pi * waves * t) + 0.1 * t)
    slope = width * (bend * 2 * np.pi * waves * np.cos(2 * np.pi * waves * t) + 0.1) / (0.8 * height)
    tilt = -np.arctan(slope)  # each vertebra square to the midline (image y points down)
    half_width = width * (0.07 + 0.04 * t)
    half_height = 0.3 * (0.8 * height / N_VERTEBRAE)
    corners = np.empty((N_VERTEBRAE, 4, 2))
    for v in range(N_VERTEBRAE):
        rotation = np.array([[np.cos(tilt[v]), -np.sin(tilt[v])], [np.sin(tilt[v]), np.cos(tilt[v])]])
        offsets = np.array(
            [[-half_width[v], -half_height], [half_width[v], -half_height],
             [-half_width[v], half_height], [half_width[v], half_height]]
        )
        corners[v] = offsets @ rotation.T + (centre_x[v], centre_y[v])
    return corners


def example_answer(landmarks: np.ndarray, width: int, height: int, uncertainty: np.ndarray | None = None) -> dict:
    """What POST /infer/vertebral_landmarks?output=json answers for these landmarks."""
    doc = label_to_json_dict(LandmarkLabel(landmarks, width, height, "example.png"))
    doc["cobb"] = cobb_angles(landmarks, height).as_dict()
    if uncertainty is not None:
        doc["uncertainty"] = {
            "unit": "pixel",
            "per_landmark": [float(u) for u in uncertainty],
            "image": float(np.mean(uncertainty)),
        }
    doc["model"] = {"version": "example"}
    return doc


def example_uncertainty(seed: int = 0) -> np.ndarray:
    """68 per-landmark uncertainties in pixels, most small, a few large."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(2.0, 12.0, N_POINTS)
    values[rng.choice(N_POINTS, 8, replace=False)] = rng.uniform(30.0, 60.0, 8)
    return values


def add_example_volume(
    scene,
    width: int = 400,
    height: int = 1000,
    spacing: tuple[float, float] = (1.0, 1.0),
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    directions: np.ndarray | None = None,
    name: str = "example",
):
    """A single-slice scalar volume of the given geometry holding a gradient (uint16)."""
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    rows, columns = np.mgrid[0:height, 0:width]
    slicer.util.updateVolumeFromArray(volume, (rows * 7 + columns * 3).astype(np.uint16)[np.newaxis])
    volume.SetSpacing(spacing[0], spacing[1], 1.0)
    volume.SetOrigin(*origin)
    axes = np.diag([-1.0, -1.0, 1.0]) if directions is None else np.asarray(directions, dtype=np.float64)
    volume.SetIJKToRASDirections(*axes.ravel())
    volume.CreateDefaultDisplayNodes()
    return volume
