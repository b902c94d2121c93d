"""Loading 2D radiographs from any of the formats a clinic or a data set hands over, into one float32 array.

The CLI, the MONAI Label app and the Slicer module all read images through here, so a file that loads in
one loads the same way in the others. The format is taken from the file's magic bytes, not its extension,
and every failure is an ImageError that starts with the file name and says what is wrong.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from spinecascade.errors import ImageError
from spinecascade.io.atomic import atomic_path
from spinecascade.landmarks import on_larger_grid

logger = logging.getLogger(__name__)

MAX_PIXELS = 60_000_000  # decompression-bomb guard (a 4000x4000 16-bit film is 16 M)
MIN_SIZE = 16  # below this no vertebra can be resolved, and the method's pooling would fail
SUPPORTED = "JPEG, PNG, BMP, TIFF, DICOM, NRRD, NIfTI"

# ITU-R BT.601 weights, the ones Pillow's "L" conversion uses, applied in float so 16-bit detail survives.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)

# What the decoding libraries raise on malformed input; wrapped so that no raw library exception escapes.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    RuntimeError,
    EOFError,
    struct.error,
    zlib.error,
    IndexError,
    KeyError,
    TypeError,
    AttributeError,
)

_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "tiff": "TIFF"}
_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
_TO_RGB_MODES = {"CMYK", "YCbCr", "LAB", "HSV"}


@dataclass(frozen=True, eq=False)
class Radiograph:
    """A 2D grayscale radiograph with its pixel geometry; equality is identity because pixels are an array."""

    pixels: np.ndarray
    spacing: tuple[float, float] | None = None  # (x, y) = (column, row) in mm per pixel
    origin: tuple[float, float] = (0.0, 0.0)  # physical (x, y) of pixel (0, 0)
    source: str = "<array>"
    # The file's pixels per pixel here: above 1 where a JPEG was decoded at a reduced size (`min_rows`).
    downscale: int = 1
    file_size: tuple[int, int] | None = None  # (width, height) in the file; None: the size of `pixels`

    def __post_init__(self) -> None:
        pixels = np.ascontiguousarray(self.pixels, dtype=np.float32)
        if pixels.ndim != 2:
            raise ImageError(f"{self.source}: expected a 2D image, got pixels of shape {pixels.shape}")
        object.__setattr__(self, "pixels", pixels)
        if self.spacing is not None:
            object.__setattr__(self, "spacing", (float(self.spacing[0]), float(self.spacing[1])))
        object.__setattr__(self, "origin", (float(self.origin[0]), float(self.origin[1])))

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def size_in_file(self) -> tuple[int, int]:
        """(width, height) of the image as stored in its file."""
        return self.file_size or (self.width, self.height)

    def to_file(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) coordinates in `pixels` as coordinates in the file's pixels (pixel centres map to centres)."""
        return on_larger_grid(points, self.downscale)

    def to_uint8(self) -> np.ndarray:
        """8-bit copy for display and overlays; percentiles keep burnt-in labels from flattening the film."""
        pixels = self.pixels
        step = max(1, int(np.sqrt(pixels.size / 1_000_000)))  # percentiles of a ~1 M pixel subsample suffice
        low, high = (float(v) for v in np.percentile(pixels[::step, ::step], [0.5, 99.5]))
        if high <= low:
            low, high = float(pixels.min()), float(pixels.max())
        if high <= low:
            return np.zeros(pixels.shape, dtype=np.uint8)
        # In place: fresh arrays of film size cost more in page faults than the arithmetic does.
        scaled = np.subtract(pixels, np.float32(low), dtype=np.float32)
        scaled *= np.float32(255.0 / (high - low))
        np.clip(scaled, 0.0, 255.0, out=scaled)
        return np.rint(scaled, out=scaled).astype(np.uint8)


