"""Landmark labels as DICOM Comprehensive Structured Reports (TID 1500 measurement reports), and back.

Writing (highdicom, imported only here) references the film (study, series, SOP instance) and holds:
- one planar ROI group (TID 1410) per corner, 68 in all: tracking identifier "T1 top-left", finding type the
  corner, finding site the vertebra, and the corner as an SCOORD POINT (column, row) of the film;
- one measurement group (TID 1501) per Cobb angle (PT, MT, TL): the angle in degrees and its upper and lower
  end vertebrae as qualitative evaluations;
- a summary group: the curve type (S or C), whether a person corrected the points, the review flag with its
  reasons and flagged landmarks when the label has one, and the model version as algorithm identification.

DICOM puts the centre of the top-left pixel at (0.5, 0.5); our labels put it at (0, 0) (docs/label-format.md),
so 0.5 is added on writing and taken off on reading. GraphicData is float32: up to 8192 px a coordinate comes
back within 2.5e-4 px. The vertebra levels, corners, Cobb angles and curve types have no codes in the standard
code sets shipped with pydicom, so they use the private coding scheme PRIVATE_SCHEME; Yes/No, degrees and the
report structure use SNOMED CT, UCUM and DCM codes.

Reading needs only pydicom, so `spinecascade convert` and training read reports without highdicom.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import spinecascade
from spinecascade.errors import LabelError
from spinecascade.io.atomic import atomic_path
from spinecascade.io.labels import LandmarkLabel
from spinecascade.landmarks import N_CORNERS, N_POINTS, VERTEBRAE, point_index, point_names, validate
from spinecascade.measurement.cobb import ANGLE_NAMES, cobb_angles

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SERIES_DESCRIPTION = "SpineCascade landmarks"
MANUFACTURER = "SpineCascade"
PRIVATE_SCHEME = "99SPINECASCADE"
PIXEL_CENTRE = 0.5  # DICOM's coordinate of the top-left pixel's centre; ours is 0

# Concept names of the report structure (DCM, SCT) that the reader looks for.
_IMAGING_MEASUREMENTS = "126010"
_MEASUREMENT_GROUP = "125007"
_TRACKING_IDENTIFIER = "112039"
_IMAGE_REGION = "111030"
_ALGORITHM_VERSION = "111003"
_YES, _NO = "373066001", "373067005"

_ANGLE_MEANINGS = {"PT": "Proximal thoracic Cobb angle", "MT": "Main thoracic Cobb angle",
                   "TL": "Thoracolumbar/lumbar Cobb angle"}
_SUMMARY = "Spine"
_PROJECTION = ("CR", "DX", "IO", "MG", "PX", "RF", "RG", "XA")
_REVIEW_REASON = ("review-reason", "Reason for review")
_FLAGGED = ("flagged", "Landmark flagged for review")


@dataclass
class ReportedLabel:
    """A label read from a report, with the film it references and the report's own identity."""

    label: LandmarkLabel
    study_uid: str
    series_uid: str  # of the film
    sop_uid: str  # of the film
    sr_uid: str
    sr_series_uid: str
    created: str  # ContentDate + ContentTime, sortable


def private(value: str, meaning: str) -> Any:
    from pydicom.sr.coding import Code

    return Code(value, PRIVATE_SCHEME, meaning)


def vertebra_code(name: str) -> Any:
    return private(name, f"{name} vertebra")


def corner_code(corner: str) -> Any:
    return private(f"corner-{corner}", f"{corner.capitalize()} corner of the vertebral body")


def person_corrected(label: LandmarkLabel) -> bool:
    """Whether a person moved points: the Slicer module's `review` block lists them (`moved_points`); a report
    read back says `corrected`. A prediction, or a label without a review block, counts as not corrected."""
    review = label.extra.get("review")
    if not isinstance(review, dict):
        return False
    if isinstance(review.get("corrected"), bool):
        return review["corrected"]
    return bool(review.get("moved_points"))


def model_version(label: LandmarkLabel) -> str | None:
    """The version of the model that predicted the points (a prediction's `model`, or the one a review names)."""
    for model in (label.extra.get("model"), (label.extra.get("review") or {}).get("model")):
        if isinstance(model, dict) and isinstance(model.get("version"), str) and model["version"]:
            return model["version"]
    return None


# ---------------------------------------------------------------- writing


