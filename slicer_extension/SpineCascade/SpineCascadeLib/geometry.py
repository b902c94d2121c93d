"""Pixel coordinates of a 2D X-ray <-> Slicer's RAS coordinates, through the volume's own geometry.

The server and the label format speak in pixels (x right, y down, origin at the top-left pixel's centre);
Slicer places everything in RAS millimetres. A single-slice volume's IJK index is exactly that pixel grid
(I = column = x, J = row = y, K = 0), so the IJK-to-RAS matrix, with whatever spacing, origin and axis
directions the volume has, is the whole mapping and nothing about the file it came from must be assumed.
"""

from __future__ import annotations

import numpy as np
import vtk


class VolumeError(ValueError):
    """The selected volume cannot be used as a 2D radiograph."""


def _as_array(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def ijk_to_ras(volume) -> np.ndarray:
    """The volume's 4x4 IJK-to-RAS matrix as a numpy array."""
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return _as_array(matrix)


def ras_to_ijk(volume) -> np.ndarray:
    """The volume's 4x4 RAS-to-IJK matrix (Slicer's own inverse) as a numpy array."""
    matrix = vtk.vtkMatrix4x4()
    volume.GetRASToIJKMatrix(matrix)
    return _as_array(matrix)


def image_size(volume) -> tuple[int, int]:
    """(width, height) in pixels of a single-slice volume; VolumeError for anything else."""
    if volume is None:
        raise VolumeError("no volume selected: load or select the X-ray first")
    image = volume.GetImageData()
    if image is None:
        raise VolumeError(f"volume {volume.GetName()!r} holds no image data")
    width, height, slices = image.GetDimensions()
    if slices != 1:
        raise VolumeError(
            f"volume {volume.GetName()!r} has {slices} slices; the landmarks need a single 2D radiograph"
        )
    if width < 2 or height < 2:
        raise VolumeError(f"volume {volume.GetName()!r} is only {width} x {height} pixels")
    return int(width), int(height)


def pixels_to_ras(volume, pixels: np.ndarray) -> np.ndarray:
    """(N, 2) pixel (x, y) = (I, J) on the slice K = 0 -> (N, 3) RAS."""
    xy = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
    ijk = np.column_stack([xy, np.zeros(len(xy)), np.ones(len(xy))])
    return (ijk @ ijk_to_ras(volume).T)[:, :3]


def ras_to_pixels(volume, ras: np.ndarray) -> np.ndarray:
    """(N, 3) RAS -> (N, 2) pixel (x, y) = (I, J); K is dropped, so a point nudged off the slice still counts."""
    points = np.asarray(ras, dtype=np.float64).reshape(-1, 3)
    homogeneous = np.column_stack([points, np.ones(len(points))])
    return (homogeneous @ ras_to_ijk(volume).T)[:, :2]