def load_image(path: str | os.PathLike, min_rows: int | None = None) -> Radiograph:
    """Read a radiograph from a file in any supported format.

    With `min_rows`, a JPEG is decoded at the smallest of its DCT scales (1/2, 1/4, 1/8) that keeps at least that
    many rows, much faster for a large film; `Radiograph.to_file` maps its coordinates back to the file's.
    """
    name = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a directory, not an image file") from None
    except PermissionError:
        raise ImageError(f"{name}: cannot be read (permission denied)") from None
    except OSError as exc:
        raise ImageError(f"{name}: cannot be read: {exc.strerror or exc}") from None
    if not head:
        raise ImageError(f"{name}: is empty")
    kind = _sniff(head, lambda: _gunzip_head(path))
    if kind in _PIL_FORMATS:
        return _load_pil(Path(path), name, _PIL_FORMATS[kind], min_rows)
    if kind in ("dicom", "dicom-raw"):
        return _load_dicom(Path(path), name, force=kind == "dicom-raw")
    if kind == "nrrd":
        return _load_sitk(Path(path), name, "NrrdImageIO")
    if kind in ("nifti", "nifti-gz"):
        # ITK's NIfTI reader goes by the file name's suffix, so a misnamed file is read from a renamed copy.
        suffixes = (".nii.gz",) if kind == "nifti-gz" else (".nii", ".hdr")
        if name.lower().endswith(suffixes):
            return _load_sitk(Path(path), name, "NiftiImageIO")
        return _load_sitk_bytes(_read_all(path, name), name, suffixes[0], "NiftiImageIO")
    raise ImageError(f"{name}: is not a supported image ({SUPPORTED})")