def build_sr(
    label: LandmarkLabel,
    film: Any,
    *,
    previous: Sequence[Any] = (),
    series_uid: str | None = None,
    series_number: int = 9001,
    created: datetime.datetime | None = None,
) -> Any:
    """The report for `label` on `film` (a pydicom Dataset; pixel data not needed), naming `previous` versions."""
    import highdicom as hd
    from highdicom.coding_schemes import CodingSchemeIdentificationItem
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    film = _with_type2_attributes(film)
    rows, columns = int(film.Rows), int(film.Columns)
    landmarks = validate(label.landmarks, columns, rows, source="label")
    source = hd.sr.SourceImageForRegion(str(film.SOPClassUID), str(film.SOPInstanceUID))
    version = model_version(label)
    algorithm = hd.sr.AlgorithmIdentification("SpineCascade landmark model", version) if version else None
    groups: list[Any] = []
    for name, xy in zip(point_names(), landmarks.reshape(N_POINTS, 2)):
        vertebra, corner = name.split(" ", 1)
        region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POINT,
                                   graphic_data=np.array([xy + PIXEL_CENTRE], dtype=np.float64),
                                   source_image=source)
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=name),
            referenced_region=region, finding_type=corner_code(corner),
            finding_sites=[hd.sr.FindingSite(vertebra_code(vertebra))]))
    cobb = cobb_angles(landmarks, rows)
    for angle in cobb.angles:
        upper, lower = angle.end_vertebrae
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"{angle.name} Cobb angle"),
            algorithm_id=algorithm,
            finding_sites=[hd.sr.FindingSite(codes.SCT.Spine)],
            measurements=[hd.sr.Measurement(name=private(f"cobb-{angle.name}", _ANGLE_MEANINGS[angle.name]),
                                            value=round(angle.degrees, 6), unit=codes.UCUM.Degree)],
            qualitative_evaluations=[
                hd.sr.QualitativeEvaluation(private("upper-end", "Upper end vertebra"), vertebra_code(upper)),
                hd.sr.QualitativeEvaluation(private("lower-end", "Lower end vertebra"), vertebra_code(lower)),
            ]))
    groups.append(_summary_group(hd, codes, generate_uid(), label, cobb.s_shaped, algorithm))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=generate_uid(), name="SpineCascade", manufacturer_name=MANUFACTURER, model_name=version))),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
        referenced_images=[film] if _describable(film) else None,
    )
    sr = hd.sr.ComprehensiveSR(
        evidence=[film], content=report[0], series_instance_uid=series_uid or generate_uid(),
        series_number=series_number, sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, previous_versions=list(previous) or None,
        series_description=SERIES_DESCRIPTION, software_versions=spinecascade.__version__,
        coding_schemes=[CodingSchemeIdentificationItem(PRIVATE_SCHEME, name="SpineCascade landmarks and "
                                                          "Cobb angles", responsible_organization=MANUFACTURER)],
    )
    when = (created or datetime.datetime.now(datetime.timezone.utc)).astimezone(datetime.timezone.utc)
    sr.ContentDate, sr.ContentTime = when.strftime("%Y%m%d"), when.strftime("%H%M%S.%f")
    sr.TimezoneOffsetFromUTC = "+0000"
    return sr


def _with_type2_attributes(film: Any) -> Any:
    """A copy of the film's header with the patient and study attributes highdicom copies, empty where the film
    leaves them out (DICOM type 2: present, maybe empty)."""
    from pydicom.dataset import Dataset

    header = Dataset()
    header.update(film)  # a new element table: the caller's dataset stays as it is
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                    "StudyDate", "StudyTime", "ReferringPhysicianName"):
        if keyword not in header:
            setattr(header, keyword, "")
    return header


def _describable(film: Any) -> bool:
    """Whether highdicom can describe the film in the report's image library: for projection radiographs it
    needs the patient orientation and the imager pixel spacing, which some films lack (the film is referenced
    by the points and the evidence sequence either way)."""
    if str(film.get("Modality", "")) not in _PROJECTION:
        return True
    orientation = film.get("PatientOrientation")
    return bool(orientation and len(orientation) == 2 and all(orientation) and film.get("ImagerPixelSpacing"))


