"""Image loading: every supported format, its geometry, and a clear ImageError for every bad file."""

from __future__ import annotations

import contextlib
import gzip
import io
import struct
import zlib

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from spinecascade.errors import ImageError
from spinecascade.io.images import (
    MAX_PIXELS,
    Radiograph,
    load_image,
    load_image_bytes,
    save_image,
)

CR = "1.2.840.10008.5.1.4.1.1.1"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"

PYDICOM_3 = int(pydicom.__version__.split(".")[0]) >= 3

RNG = np.random.default_rng(7)
GRAY8 = RNG.integers(0, 256, size=(40, 32), dtype=np.uint8)
GRAY16 = RNG.integers(0, 60000, size=(40, 32), dtype=np.uint16)
RGB8 = RNG.integers(0, 256, size=(40, 32, 3), dtype=np.uint8)


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


@contextlib.contextmanager
def raises_for(name, match: str):
    """pytest.raises(ImageError) that also checks the message starts with the file name."""
    with pytest.raises(ImageError, match=match) as info:
        yield info
    assert str(info.value).startswith(str(name)), str(info.value)


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    picture = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_dicom(
    path,
    pixels: np.ndarray,
    sop_class: str = CR,
    photometric: str = "MONOCHROME2",
    transfer_syntax: str = ExplicitVRLittleEndian,
    pixel_data: bytes | None = None,
    **elements,
) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = {CR: "CR", DX: "DX"}.get(sop_class, "OT")
    colour = photometric in ("RGB", "YBR_FULL")
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.tobytes() if pixel_data is None else pixel_data
    ds["PixelData"].VR = "OW" if pixel_data is None else "OB"
    if PYDICOM_3:
        pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    else:  # pydicom 2 encodes by these flags rather than by the transfer syntax
        ds.is_little_endian, ds.is_implicit_VR = True, False
        pydicom.dcmwrite(str(path), ds, write_like_original=False)


def strip_preamble_and_meta(data: bytes) -> bytes:
    """The bare data set: no preamble, no "DICM", no group 0002 (as some old modalities write)."""
    assert data[128:132] == b"DICM"
    group_length = struct.unpack("<I", data[140:144])[0]
    return data[144 + group_length :]


def write_sitk(path, array: np.ndarray, spacing, origin, vector: bool = False) -> None:
    image = sitk.GetImageFromArray(array, isVector=vector)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))


def patch_png_size(data: bytes, width: int, height: int) -> bytes:
    assert data[12:16] == b"IHDR"
    ihdr = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]


# --- Pillow formats -------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_8bit_lossless_formats_are_exact(tmp_path, suffix):
    path = tmp_path / f"film{suffix}"
    Image.fromarray(GRAY8).save(path)
    image = load_image(path)
    assert image.pixels.dtype == np.float32 and image.pixels.flags.c_contiguous
    assert (image.width, image.height) == (32, 40)
    np.testing.assert_array_equal(image.pixels, GRAY8)
    assert image.spacing is None and image.origin == (0.0, 0.0)
    assert image.source == str(path)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_formats_keep_full_range(tmp_path, suffix):
    path = tmp_path / f"film16{suffix}"
    Image.fromarray(GRAY16).save(path)
    np.testing.assert_array_equal(load_image(path).pixels, GRAY16)


def test_16bit_big_endian_tiff(tmp_path):
    path = tmp_path / "big.tif"
    Image.fromarray(GRAY16.astype(">u2")).save(path)
    np.testing.assert_array_equal(load_image(path).pixels, GRAY16)


def test_float_tiff(tmp_path):
    path = tmp_path / "float.tif"
    values = GRAY16.astype(np.float32) / 7.0
    Image.fromarray(values).save(path)
    np.testing.assert_array_equal(load_image(path).pixels, values)


def test_grayscale_jpeg(tmp_path):
    path = tmp_path / "film.jpg"
    smooth = np.tile(np.linspace(0, 255, 32), (40, 1)).astype(np.uint8)
    path.write_bytes(jpeg_bytes(smooth))
    assert np.abs(load_image(path).pixels - smooth).max() < 8