def load_image_bytes(data: bytes, name: str = "<upload>") -> Radiograph:
    """Read a radiograph from memory (an HTTP upload); ``name`` only labels the error messages."""
    if not data:
        raise ImageError(f"{name}: is empty")
    kind = _sniff(data[:512], lambda: _gunzip_head(io.BytesIO(data)))
    if kind in _PIL_FORMATS:
        return _load_pil(io.BytesIO(data), name, _PIL_FORMATS[kind])
    if kind in ("dicom", "dicom-raw"):
        return _load_dicom(io.BytesIO(data), name, force=kind == "dicom-raw")
    if kind == "nrrd":
        return _load_sitk_bytes(data, name, ".nrrd", "NrrdImageIO")
    if kind in ("nifti", "nifti-gz"):
        return _load_sitk_bytes(data, name, ".nii.gz" if kind == "nifti-gz" else ".nii", "NiftiImageIO")
    raise ImageError(f"{name}: is not a supported image ({SUPPORTED})")


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write 8-bit (PNG, JPEG) or 16-bit (PNG) grayscale atomically; the format follows the suffix."""
    name = os.fspath(path)
    pixels = np.asarray(image)
    if pixels.ndim != 2 or pixels.dtype.kind != "u" or pixels.dtype.itemsize not in (1, 2):
        raise ValueError(
            f"{name}: expected a 2D uint8 or uint16 array, got {pixels.dtype} of shape {pixels.shape}"
        )
    sixteen_bit = pixels.dtype.itemsize == 2
    suffix = Path(name).suffix.lower()
    if suffix == ".png":
        fmt, options = "PNG", {}
    elif suffix in (".jpg", ".jpeg"):
        if sixteen_bit:
            raise ImageError(f"{name}: JPEG cannot hold 16-bit pixels; save as .png instead")
        fmt, options = "JPEG", {"quality": 95}
    else:
        raise ImageError(f"{name}: cannot save as {suffix or 'a file without suffix'!r}; use .png or .jpg")
    picture = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint16 if sixteen_bit else np.uint8))
    with atomic_path(path) as temporary:
        picture.save(temporary, format=fmt, **options)


def _sniff(head: bytes, gunzip_head: Callable[[], bytes]) -> str | None:
    """The format named by the magic bytes; ``gunzip_head`` is only called for gzip files (NIfTI .nii.gz)."""
    if head[128:132] == b"DICM":
        return "dicom"  # first: a preamble may itself hold a TIFF header (dual-personality files)
    if head.startswith(b"\xff\xd8"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"NRRD"):
        return "nrrd"
    if _is_nifti_header(head):
        return "nifti"
    if head.startswith(b"\x1f\x8b") and _is_nifti_header(gunzip_head()):
        return "nifti-gz"
    if len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00"):
        return "dicom-raw"  # a DICOM data set without the 128-byte preamble, starting at group 0002 or 0008
    return None


def _is_nifti_header(head: bytes) -> bool:
    """NIfTI-1 (and Analyze) headers open with sizeof_hdr = 348, NIfTI-2 with 540, in either byte order."""
    return len(head) >= 4 and head[:4] in (
        struct.pack("<i", 348),
        struct.pack(">i", 348),
        struct.pack("<i", 540),
        struct.pack(">i", 540),
    )


def _gunzip_head(source: str | os.PathLike | io.BytesIO) -> bytes:
    try:
        with gzip.open(source, "rb") as handle:
            return handle.read(4)
    except (OSError, EOFError, zlib.error):
        return b""


def _check_size(name: str, width: int, height: int) -> None:
    """Reject absurd sizes from the header alone, before anything is decoded."""
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{name}: is {width} x {height} pixels, more than the {MAX_PIXELS:,} pixels a radiograph can "
            "plausibly have (a corrupt header or a decompression bomb)"
        )
    if width < MIN_SIZE or height < MIN_SIZE:
        raise ImageError(
            f"{name}: is only {width} x {height} pixels; at least {MIN_SIZE} x {MIN_SIZE} are needed"
        )


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float64) @ _LUMA


def _finish(
    name: str,
    pixels: np.ndarray,
    spacing: tuple[float, float] | None,
    origin: tuple[float, float],
    downscale: int = 1,
    file_size: tuple[int, int] | None = None,
) -> Radiograph:
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    _check_size(name, pixels.shape[1], pixels.shape[0])
    if not np.isfinite(pixels).all():
        raise ImageError(f"{name}: contains NaN or infinite pixel values")
    logger.debug("%s: %d x %d pixels (1/%d), spacing %s mm", name, pixels.shape[1], pixels.shape[0], downscale,
                 spacing)
    return Radiograph(pixels=pixels, spacing=spacing, origin=origin, source=name, downscale=downscale,
                      file_size=file_size)


def _valid_spacing(name: str, values: Any, what: str) -> tuple[float, float] | None:
    """A (x, y) pair of positive finite floats, or None (with a warning) for anything else."""
    try:
        x, y = (float(v) for v in values)
    except (TypeError, ValueError):
        logger.warning("%s: ignoring unreadable %s %r", name, what, values)
        return None
    if not (np.isfinite(x) and np.isfinite(y) and x > 0 and y > 0):
        logger.warning("%s: ignoring implausible %s (%g, %g)", name, what, x, y)
        return None
    return (x, y)


def _load_pil(source: Path | io.BytesIO, name: str, fmt: str, min_rows: int | None = None) -> Radiograph:
    try:
        with Image.open(source, formats=[fmt]) as picture:
            file_size = picture.size
            _check_size(name, *file_size)
            # A camera JPEG may carry a preview as a second (MPO) frame; the first is the picture itself.
            frames = 1 if fmt == "JPEG" else getattr(picture, "n_frames", 1)
            if frames > 1:
                raise ImageError(f"{name}: is 3D ({frames} frames); expected a single 2D radiograph")
            downscale = _draft(picture, min_rows) if fmt == "JPEG" and min_rows else 1
            picture.load()
            pixels = _pil_pixels(picture, name)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: is too large to load safely: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: is corrupt or truncated: not a readable {fmt} file") from exc
    except _DECODE_ERRORS as exc:
        raise ImageError(f"{name}: is corrupt or truncated: {_reason(exc)}") from exc
    # Pillow formats carry no trustworthy pixel size: their dpi is usually a screen default.
    return _finish(name, pixels, None, (0.0, 0.0), downscale, file_size)


def _draft(picture: Image.Image, min_rows: int) -> int:
    """Have the JPEG decoder scale by the largest of 1/2, 1/4, 1/8 that keeps `min_rows` rows (and enough
    columns); the factor chosen, 1 for none."""
    width, height = picture.size
    if height < 2 * min_rows:
        return 1
    picture.draft(picture.mode, (MIN_SIZE, min_rows))
    return round(height / picture.size[1])


def _pil_pixels(picture: Image.Image, name: str) -> np.ndarray:
    mode = picture.mode
    if mode in _ALPHA_MODES:
        raise ImageError(f"{name}: has an alpha channel (mode {mode}); save the radiograph without it")
    if mode in ("1", "P"):
        picture = picture.convert("L")
    elif mode in _TO_RGB_MODES:
        picture = picture.convert("RGB")
    pixels = np.asarray(picture)
    if pixels.ndim == 3:
        return _luminance(pixels)
    return pixels


def _read_all(path: str | os.PathLike, name: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ImageError(f"{name}: cannot be read: {exc.strerror or exc}") from None


def _reason(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


def _load_dicom(source: Path | io.BytesIO, name: str, force: bool) -> Radiograph:
    # Imported here so that the Pillow formats work, and this module imports, without pydicom.
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        dataset = dcmread(source, force=force)
    except InvalidDicomError as exc:
        raise ImageError(f"{name}: is not a valid DICOM file: {_reason(exc)}") from exc
    except _DECODE_ERRORS as exc:
        raise ImageError(f"{name}: is corrupt or truncated DICOM: {_reason(exc)}") from exc
    try:
        pixels = _dicom_pixels(dataset, name, force)
        spacing = _dicom_spacing(dataset, name)
    except _DECODE_ERRORS as exc:
        raise ImageError(f"{name}: cannot be read as DICOM: {_reason(exc)}") from exc
    return _finish(name, pixels, spacing, (0.0, 0.0))


def _pydicom_api() -> tuple[Callable, Callable, bool]:
    """apply_modality_lut, apply_voi_lut, and whether pixel_array already turns YBR into RGB (pydicom 3)."""
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut

        return apply_modality_lut, apply_voi_lut, True
    except ImportError:
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

        return apply_modality_lut, apply_voi_lut, False


def _dicom_pixels(dataset: Any, name: str, forced: bool) -> np.ndarray:
    meta = getattr(dataset, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if not any(keyword in dataset for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        if forced and syntax is None:
            raise ImageError(f"{name}: is not a supported image ({SUPPORTED})")
        modality = dataset.get("Modality", "unknown")
        raise ImageError(f"{name}: DICOM file has no pixel data (modality {modality})")
    if syntax is None:
        syntax = _assume_transfer_syntax(dataset)
    frames = int(dataset.get("NumberOfFrames") or 1)
    if frames > 1:
        raise ImageError(f"{name}: is 3D ({frames} frames); expected a single 2D radiograph")
    if "Rows" in dataset and "Columns" in dataset:
        _check_size(name, int(dataset.Columns), int(dataset.Rows))
    try:
        pixels = dataset.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        logger.debug("%s: pydicom cannot decode the pixel data: %s", name, exc)
        raise ImageError(
            f"{name}: pixel data in transfer syntax {syntax.name} ({syntax}) cannot be decoded here; "
            "convert it to uncompressed DICOM first (e.g. gdcmconv --raw)"
        ) from exc

    apply_modality_lut, apply_voi_lut, ybr_is_rgb = _pydicom_api()
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if int(dataset.get("SamplesPerPixel") or 1) > 1:
        if pixels.ndim != 3:
            raise ImageError(f"{name}: is 3D ({pixels.shape[0]} frames); expected a single 2D radiograph")
        if photometric.startswith("YBR") and not ybr_is_rgb:
            return pixels[..., 0]  # the Y channel is the luminance already
        return _luminance(pixels)
    if pixels.ndim != 2:
        raise ImageError(f"{name}: is 3D ({pixels.shape[0]} frames); expected a single 2D radiograph")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageError(f"{name}: photometric interpretation {photometric} is not supported")
    pixels = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)
    pixels = _apply_window(pixels, dataset, name, apply_voi_lut)
    if photometric == "MONOCHROME1":
        # Mirror within the image's own range so that bone is bright, as in MONOCHROME2.
        pixels = (pixels.max() + pixels.min()) - pixels
    return pixels


def _assume_transfer_syntax(dataset: Any) -> Any:
    """A preamble-less file has no meta header: record the little-endian encoding it was read with."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    encoding = getattr(dataset, "original_encoding", None)  # pydicom 3
    implicit = encoding[0] if encoding else getattr(dataset, "read_implicit_vr", True)
    syntax = ImplicitVRLittleEndian if implicit in (True, None) else ExplicitVRLittleEndian
    if getattr(dataset, "file_meta", None) is None:
        dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = syntax
    return syntax


