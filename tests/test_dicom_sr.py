"""Landmark labels as DICOM Structured Reports: content, round trip, the validator, and the command line."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import load_app_module

from spinecascade.cli.main import main
from spinecascade.errors import LabelError
from spinecascade.io.dicom_sr import build_sr, is_sr_file, read_sr, write_sr
from spinecascade.io.images import save_image
from spinecascade.io.labels import LandmarkLabel, read_label
from spinecascade.landmarks import point_names
from spinecascade.measurement.cobb import cobb_angles
from spinecascade.synthetic import make_spine

dx_film = load_app_module("tools/dx_film.py", "scoliosis_dx_film")


def film_and_label(width: int = 96, height: int = 240, seed: int = 3, **extra) -> tuple[pydicom.Dataset, LandmarkLabel]:
    spine = make_spine(seed, 96, 240)
    pixels = np.asarray(spine.image) if (width, height) == (96, 240) else np.zeros((height, width), np.uint8)
    film = dx_film.dx_dataset(pixels, 0.2, patient_id="P7", patient_name="Test^Seven")
    landmarks = np.asarray(spine.landmarks) * np.array([width / 96, height / 240])
    return film, LandmarkLabel(landmarks, width, height, extra=extra)


def test_the_68_corners_come_back_within_a_thousandth_of_a_pixel_on_a_large_film(tmp_path: Path):
    film, label = film_and_label(3000, 8190)
    rng = np.random.default_rng(0)
    label.landmarks = label.landmarks + rng.uniform(0, 1, label.landmarks.shape)  # every fraction, not just .5
    label.landmarks[..., 1] += 600  # down to ~7500 px, where float32 steps are 2**-11 px
    write_sr(tmp_path / "report.dcm", label, film)  # through the file: GraphicData is float32 there
    back = read_sr(tmp_path / "report.dcm").label
    error = np.abs(back.landmarks - label.landmarks).max()
    assert label.landmarks.max() > 7000 and error < 1e-3
    assert error <= 2.5e-4 + 1e-9  # float32 GraphicData: half a step of 2**-11 px below 8192 px
    print(f"SR round trip on a 3000 x 8190 film: max error {error:.2e} px")


def test_the_report_holds_angles_flags_model_and_references():
    quality = {"review_needed": True, "reasons": ["spine half a level off"], "flagged_landmarks": [0, 5]}
    film, label = film_and_label(model={"version": "0123456789ab"}, quality=quality,
                                 review={"tool": "3D Slicer SpineCascade", "moved_points": ["T1 top-left"]})
    report = build_sr(label, film)
    assert (report.SOPClassUID, report.Modality) == ("1.2.840.10008.5.1.4.1.1.88.33", "SR")
    assert report.ConceptNameCodeSequence[0].CodeValue == "126000"  # Imaging Measurement Report (TID 1500)
    assert (report.StudyInstanceUID, report.PatientID) == (film.StudyInstanceUID, film.PatientID)
    back = read_sr(report)
    assert (back.study_uid, back.series_uid, back.sop_uid) == (film.StudyInstanceUID, film.SeriesInstanceUID,
                                                              film.SOPInstanceUID)
    expected = cobb_angles(label.landmarks, 240)
    for angle in expected.angles:
        read = back.label.extra["cobb"][angle.name]
        assert read["degrees"] == pytest.approx(angle.degrees, abs=1e-6)
        assert (read["upper_vertebra"], read["lower_vertebra"]) == angle.end_vertebrae
    assert back.label.extra["cobb"]["curve"] == ("S" if expected.s_shaped else "C")
    assert back.label.extra["model"] == {"version": "0123456789ab"}
    assert back.label.extra["review"] == {"corrected": True}
    assert back.label.extra["quality"] == quality
    names = [str(g.ContentSequence[0].TextValue) for g in report.ContentSequence[-1].ContentSequence
             if g.ValueType == "CONTAINER"][:68]
    assert names == point_names()


def test_a_prediction_is_not_corrected_and_has_no_review_flag_unless_it_says_so():
    film, label = film_and_label(model={"version": "x"})
    extra = read_sr(build_sr(label, film)).label.extra
    assert extra["review"] == {"corrected": False} and "quality" not in extra


def test_a_new_version_names_the_one_it_replaces():
    film, label = film_and_label()
    first = build_sr(label, film)
    second = build_sr(label, film, previous=[first])
    named = second.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert named.ReferencedSOPInstanceUID == first.SOPInstanceUID and second.SOPInstanceUID != first.SOPInstanceUID


def test_a_film_without_optional_attributes_still_gets_a_report_and_stays_as_it_was():
    film, label = film_and_label()
    for keyword in ("PatientID", "AccessionNumber", "StudyID", "PatientOrientation"):
        delattr(film, keyword)
    report = build_sr(label, film)
    assert report.PatientID == "" and "PatientID" not in film
    assert read_sr(report).sop_uid == film.SOPInstanceUID


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian package dicom3tools) not installed")
def test_the_validator_finds_no_errors(tmp_path: Path):
    film, label = film_and_label(quality={"review_needed": False, "reasons": [], "flagged_landmarks": []})
    write_sr(tmp_path / "report.dcm", label, film)
    result = subprocess.run(["dciodvfy", str(tmp_path / "report.dcm")], capture_output=True, text=True)
    lines = (result.stdout + result.stderr).splitlines()
    assert lines and lines[0] == "ComprehensiveSR"
    assert [line for line in lines if line.startswith("Error")] == []
    # The only warnings: the private coding scheme of the vertebra, corner and Cobb angle codes.
    assert {line for line in lines if line.startswith("Warning")} <= {
        "Warning - Unrecognized defined term <99SPINECASCADE> for value 1 of attribute <Coding Scheme Designator>"}


def test_reading_something_else_is_a_clear_error(tmp_path: Path):
    film, _ = film_and_label()
    dx_film.write_dx(tmp_path / "film.dcm", film)
    assert not is_sr_file(tmp_path / "film.dcm")
    with pytest.raises(LabelError, match="not a Comprehensive SR"):
        read_sr(tmp_path / "film.dcm")
    (tmp_path / "junk.dcm").write_bytes(b"not dicom")
    with pytest.raises(LabelError, match="not a readable DICOM file"):
        read_label(tmp_path / "junk.dcm")


def test_predict_writes_the_report_and_convert_reads_it_back(tiny_model: Path, tmp_path: Path):
    film, _ = film_and_label()
    dx_film.write_dx(tmp_path / "film.dcm", film)
    out, report = tmp_path / "film.json", tmp_path / "report.dcm"
    assert main(["predict", str(tmp_path / "film.dcm"), "--model", str(tiny_model), "--out", str(out),
                 "--sr", str(report)]) == 0
    predicted = json.loads(out.read_text())
    assert is_sr_file(report)
    back = read_sr(report)
    assert back.sop_uid == film.SOPInstanceUID
    assert back.label.extra["model"]["version"] == predicted["model"]["version"]
    assert main(["convert", str(report), str(tmp_path / "back.json"), "--image", str(tmp_path / "film.dcm")]) == 0
    converted = json.loads((tmp_path / "back.json").read_text())
    assert (converted["image"]["width"], converted["image"]["height"]) == (96, 240)
    xy = np.array([[p["x"], p["y"]] for p in converted["landmarks"]])
    assert np.abs(xy - np.array([[p["x"], p["y"]] for p in predicted["landmarks"]])).max() < 1e-3


def test_predict_refuses_a_report_for_a_film_that_is_not_dicom(tiny_model: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture):
    save_image(tmp_path / "film.png", np.asarray(make_spine(1, 96, 240).image))
    assert main(["predict", str(tmp_path / "film.png"), "--model", str(tiny_model), "--sr",
                 str(tmp_path / "r.dcm")]) == 2
    assert "--sr needs a DICOM film" in capsys.readouterr().err and not (tmp_path / "r.dcm").exists()