def test_a_large_jpeg_is_decoded_at_the_smallest_scale_that_keeps_the_rows_asked_for(tmp_path):
    path = tmp_path / "film.jpg"
    film = np.tile(np.linspace(0, 255, 80), (400, 1)).astype(np.uint8)
    path.write_bytes(jpeg_bytes(film))
    reduced = load_image(path, min_rows=100)
    assert (reduced.downscale, reduced.pixels.shape, reduced.size_in_file) == (4, (100, 20), (80, 400))
    block_means = film.reshape(100, 4, 20, 4).mean(axis=(1, 3))
    assert np.abs(reduced.pixels - block_means).max() < 8
    np.testing.assert_allclose(reduced.to_file([[0.0, 0.0], [19.0, 99.0]]), [[1.5, 1.5], [77.5, 397.5]])
    assert load_image(path, min_rows=150).downscale == 2
    full = load_image(path, min_rows=250)  # a film under twice the rows asked for is decoded whole
    assert (full.downscale, full.pixels.shape, full.size_in_file) == (1, (400, 80), (80, 400))
    png = tmp_path / "film.png"
    png.write_bytes(png_bytes(film))
    assert load_image(png, min_rows=100).pixels.shape == (400, 80)  # only JPEG has reduced decoding


def test_rgb_is_converted_to_luminance(tmp_path):
    path = tmp_path / "colour.png"
    path.write_bytes(png_bytes(RGB8))
    image = load_image(path)
    assert image.pixels.shape == (40, 32)
    np.testing.assert_allclose(image.pixels, luminance(RGB8), atol=1e-3)


def test_rgb_jpeg_of_gray_film_loads(tmp_path):
    path = tmp_path / "colour.jpg"
    smooth = np.tile(np.linspace(0, 255, 32), (40, 1)).astype(np.uint8)
    path.write_bytes(jpeg_bytes(np.stack([smooth] * 3, axis=-1)))
    assert np.abs(load_image(path).pixels - smooth).max() < 8


def test_palette_png_is_converted_to_gray(tmp_path):
    path = tmp_path / "palette.png"
    Image.fromarray(GRAY8).convert("P").save(path)
    image = load_image(path)
    np.testing.assert_array_equal(image.pixels, np.asarray(Image.open(path).convert("L")))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_channel_is_rejected(tmp_path, mode):
    path = tmp_path / f"{mode}.png"
    path.write_bytes(png_bytes(RGB8, mode))
    with raises_for(path, "has an alpha channel"):
        load_image(path)