def _apply_window(pixels: np.ndarray, dataset: Any, name: str, apply_voi_lut: Callable) -> np.ndarray:
    """The VOI window or LUT the modality chose, as floats; a broken one is skipped rather than fatal."""
    windowed = "WindowCenter" in dataset and "WindowWidth" in dataset
    if not (windowed or dataset.get("VOILUTSequence")):
        return pixels
    try:
        return np.asarray(apply_voi_lut(pixels, dataset, index=0), dtype=np.float64)
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        logger.warning("%s: ignoring the unusable VOI window: %s", name, _reason(exc))
        return pixels


def _dicom_spacing(dataset: Any, name: str) -> tuple[float, float] | None:
    """PixelSpacing, else ImagerPixelSpacing; DICOM stores (row, column), returned as (x, y)."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = dataset.get(keyword)
        if value is None or value == "":
            continue
        try:
            row, column = value
        except (TypeError, ValueError):
            logger.warning("%s: ignoring %s %r (expected two values)", name, keyword, value)
            continue
        spacing = _valid_spacing(name, (column, row), keyword)
        if spacing is not None:
            return spacing
    return None


def _load_sitk_bytes(data: bytes, name: str, suffix: str, io_name: str) -> Radiograph:
    with tempfile.TemporaryDirectory(prefix="spinecascade-") as directory:
        path = Path(directory) / f"image{suffix}"
        path.write_bytes(data)
        return _load_sitk(path, name, io_name)


def _load_sitk(path: Path, name: str, io_name: str) -> Radiograph:
    # Imported here: SimpleITK is heavy, and only NRRD and NIfTI need it.
    import SimpleITK as sitk

    fmt = "NRRD" if io_name == "NrrdImageIO" else "NIfTI"
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO(io_name)
    try:
        reader.ReadImageInformation()
        size = reader.GetSize()
        components = reader.GetNumberOfComponents()
        x_axis, y_axis = _plane_axes(name, size)
        _check_size(name, size[x_axis], size[y_axis])
        if components not in (1, 3):
            raise ImageError(f"{name}: has {components} components per pixel; expected grayscale or RGB")
        image = reader.Execute()
    except _DECODE_ERRORS as exc:
        reason = _sitk_reason(exc).replace(str(path), name)
        raise ImageError(f"{name}: cannot be read as {fmt}: {reason}") from exc
    pixels = sitk.GetArrayFromImage(image)
    if np.iscomplexobj(pixels):
        raise ImageError(f"{name}: has complex pixel values; expected a real-valued radiograph")
    pixels = pixels.reshape(size[y_axis], size[x_axis], *((components,) if components > 1 else ()))
    if components > 1:
        pixels = _luminance(pixels)
    spacing, origin = image.GetSpacing(), image.GetOrigin()
    return _finish(
        name,
        pixels,
        _valid_spacing(name, (spacing[x_axis], spacing[y_axis]), "spacing"),
        (float(origin[x_axis]), float(origin[y_axis])),
    )


def _plane_axes(name: str, size: tuple[int, ...]) -> tuple[int, int]:
    """The two image axes (ITK order: x first) once single-slice axes are squeezed out."""
    kept = [axis for axis, n in enumerate(size) if n > 1]
    if len(kept) > 2:
        slices = int(np.prod([size[axis] for axis in kept[2:]]))
        raise ImageError(
            f"{name}: is a 3D volume ({slices} slices of {size[kept[0]]} x {size[kept[1]]}); "
            "expected a single 2D radiograph"
        )
    if len(kept) == 2:
        return kept[0], kept[1]
    return 0, 1  # a line or a single pixel: the size check rejects it with a clear message


def _sitk_reason(exc: BaseException) -> str:
    """The ITK error line without the C++ source location and object address."""
    match = re.search(r"ERROR: \w+\(0x[0-9a-fA-F]+\): (.*)", str(exc), re.DOTALL)
    return " ".join((match.group(1) if match else _reason(exc)).split())
