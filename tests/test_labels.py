"""Label files: exact round trips between formats, the real AASCE files, a LabelError for each bad file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from spinecascade.cli.main import main
from spinecascade.errors import LabelError
from spinecascade.io.labels import (
    LandmarkLabel,
    label_from_json_dict,
    label_from_mrk_dict,
    label_to_json_dict,
    label_to_mrk_dict,
    read_angles_csv,
    read_json_label,
    read_label,
    read_landmarks_csv,
    read_landmarks_csv_normalised,
    read_mat,
    read_mrk_json,
    write_angles_csv,
    write_json_label,
    write_label,
    write_landmarks_csv,
    write_mat,
    write_mrk_json,
)
from spinecascade.landmarks import SHAPE, point_names

AASCE = Path(__file__).resolve().parents[1].parent / "shared" / "aasce"
needs_aasce = pytest.mark.skipif(not AASCE.exists(), reason="AASCE data not at ../shared/aasce")

RNG = np.random.default_rng(3)
# Awkward floats on purpose: exactness must not depend on the numbers being round.
LANDMARKS = RNG.uniform(0, 1000, size=SHAPE) + 1 / 3


def _label(**kwargs) -> LandmarkLabel:
    return LandmarkLabel(LANDMARKS.copy(), 1000, 2000, image_name="a b.jpg", **kwargs)


# ---------------------------------------------------------------- round trips


def test_mat_json_mrk_round_trip_is_exact(tmp_path: Path) -> None:
    write_mat(tmp_path / "a.jpg.mat", LANDMARKS)
    label = read_label(tmp_path / "a.jpg.mat", image_size=(1000, 2000))
    assert label.image_name == "a.jpg"
    write_label(tmp_path / "a.json", label)
    write_label(tmp_path / "a.mrk.json", read_label(tmp_path / "a.json"))
    back = read_label(tmp_path / "a.mrk.json", image_size=(1000, 2000))
    write_label(tmp_path / "b.json", back)
    write_label(tmp_path / "b.mat", read_label(tmp_path / "b.json"))
    np.testing.assert_array_equal(read_mat(tmp_path / "b.mat"), LANDMARKS)
    assert read_label(tmp_path / "b.json").width == 1000


def test_mrk_with_spacing_and_origin_round_trips(tmp_path: Path) -> None:
    label = _label(spacing_mm=(0.14, 0.15))
    write_mrk_json(tmp_path / "a.mrk.json", label, spacing=(0.14, 0.15), origin=(-12.5, 30.0))
    doc = json.loads((tmp_path / "a.mrk.json").read_text())
    first = doc["markups"][0]["controlPoints"][0]
    assert first["label"] == "T1 top-left"
    x, y = LANDMARKS[0, 0]
    assert first["position"] == pytest.approx([-12.5 + x * 0.14, 30 + y * 0.15, 0])
    back = read_mrk_json(tmp_path / "a.mrk.json", spacing=(0.14, 0.15), origin=(-12.5, 30.0))
    np.testing.assert_allclose(back.landmarks, LANDMARKS, rtol=0, atol=1e-9)
    assert back.spacing_mm == (0.14, 0.15)
    assert back.image_name == "a b.jpg"


def test_mrk_ras_and_reordered_points() -> None:
    doc = label_to_mrk_dict(_label(), coordinate_system="RAS")
    points = doc["markups"][0]["controlPoints"]
    assert points[5]["position"][0] == pytest.approx(-LANDMARKS.reshape(-1, 2)[5, 0])
    points.reverse()
    np.testing.assert_array_equal(label_from_mrk_dict(doc).landmarks, LANDMARKS)


def test_json_document_layout_and_extra_keys(tmp_path: Path) -> None:
    label = _label(extra={"cobb": {"PT": 10.5}, "model": "v1"})
    write_json_label(tmp_path / "a.json", label)
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["format"] == "spinecascade-landmarks" and doc["version"] == 1
    assert doc["image"] == {"name": "a b.jpg", "width": 1000, "height": 2000, "spacing_mm": None}
    assert doc["units"] == "pixel"
    assert [p["name"] for p in doc["landmarks"]] == point_names()
    assert doc["landmarks"][6] == {
        "name": "T2 bottom-left",
        "vertebra": "T2",
        "corner": "bottom-left",
        "x": LANDMARKS[1, 2, 0],
        "y": LANDMARKS[1, 2, 1],
    }
    back = read_json_label(tmp_path / "a.json")
    assert back.extra == {"cobb": {"PT": 10.5}, "model": "v1"}
    np.testing.assert_array_equal(back.landmarks, LANDMARKS)


def test_json_points_are_placed_by_name() -> None:
    doc = label_to_json_dict(_label())
    doc["landmarks"] = doc["landmarks"][::-1]
    for point in doc["landmarks"]:
        del point["vertebra"], point["corner"]
    np.testing.assert_array_equal(label_from_json_dict(doc).landmarks, LANDMARKS)


def test_csv_round_trip_is_exact(tmp_path: Path) -> None:
    items = {"a b.jpg": LANDMARKS / 2000, "c.jpg": LANDMARKS[::-1] / 3000}
    write_landmarks_csv(tmp_path / "landmarks.csv", tmp_path / "filenames.csv", items)
    assert (tmp_path / "filenames.csv").read_text() == "a b.jpg\nc.jpg\n"
    back = read_landmarks_csv_normalised(tmp_path / "landmarks.csv", tmp_path / "filenames.csv")
    assert list(back) == list(items)
    for name, arr in items.items():
        np.testing.assert_array_equal(back[name], arr)
    pixels = read_landmarks_csv(
        tmp_path / "landmarks.csv", tmp_path / "filenames.csv", {"a b.jpg": (10, 20), "c.jpg": (30, 40)}
    )
    np.testing.assert_allclose(pixels["c.jpg"], items["c.jpg"] * [30, 40])
    angles = RNG.uniform(0, 90, size=(2, 3))
    write_angles_csv(tmp_path / "angles.csv", angles)
    np.testing.assert_array_equal(read_angles_csv(tmp_path / "angles.csv"), angles)


# ---------------------------------------------------------------- the real AASCE files


@needs_aasce
def test_real_mat_file() -> None:
    path = AASCE / "labels" / "training" / "sunhl-1th-02-Jan-2017-162 A AP.jpg.mat"
    arr = read_mat(path)
    assert arr.shape == SHAPE and arr.dtype == np.float64
    assert tuple(arr[0, 0]) == (361.0, 72.0) and tuple(arr[0, 1]) == (503.0, 74.0)


@needs_aasce
def test_real_csv_files() -> None:
    folder = AASCE / "labels" / "training"
    normalised = read_landmarks_csv_normalised(folder / "landmarks.csv", folder / "filenames.csv")
    assert len(normalised) == 481
    angles = read_angles_csv(folder / "angles.csv")
    assert angles.shape == (481, 3)
    np.testing.assert_allclose(angles[0], [41.139, 14.63, 40.147])


# ---------------------------------------------------------------- bad files


def _mat(path: Path, **variables) -> Path:
    scipy.io.savemat(path, variables)
    return path


def _junk(path: Path) -> Path:
    path.write_bytes(b"not a matlab file at all")
    return path


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: _mat(p / "x.mat", q=np.zeros((68, 2))), "no variable 'p2'"),
        (lambda p: _mat(p / "x.mat", p2=np.zeros((60, 2))), "shape"),
        (lambda p: _mat(p / "x.mat", p2=np.full((68, 2), np.nan)), "not finite"),
        (lambda p: _junk(p / "x.mat"), "not a readable"),
        (lambda p: p / "missing.mat", "cannot read"),
    ],
)
def test_bad_mat_files(tmp_path: Path, make, needle: str) -> None:
    path = make(tmp_path)
    with pytest.raises(LabelError, match=needle) as info:
        read_label(path)
    assert path.name in str(info.value)


def _json_doc(change) -> dict:
    doc = label_to_json_dict(_label())
    change(doc)
    return doc


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (_json_doc(lambda d: d["landmarks"].pop(7)), "1 of 68 landmarks missing: 'T2 bottom-right'"),
        (_json_doc(lambda d: d["landmarks"].__setitem__(3, dict(d["landmarks"][0]))), "more than once"),
        (_json_doc(lambda d: d.update(format="other")), "format"),
        (_json_doc(lambda d: d.update(version=2)), "unsupported spinecascade-landmarks version 2"),
        (_json_doc(lambda d: d["landmarks"][0].update(name="T13 top-left")), "unknown landmark name"),
        (_json_doc(lambda d: d["landmarks"][0].update(x=None)), "finite number"),
        (_json_doc(lambda d: d["landmarks"][0].update(corner="top-right")), "says vertebra"),
        (_json_doc(lambda d: d["image"].update(width=-3)), "positive integer"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_json_labels(tmp_path: Path, doc, needle: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(LabelError, match=needle) as info:
        read_label(path)
    assert str(path) in str(info.value)


def test_invalid_json_syntax(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"format": ')
    with pytest.raises(LabelError, match="bad.json: not valid JSON"):
        read_label(path)


def test_bad_mrk_files(tmp_path: Path) -> None:
    doc = label_to_mrk_dict(_label())
    doc["markups"][0]["controlPoints"].pop()
    path = tmp_path / "bad.mrk.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(LabelError, match="bad.mrk.json: 1 of 68 landmarks missing: 'L5 bottom-right'"):
        read_label(path)
    doc["markups"][0]["coordinateSystem"] = "XYZ"
    path.write_text(json.dumps(doc))
    with pytest.raises(LabelError, match="coordinate system 'XYZ'"):
        read_label(path)


def test_csv_and_unknown_suffixes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LabelError, match="x.csv: a .csv file holds a whole dataset"):
        read_label(tmp_path / "x.csv")
    with pytest.raises(LabelError, match="unknown label format '.txt'"):
        write_label(tmp_path / "x.txt", _label())
    assert not (tmp_path / "x.txt").exists()


def test_csv_row_count_must_match_filenames(tmp_path: Path) -> None:
    (tmp_path / "filenames.csv").write_text("a.jpg\nb.jpg\n")
    (tmp_path / "landmarks.csv").write_text(",".join(["0.5"] * 136) + "\n")
    with pytest.raises(LabelError, match="landmarks.csv: 1 rows, but .*filenames.csv names 2 images"):
        read_landmarks_csv_normalised(tmp_path / "landmarks.csv", tmp_path / "filenames.csv")


def test_image_size_conflict(tmp_path: Path) -> None:
    write_json_label(tmp_path / "a.json", _label())
    with pytest.raises(LabelError, match="image width 1000, but the image has 999"):
        read_label(tmp_path / "a.json", image_size=(999, 2000))


# ---------------------------------------------------------------- CLI


def test_cli_convert_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mat, first, mrk, second = (str(tmp_path / n) for n in ("a.jpg.mat", "a.json", "a.mrk.json", "b.json"))
    write_mat(mat, LANDMARKS)
    Image.new("L", (1000, 2000)).save(tmp_path / "a.jpg")
    assert main(["convert", mat, first, "--image", str(tmp_path / "a.jpg")]) == 0
    assert capsys.readouterr().out == f"wrote {first}\n"
    label = read_json_label(first)
    assert (label.width, label.height, label.image_name) == (1000, 2000, "a.jpg")
    geometry = ["--spacing", "0.2", "0.25", "--origin", "5", "-7"]
    assert main(["convert", first, mrk, *geometry]) == 0
    assert main(["convert", mrk, second, "--size", "1000", "2000", *geometry]) == 0
    back = read_json_label(second)
    assert (back.width, back.height, back.spacing_mm) == (1000, 2000, (0.2, 0.25))
    np.testing.assert_allclose(back.landmarks, LANDMARKS, rtol=0, atol=1e-9)


def test_cli_convert_without_size_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_mat(tmp_path / "a.mat", LANDMARKS)
    assert main(["convert", str(tmp_path / "a.mat"), str(tmp_path / "a.json")]) == 0
    assert "width and height left null" in caplog.text
    assert read_json_label(tmp_path / "a.json").width is None


def test_cli_convert_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_mat(tmp_path / "a.mat", LANDMARKS)
    assert main(["convert", str(tmp_path / "a.mat"), str(tmp_path / "a.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("spinecascade convert: error: ") and "a.csv" in err
    assert not (tmp_path / "a.csv").exists()
    assert main(["convert", str(tmp_path / "nope.mat"), str(tmp_path / "a.json")]) == 2
    assert "nope.mat: cannot read" in capsys.readouterr().err