def test_multi_frame_tiff_is_rejected(tmp_path):
    path = tmp_path / "stack.tif"
    frames = [Image.fromarray(GRAY8) for _ in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with raises_for(path, r"is 3D \(3 frames\)"):
        load_image(path)


def test_truncated_jpeg(tmp_path):
    path = tmp_path / "cut.jpg"
    data = jpeg_bytes(RNG.integers(0, 256, size=(128, 128), dtype=np.uint8))
    path.write_bytes(data[: len(data) // 2])
    with raises_for(path, "is corrupt or truncated"):
        load_image(path)


def test_png_claiming_a_huge_size_is_rejected_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(patch_png_size(png_bytes(GRAY8), 100_000, 100_000))
    with raises_for(path, "too large.*10000000000"):
        load_image(path)


def test_png_just_over_our_limit_names_its_size(tmp_path):
    path = tmp_path / "large.png"
    width, height = 9_000, MAX_PIXELS // 9_000 + 1
    path.write_bytes(patch_png_size(png_bytes(GRAY8), width, height))
    with raises_for(path, f"{width} x {height} pixels"):
        load_image(path)


def test_tiny_image_is_rejected(tmp_path):
    path = tmp_path / "tiny.png"
    Image.fromarray(GRAY8[:8, :20]).save(path)
    with raises_for(path, r"20 x 8 pixels; at least 16 x 16"):
        load_image(path)


def test_constant_image_is_fine(tmp_path):
    path = tmp_path / "flat.png"
    Image.fromarray(np.full((20, 20), 77, np.uint8)).save(path)
    image = load_image(path)
    assert np.all(image.pixels == 77)
    assert np.all(image.to_uint8() == 0)


# --- DICOM ----------------------------------------------------------------------------------------------


def test_dicom_cr_monochrome2_with_pixel_spacing(tmp_path):
    path = tmp_path / "cr.dcm"
    write_dicom(path, GRAY16, PixelSpacing=[0.1, 0.2])
    image = load_image(path)
    np.testing.assert_array_equal(image.pixels, GRAY16)
    assert image.pixels.dtype == np.float32
    assert image.spacing == (0.2, 0.1)  # DICOM (row, column) becomes (x, y)


def test_dicom_dx_monochrome1_is_inverted(tmp_path):
    path = tmp_path / "dx.dcm"
    write_dicom(path, GRAY16, sop_class=DX, photometric="MONOCHROME1")
    pixels = load_image(path).pixels
    expected = float(GRAY16.max()) + float(GRAY16.min()) - GRAY16.astype(np.float64)
    np.testing.assert_array_equal(pixels, expected)
    assert pixels.flat[GRAY16.argmax()] == GRAY16.min()


def test_dicom_imager_pixel_spacing_is_the_fallback(tmp_path):
    path = tmp_path / "imager.dcm"
    write_dicom(path, GRAY16, sop_class=DX, ImagerPixelSpacing=[0.15, 0.125])
    assert load_image(path).spacing == (0.125, 0.15)


def test_dicom_malformed_pixel_spacing_falls_back(tmp_path):
    path = tmp_path / "bad_spacing.dcm"
    write_dicom(path, GRAY16, PixelSpacing=[0.0, 0.0], ImagerPixelSpacing=[0.2, 0.3])
    assert load_image(path).spacing == (0.3, 0.2)


def test_dicom_rescale_slope_and_intercept(tmp_path):
    path = tmp_path / "rescale.dcm"
    write_dicom(path, GRAY16, RescaleSlope=2, RescaleIntercept=-100)
    np.testing.assert_allclose(load_image(path).pixels, 2.0 * GRAY16 - 100.0)


def test_dicom_voi_window_gives_floats_and_uses_the_first_window(tmp_path):
    path = tmp_path / "window.dcm"
    ramp = np.tile(np.arange(0, 1000, 25, dtype=np.uint16), (20, 1))  # 20 x 40
    write_dicom(path, ramp, WindowCenter=[500, 100], WindowWidth=[200, 50])
    pixels = load_image(path).pixels.astype(np.float64)
    # DICOM LINEAR window (PS3.3 C.11.2.1.2.1) into the 16-bit output range.
    centre, width = 500 - 0.5, 200 - 1
    expected = np.clip(((ramp - centre) / width + 0.5) * 65535, 0, 65535)
    expected[ramp <= centre - width / 2] = 0
    expected[ramp > centre + width / 2] = 65535
    np.testing.assert_allclose(pixels, expected, rtol=1e-6, atol=0.5)
    assert np.abs(pixels - np.round(pixels)).max() > 0.01  # genuinely fractional, not truncated to integers


def test_dicom_secondary_capture_rgb(tmp_path):
    path = tmp_path / "sc.dcm"
    write_dicom(path, RGB8, sop_class=SECONDARY_CAPTURE, photometric="RGB")
    image = load_image(path)
    np.testing.assert_allclose(image.pixels, luminance(RGB8), atol=1e-3)
    assert image.spacing is None


def test_dicom_ybr_colour_gives_luminance(tmp_path):
    try:
        from pydicom.pixels import convert_color_space
    except ImportError:
        from pydicom.pixel_data_handlers.util import convert_color_space
    path = tmp_path / "ybr.dcm"
    write_dicom(path, convert_color_space(RGB8, "RGB", "YBR_FULL"), SECONDARY_CAPTURE, photometric="YBR_FULL")
    np.testing.assert_allclose(load_image(path).pixels, luminance(RGB8), atol=1.5)


def test_dicom_multi_frame_is_rejected(tmp_path):
    path = tmp_path / "frames.dcm"
    write_dicom(path, np.stack([GRAY16] * 3), NumberOfFrames=3)
    with raises_for(path, r"is 3D \(3 frames\)"):
        load_image(path)


def test_dicom_without_pixel_data(tmp_path):
    path = tmp_path / "report.dcm"
    write_dicom(path, GRAY16)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with raises_for(path, "no pixel data"):
        load_image(path)


def test_dicom_compressed_without_decoder_names_transfer_syntax(tmp_path):
    path = tmp_path / "lossless.dcm"
    fake_jpeg = encapsulate([b"\xff\xd8\xff\xc3not really a JPEG"])
    write_dicom(path, GRAY16, transfer_syntax=JPEG_LOSSLESS, pixel_data=fake_jpeg)
    with raises_for(path, f"transfer syntax JPEG Lossless.*{JPEG_LOSSLESS}"):
        load_image(path)


def test_dicom_without_preamble_is_read(tmp_path):
    path = tmp_path / "old_modality.img"
    write_dicom(path, GRAY16, PixelSpacing=[0.1, 0.1])
    path.write_bytes(strip_preamble_and_meta(path.read_bytes()))
    image = load_image(path)
    np.testing.assert_array_equal(image.pixels, GRAY16)
    assert image.spacing == (0.1, 0.1)


def test_truncated_dicom(tmp_path):
    path = tmp_path / "cut.dcm"
    write_dicom(path, GRAY16)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with raises_for(path, "cut.dcm: "):
        load_image(path)


# --- NRRD and NIfTI -------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nrrd", ".nii", ".nii.gz"])
def test_2d_volume_formats_keep_spacing_and_origin(tmp_path, suffix):
    path = tmp_path / f"film{suffix}"
    write_sitk(path, GRAY16.astype(np.int16), spacing=(0.2, 0.3), origin=(5.0, 7.0))
    image = load_image(path)
    np.testing.assert_array_equal(image.pixels, GRAY16.astype(np.int16))
    assert image.spacing == pytest.approx((0.2, 0.3))
    assert image.origin == pytest.approx((5.0, 7.0))


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_single_slice_3d_is_squeezed(tmp_path, suffix):
    path = tmp_path / f"slice{suffix}"
    write_sitk(path, GRAY16[None].astype(np.float32), spacing=(0.2, 0.3, 4.0), origin=(5.0, 7.0, 9.0))
    image = load_image(path)
    np.testing.assert_array_equal(image.pixels, GRAY16)
    assert image.spacing == pytest.approx((0.2, 0.3))
    assert image.origin == pytest.approx((5.0, 7.0))


def test_single_slice_in_the_middle_axis_is_squeezed(tmp_path):
    path = tmp_path / "coronal.nrrd"
    write_sitk(path, GRAY16[:, None, :], spacing=(0.2, 4.0, 0.3), origin=(5.0, 8.0, 7.0))
    image = load_image(path)
    np.testing.assert_array_equal(image.pixels, GRAY16)
    assert image.spacing == pytest.approx((0.2, 0.3))
    assert image.origin == pytest.approx((5.0, 7.0))


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_real_volume_is_rejected(tmp_path, suffix):
    path = tmp_path / f"volume{suffix}"
    write_sitk(path, np.stack([GRAY16] * 3), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    with raises_for(path, r"is a 3D volume \(3 slices"):
        load_image(path)


def test_rgb_nrrd_is_converted_to_luminance(tmp_path):
    path = tmp_path / "colour.nrrd"
    write_sitk(path, RGB8, spacing=(0.5, 0.5), origin=(0.0, 0.0), vector=True)
    np.testing.assert_allclose(load_image(path).pixels, luminance(RGB8), atol=1e-3)


def test_two_component_nrrd_is_rejected(tmp_path):
    path = tmp_path / "vector.nrrd"
    write_sitk(path, RGB8[..., :2], spacing=(0.5, 0.5), origin=(0.0, 0.0), vector=True)
    with raises_for(path, "has 2 components per pixel"):
        load_image(path)


def test_corrupt_nrrd(tmp_path):
    path = tmp_path / "broken.nrrd"
    path.write_bytes(b"NRRD0004\ntype: what\ndimension: 2\n\n\x00\x01")
    with raises_for(path, "cannot be read as NRRD"):
        load_image(path)


# --- dispatch and file errors ---------------------------------------------------------------------------


def test_format_comes_from_content_not_extension(tmp_path):
    png = tmp_path / "really_png.jpg"
    png.write_bytes(png_bytes(GRAY8))
    np.testing.assert_array_equal(load_image(png).pixels, GRAY8)
    dicom = tmp_path / "really_dicom.png"
    write_dicom(dicom, GRAY16, PixelSpacing=[0.1, 0.1])
    assert load_image(dicom).spacing == (0.1, 0.1)
    nifti = tmp_path / "really_nifti.dat"
    write_sitk(tmp_path / "source.nii.gz", GRAY16.astype(np.int16), spacing=(0.2, 0.3), origin=(1.0, 2.0))
    nifti.write_bytes((tmp_path / "source.nii.gz").read_bytes())
    assert load_image(nifti).spacing == pytest.approx((0.2, 0.3))


def test_missing_file(tmp_path):
    path = tmp_path / "absent.png"
    with raises_for(path, "no such file"):
        load_image(path)


def test_directory(tmp_path):
    with raises_for(tmp_path, "is a directory"):
        load_image(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.touch()
    with raises_for(path, "is empty"):
        load_image(path)


def test_png_with_a_broken_header(tmp_path):
    path = tmp_path / "header.png"
    path.write_bytes(png_bytes(GRAY8)[:20])
    with raises_for(path, "is corrupt or truncated"):
        load_image(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.jpg"
    path.write_bytes(b"\x00\x01" + RNG.integers(0, 256, size=1000, dtype=np.uint8).tobytes())
    with raises_for(path, r"is not a supported image \(JPEG, PNG, BMP, TIFF, DICOM, NRRD, NIfTI\)"):
        load_image(path)


def test_gzip_that_is_not_nifti(tmp_path):
    path = tmp_path / "archive.nii.gz"
    path.write_bytes(gzip.compress(b"just text, not a header"))
    with raises_for(path, "is not a supported image"):
        load_image(path)


# --- bytes ----------------------------------------------------------------------------------------------


def test_bytes_sniff_every_family(tmp_path):
    np.testing.assert_array_equal(load_image_bytes(png_bytes(GRAY8), "a.png").pixels, GRAY8)
    write_dicom(tmp_path / "b.dcm", GRAY16, PixelSpacing=[0.1, 0.2])
    upload = load_image_bytes((tmp_path / "b.dcm").read_bytes(), "b.dcm")
    assert upload.spacing == (0.2, 0.1) and upload.source == "b.dcm"
    for suffix in (".nrrd", ".nii", ".nii.gz"):
        write_sitk(tmp_path / f"c{suffix}", GRAY16.astype(np.int16), spacing=(0.2, 0.3), origin=(5.0, 7.0))
        image = load_image_bytes((tmp_path / f"c{suffix}").read_bytes())
        np.testing.assert_array_equal(image.pixels, GRAY16.astype(np.int16))
        assert image.origin == pytest.approx((5.0, 7.0))


def test_bytes_errors_name_the_upload():
    with raises_for("scan.png", "is empty"):
        load_image_bytes(b"", "scan.png")
    with raises_for("<upload>", "is not a supported image"):
        load_image_bytes(b"hello world, this is text")
    data = jpeg_bytes(RNG.integers(0, 256, size=(128, 128), dtype=np.uint8))
    with raises_for("half.jpg", "is corrupt or truncated"):
        load_image_bytes(data[: len(data) // 2], "half.jpg")


# --- Radiograph and save_image --------------------------------------------------------------------------


def test_radiograph_coerces_and_validates():
    image = Radiograph(np.asfortranarray(GRAY16), spacing=(1, 2))
    assert image.pixels.dtype == np.float32 and image.pixels.flags.c_contiguous
    assert image.spacing == (1.0, 2.0) and image.origin == (0.0, 0.0)
    with pytest.raises(ImageError, match="expected a 2D image"):
        Radiograph(RGB8, source="x")


def test_to_uint8_ignores_outliers():
    pixels = np.tile(np.linspace(100.0, 200.0, 100), (100, 1))
    pixels[0, 0] = 1e6
    display = Radiograph(pixels).to_uint8()
    assert display.dtype == np.uint8 and display.shape == (100, 100)
    assert display[50, 0] == 0 and display[50, -1] == 255 and 120 < display[50, 50] < 135


@pytest.mark.parametrize(
    ("name", "array"),
    [("a.png", GRAY8), ("b.png", GRAY16), ("big_endian.png", GRAY16.astype(">u2")), ("c.jpg", GRAY8)],
)
def test_save_image_round_trip(tmp_path, name, array):
    path = tmp_path / name
    save_image(path, array)
    loaded = load_image(path).pixels
    if name.endswith(".jpg"):
        assert np.abs(loaded - array).mean() < 10
    else:
        np.testing.assert_array_equal(loaded, array)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_save_image_rejects_what_it_cannot_write(tmp_path):
    with raises_for(tmp_path / "x.jpg", "JPEG cannot hold 16-bit"):
        save_image(tmp_path / "x.jpg", GRAY16)
    with raises_for(tmp_path / "x.gif", "cannot save as '.gif'"):
        save_image(tmp_path / "x.gif", GRAY8)
    with pytest.raises(ValueError, match="uint8 or uint16"):
        save_image(tmp_path / "x.png", GRAY8.astype(np.float32))
    with pytest.raises(ValueError, match="uint8 or uint16"):
        save_image(tmp_path / "x.png", RGB8)
    assert list(tmp_path.iterdir()) == []
