"""A radiograph as a DICOM Digital X-Ray image (DX, for presentation), for loading test films into a PACS.

The pixels are stored as they are (8 or 16 bit, MONOCHROME2, uncompressed) with the given pixel spacing as both
ImagerPixelSpacing and PixelSpacing, so that spinecascade's loader and 3D Slicer place the film in millimetres.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def dx_dataset(pixels: np.ndarray, spacing_mm: float, *, patient_id: str, patient_name: str,
               study_uid: str | None = None, description: str = "AP spine") -> Dataset:
    """A DX dataset holding `pixels` (2-D, uint8 or uint16), in a new study unless `study_uid` is given."""
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected a 2-D uint8 or uint16 image, got {pixels.dtype} {pixels.shape}")
    now = datetime.datetime.now()
    bits = pixels.dtype.itemsize * 8
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = DX_FOR_PRESENTATION, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid or generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient_name, patient_id, "", "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "", "", "1"
    ds.StudyDescription, ds.SeriesDescription = "Spine radiograph", description
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "DX", 1, 1
    ds.Manufacturer, ds.PresentationIntentType = "SpineCascade test film", "FOR PRESENTATION"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.PatientOrientation, ds.ViewPosition, ds.ImageLaterality = ["L", "F"], "AP", "U"
    ds.BodyPartExamined, ds.PositionerType, ds.AcquisitionContextSequence = "SPINE", "", []
    ds.ViewCodeSequence = [_code("399348003", "SCT", "antero-posterior")]
    ds.AnatomicRegionSequence = [_code("421060004", "SCT", "Spine")]
    ds.ImagerPixelSpacing = ds.PixelSpacing = [spacing_mm, spacing_mm]
    ds.DetectorType, ds.BurnedInAnnotation, ds.LossyImageCompression = "DIRECT", "NO", "00"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LIN", 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.WindowCenter, ds.WindowWidth = float(2 ** (bits - 1)), float(2**bits)
    ds.PresentationLUTShape = "IDENTITY"
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def write_dx(path: str | Path, dataset: Dataset) -> None:
    dataset.save_as(str(path), write_like_original=False)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item
