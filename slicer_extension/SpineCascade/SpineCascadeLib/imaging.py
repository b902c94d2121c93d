"""The X-ray between Slicer and the server: volume -> PNG for upload, downloaded image file -> volume.

Both directions keep the pixel grid untouched (file row = J, file column = I), so pixel coordinates in the
server's answer land on the pixel they name whatever the volume's spacing, origin or axis directions.
Files from the server are read with the library's own reader, the one the server uses, so both sides see
the same pixels.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import slicer.util

from spinecascade.io.images import load_image_bytes, save_image
from SpineCascadeLib.geometry import VolumeError, image_size
from SpineCascadeLib.markups import remove_nodes

# Weights of ITU-R BT.601 luma, the conversion the library applies to colour files, for colour volumes.
_LUMA = np.array([0.299, 0.587, 0.114])
_UINT16_MAX = 65535


def volume_pixels(volume) -> np.ndarray:
    """The slice as a (height, width) array in image row/column order (arrayFromVolume is [K, J, I])."""
    image_size(volume)
    array = slicer.util.arrayFromVolume(volume)[0]
    if array.ndim == 3:
        if array.shape[2] < 3:
            raise VolumeError(f"volume {volume.GetName()!r} has {array.shape[2]} components a pixel")
        array = array[..., :3] @ _LUMA
    return np.array(array)


def to_png_pixels(pixels: np.ndarray) -> np.ndarray:
    """uint8 or uint16 pixels for PNG: integer values that fit are kept exactly, anything else is rescaled."""
    if pixels.dtype == np.uint8:
        return pixels
    low, high = float(pixels.min()), float(pixels.max())
    if np.issubdtype(pixels.dtype, np.integer) and low >= 0 and high <= _UINT16_MAX:
        return pixels.astype(np.uint16)
    if high <= low:
        return np.zeros(pixels.shape, dtype=np.uint16)
    scaled = (pixels.astype(np.float64) - low) * (_UINT16_MAX / (high - low))
    return np.rint(scaled).astype(np.uint16)


def encode_png(volume) -> bytes:
    """The volume's slice as PNG file bytes, written by the library's image writer."""
    pixels = to_png_pixels(volume_pixels(volume))
    with tempfile.TemporaryDirectory(prefix="spinecascade-slicer-") as folder:
        path = Path(folder) / "image.png"
        save_image(path, pixels)
        return path.read_bytes()


def add_volume_from_image(scene, data: bytes, name: str):
    """A new scalar volume from image file bytes, placed as Slicer places a 2D file it reads (LPS axes).

    The file is decoded before anything is added, so a bad download leaves the scene as it was.
    """
    radiograph = load_image_bytes(data, name)
    sx, sy = radiograph.spacing or (1.0, 1.0)
    ox, oy = radiograph.origin
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    try:
        volume.SetSpacing(sx, sy, 1.0)
        volume.SetOrigin(-ox, -oy, 0.0)
        volume.SetIJKToRASDirections(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
        slicer.util.updateVolumeFromArray(volume, radiograph.pixels[np.newaxis])
        volume.CreateDefaultDisplayNodes()
    except Exception:
        remove_nodes(scene, [volume])
        raise
    return volume