def _summary_group(hd: Any, codes: Any, uid: str, label: LandmarkLabel, s_shaped: bool, algorithm: Any) -> Any:
    def yes_no(value: bool) -> Any:
        return codes.SCT.Yes if value else codes.SCT.No

    evaluations = [
        hd.sr.QualitativeEvaluation(private("curve-type", "Curve type"),
                                    private("curve-S", "S-shaped curve") if s_shaped
                                    else private("curve-C", "C-shaped curve")),
        hd.sr.QualitativeEvaluation(private("corrected", "Landmarks corrected by a person"),
                                    yes_no(person_corrected(label))),
    ]
    quality = label.extra.get("quality")
    if isinstance(quality, dict) and isinstance(quality.get("review_needed"), bool):
        evaluations.append(hd.sr.QualitativeEvaluation(private("review-needed", "Review needed"),
                                                       yes_no(quality["review_needed"])))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier=_SUMMARY), algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(codes.SCT.Spine)], qualitative_evaluations=evaluations)
    if isinstance(quality, dict):
        items = group[0].ContentSequence
        for reason in quality.get("reasons") or []:
            items.append(hd.sr.TextContentItem(private(*_REVIEW_REASON), str(reason),
                                               relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
        for index in quality.get("flagged_landmarks") or []:
            if isinstance(index, int) and 0 <= index < N_POINTS:
                items.append(hd.sr.TextContentItem(private(*_FLAGGED), point_names()[index],
                                                   relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    return group


def write_sr(path: str | Path, label: LandmarkLabel, film: Any, previous: Sequence[Any] = ()) -> Any:
    """Write the report atomically; returns it."""
    sr = build_sr(label, film, previous=previous)
    with atomic_path(Path(path)) as temporary:
        sr.save_as(temporary, write_like_original=False)
    return sr


# ---------------------------------------------------------------- reading


def is_sr_file(path: str | Path) -> bool:
    """A DICOM file whose SOP class is Comprehensive SR (only the header is read)."""
    import pydicom

    try:
        with open(path, "rb") as handle:
            if handle.read(132)[128:] != b"DICM":
                return False
        meta = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except (OSError, pydicom.errors.InvalidDicomError):
        return False
    return str(meta.get("SOPClassUID", "")) == COMPREHENSIVE_SR


def read_sr(source: str | Path | Any) -> ReportedLabel:
    """The label a report holds (a path or a pydicom Dataset); LabelError names what is missing."""
    import pydicom

    name = str(source) if isinstance(source, (str, Path)) else "report"
    if isinstance(source, (str, Path)):
        try:
            dataset = pydicom.dcmread(source)
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise LabelError(f"{source}: not a readable DICOM file ({exc})") from None
    else:
        dataset = source
    if str(dataset.get("SOPClassUID", "")) != COMPREHENSIVE_SR:
        raise LabelError(f"{name}: not a Comprehensive SR (SOP class {dataset.get('SOPClassUID', 'missing')})")
    found: dict[str, tuple[float, float]] = {}
    film_sop = None
    summary: dict[str, Any] = {}
    angles: dict[str, dict[str, Any]] = {}
    for group in _groups(dataset):
        identifier = _text(group, _TRACKING_IDENTIFIER)
        region = _first(group, _IMAGE_REGION)
        if region is not None:
            point, film_sop = _point(region, identifier, name, film_sop)
            try:
                index = point_index(identifier or "")
            except LabelError:
                raise LabelError(f"{name}: image region named {identifier!r}, not a landmark") from None
            if point_names()[index] in found:
                raise LabelError(f"{name}: landmark {identifier!r} appears more than once")
            found[point_names()[index]] = point
        elif identifier and identifier.endswith(" Cobb angle") and identifier.split()[0] in ANGLE_NAMES:
            angles[identifier.split()[0]] = _angle(group, name)
        elif identifier == _SUMMARY:
            summary = _summary(group)
    missing = [n for n in point_names() if n not in found]
    if missing:
        raise LabelError(f"{name}: {len(missing)} of {N_POINTS} landmarks missing from the report, e.g. {missing[0]!r}")
    landmarks = np.array([found[n] for n in point_names()], dtype=np.float64).reshape(len(VERTEBRAE), N_CORNERS, 2)
    extra: dict[str, Any] = {}
    if angles:
        extra["cobb"] = {**angles, "curve": summary.get("curve")}
    if summary.get("version"):
        extra["model"] = {"version": summary["version"]}
    extra["review"] = {"corrected": bool(summary.get("corrected"))}
    if "review_needed" in summary:
        extra["quality"] = {"review_needed": summary["review_needed"], "reasons": summary["reasons"],
                            "flagged_landmarks": summary["flagged"]}
    film_series = _referenced_series(dataset, film_sop)
    extra["dicom"] = {"study": str(dataset.StudyInstanceUID), "series": film_series, "sop_instance": film_sop,
                      "report": str(dataset.SOPInstanceUID)}
    label = LandmarkLabel(landmarks=validate(landmarks, source=name), width=None, height=None, extra=extra)
    created = f"{dataset.get('ContentDate', '')}{dataset.get('ContentTime', '')}"
    return ReportedLabel(label, str(dataset.StudyInstanceUID), film_series, film_sop, str(dataset.SOPInstanceUID),
                         str(dataset.SeriesInstanceUID), created)


def _groups(dataset: Any) -> list[Any]:
    groups = []
    for item in dataset.get("ContentSequence", []):
        if _concept(item) == _IMAGING_MEASUREMENTS:
            groups += [g for g in item.get("ContentSequence", []) if _concept(g) == _MEASUREMENT_GROUP]
    return groups


def _concept(item: Any) -> str | None:
    names = item.get("ConceptNameCodeSequence")
    return str(names[0].CodeValue) if names else None


def _first(group: Any, concept: str) -> Any:
    return next((item for item in group.get("ContentSequence", []) if _concept(item) == concept), None)


def _text(group: Any, concept: str) -> str | None:
    item = _first(group, concept)
    return None if item is None else str(item.get("TextValue", ""))


def _code_value(item: Any) -> str | None:
    codes = item.get("ConceptCodeSequence")
    return str(codes[0].CodeValue) if codes else None


def _point(region: Any, identifier: str | None, name: str, film_sop: str | None) -> tuple[tuple[float, float], str]:
    data = [float(v) for v in region.get("GraphicData", [])]
    if str(region.get("GraphicType", "")) != "POINT" or len(data) != 2 or not all(map(math.isfinite, data)):
        raise LabelError(f"{name}: landmark {identifier!r} is not one finite POINT")
    references = region.get("ContentSequence") or region.get("ReferencedSOPSequence") or []
    sops = [str(r.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) if "ReferencedSOPSequence" in r
            else str(r.get("ReferencedSOPInstanceUID", "")) for r in references]
    sop = sops[0] if sops else None
    if sop is None:
        raise LabelError(f"{name}: landmark {identifier!r} references no image")
    if film_sop is not None and sop != film_sop:
        raise LabelError(f"{name}: landmarks on two images ({film_sop} and {sop}); expected one film")
    return (data[0] - PIXEL_CENTRE, data[1] - PIXEL_CENTRE), sop


def _angle(group: Any, name: str) -> dict[str, Any]:
    angle: dict[str, Any] = {}
    for item in group.get("ContentSequence", []):
        value_type = str(item.get("ValueType", ""))
        if value_type == "NUM":
            angle["degrees"] = float(item.MeasuredValueSequence[0].NumericValue)
        elif value_type == "CODE" and _concept(item) in ("upper-end", "lower-end"):
            angle[f"{_concept(item).split('-')[0]}_vertebra"] = _code_value(item)
    if "degrees" not in angle:
        raise LabelError(f"{name}: a Cobb angle group without its angle")
    return angle


def _summary(group: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {"reasons": [], "flagged": []}
    for item in group.get("ContentSequence", []):
        concept, value = _concept(item), _code_value(item)
        if concept == "curve-type":
            summary["curve"] = {"curve-S": "S", "curve-C": "C"}.get(value or "")
        elif concept == "corrected":
            summary["corrected"] = value == _YES
        elif concept == "review-needed":
            summary["review_needed"] = value == _YES
        elif concept == _REVIEW_REASON[0]:
            summary["reasons"].append(str(item.TextValue))
        elif concept == _FLAGGED[0]:
            summary["flagged"].append(point_index(str(item.TextValue)))
        elif concept == _ALGORITHM_VERSION:
            summary["version"] = str(item.TextValue)
    if summary.get("review_needed") is None:
        summary.pop("review_needed", None)
    return summary


def _referenced_series(dataset: Any, film_sop: str | None) -> str:
    """The film's series, from the evidence sequence (CurrentRequestedProcedureEvidenceSequence)."""
    for study in dataset.get("CurrentRequestedProcedureEvidenceSequence", []):
        for series in study.get("ReferencedSeriesSequence", []):
            for instance in series.get("ReferencedSOPSequence", []):
                if str(instance.ReferencedSOPInstanceUID) == film_sop:
                    return str(series.SeriesInstanceUID)
    raise LabelError(f"report {dataset.get('SOPInstanceUID')}: the film {film_sop} is not in its evidence")

