"""The Slicer module's logic on real MRML (the slicer-core wheel), without the Slicer application.

Each test builds its own scene: the wheel has no global slicer.mrmlScene.
"""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is not installed")

geometry = importlib.import_module("SpineCascadeLib.geometry")
imaging = importlib.import_module("SpineCascadeLib.imaging")
markups = importlib.import_module("SpineCascadeLib.markups")
logic_module = importlib.import_module("SpineCascadeLib.logic")
testdata = importlib.import_module("SpineCascadeLib.testdata")

from spinecascade.errors import LabelError  # noqa: E402
from spinecascade.io.labels import label_from_json_dict, read_mrk_json  # noqa: E402
from spinecascade.landmarks import point_names  # noqa: E402
from spinecascade.measurement.cobb import cobb_angles  # noqa: E402

WIDTH, HEIGHT = 400, 1000
# Rows are the RAS directions of I, J and K: flipped, and a rotation within the image plane.
TURN = np.radians(20.0)
GEOMETRIES = {
    "identity": dict(spacing=(1.0, 1.0), origin=(0.0, 0.0, 0.0), directions=np.eye(3)),
    "lps-file": dict(spacing=(0.143, 0.143), origin=(-12.5, 40.0, 0.0), directions=np.diag([-1.0, -1.0, 1.0])),
    "flipped": dict(spacing=(0.3, 0.7), origin=(105.2, -311.9, 17.5), directions=np.diag([-1.0, 1.0, -1.0])),
    "rotated": dict(
        spacing=(0.25, 0.2),
        origin=(3.0, 4.0, -5.0),
        directions=np.array(
            [[-np.cos(TURN), -np.sin(TURN), 0.0], [np.sin(TURN), -np.cos(TURN), 0.0], [0.0, 0.0, 1.0]]
        ),
    ),
}


@pytest.fixture
def scene():
    scene = slicer.vtkMRMLScene()
    scene.AddNode(slicer.vtkMRMLSelectionNode())  # the markups logic expects one; avoids log noise
    return scene


@pytest.fixture(params=sorted(GEOMETRIES))
def volume(request, scene):
    return testdata.add_example_volume(scene, WIDTH, HEIGHT, **GEOMETRIES[request.param])


@pytest.fixture
def landmarks() -> np.ndarray:
    return testdata.example_landmarks(WIDTH, HEIGHT)


@pytest.fixture
def answer(landmarks) -> dict:
    return testdata.example_answer(landmarks, WIDTH, HEIGHT, testdata.example_uncertainty())


def scene_content(scene) -> list[tuple[str, str]]:
    """Class and name of every node; display nodes by class only (MRML numbers their names)."""
    nodes = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
    return sorted((n.GetClassName(), "" if n.IsA("vtkMRMLDisplayNode") else n.GetName()) for n in nodes)


def assert_same_angles(result, expected) -> None:
    """Same end vertebrae and curve type; degrees equal up to the rounding of the points' RAS round trip."""
    for got, want in zip(result.angles, expected.angles, strict=True):
        assert (got.name, got.end_vertebrae) == (want.name, want.end_vertebrae)
        assert got.degrees == pytest.approx(want.degrees, abs=1e-5)  # arccos near 0 amplifies 1e-13
    assert result.s_shaped == expected.s_shaped


def positions(node) -> np.ndarray:
    return np.array([node.GetNthControlPointPosition(i) for i in range(node.GetNumberOfControlPoints())])


# ---------------------------------------------------------------------- geometry


def test_pixel_ras_pixel_round_trip_is_exact(volume):
    rng = np.random.default_rng(1)
    pixels = rng.uniform([-20, -20], [WIDTH + 20, HEIGHT + 20], size=(500, 2))
    back = geometry.ras_to_pixels(volume, geometry.pixels_to_ras(volume, pixels))
    assert np.abs(back - pixels).max() < 1e-9


def test_pixels_land_where_the_volume_geometry_puts_them(volume):
    """RAS = origin + directions^T diag(spacing) (I, J, 0), written out independently of the module."""
    pixels = np.array([[0.0, 0.0], [WIDTH - 1.0, 0.0], [12.25, 777.5]])
    spacing = np.array(volume.GetSpacing())
    axes = np.zeros((3, 3))
    volume.GetIJKToRASDirections(axes)
    expected = np.array(volume.GetOrigin()) + (np.column_stack([pixels, np.zeros(3)]) * spacing) @ axes.T
    assert np.abs(geometry.pixels_to_ras(volume, pixels) - expected).max() < 1e-9


def test_image_size_refuses_what_is_not_a_single_slice(scene):
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "ct")
    with pytest.raises(geometry.VolumeError, match="no image data"):
        geometry.image_size(volume)
    slicer.util.updateVolumeFromArray(volume, np.zeros((3, 20, 10), dtype=np.int16))
    with pytest.raises(geometry.VolumeError, match="3 slices"):
        geometry.image_size(volume)
    with pytest.raises(geometry.VolumeError, match="no volume selected"):
        geometry.image_size(None)


# ---------------------------------------------------------------------- image export


def test_png_export_keeps_rows_and_columns(volume):
    """Whatever the axis directions, the PNG's row r, column c is the voxel J = r, I = c."""
    from spinecascade.io.images import load_image_bytes

    exported = load_image_bytes(imaging.encode_png(volume), "export.png")
    voxels = slicer.util.arrayFromVolume(volume)[0]
    assert (exported.width, exported.height) == (WIDTH, HEIGHT)
    np.testing.assert_array_equal(exported.pixels, voxels.astype(np.float32))


@pytest.mark.parametrize(
    ("pixels", "dtype", "exact"),
    [
        (np.array([[0, 255], [7, 9]], dtype=np.uint8), np.uint8, True),
        (np.array([[0, 4095], [7, 9]], dtype=np.int16), np.uint16, True),
        (np.array([[-1000.0, 3000.0], [0.5, 2.0]]), np.uint16, False),
    ],
)
def test_png_pixels_keep_integers_and_rescale_the_rest(pixels, dtype, exact):
    converted = imaging.to_png_pixels(pixels)
    assert converted.dtype == dtype
    if exact:
        np.testing.assert_array_equal(converted, pixels)
    else:
        assert (converted.min(), converted.max()) == (0, 65535)


def test_downloaded_image_becomes_a_volume_like_slicer_loads_it(scene):
    data = imaging.encode_png(testdata.add_example_volume(scene, 60, 90))
    volume = imaging.add_volume_from_image(scene, data, "download")
    assert geometry.image_size(volume) == (60, 90)
    np.testing.assert_allclose(geometry.ijk_to_ras(volume)[:3, :3], np.diag([-1.0, -1.0, 1.0]))


def test_a_broken_download_adds_no_volume(scene):
    before = scene_content(scene)
    with pytest.raises(Exception, match="not a supported image"):
        imaging.add_volume_from_image(scene, b"<html>proxy error</html>", "broken")
    assert scene_content(scene) == before


# ---------------------------------------------------------------------- answer -> points, lines, table


def test_answer_becomes_68_named_points_at_the_right_place(scene, volume, landmarks, answer):
    annotation = logic_module.SpineCascadeLogic(scene).apply_answer(volume, answer)
    node = annotation.points
    assert node.GetNumberOfControlPoints() == 68
    assert [node.GetNthControlPointLabel(i) for i in range(68)] == point_names()
    assert node.GetNthControlPointLabel(4 * 14) == "L3 top-left"
    expected = geometry.pixels_to_ras(volume, landmarks.reshape(68, 2))
    assert np.abs(positions(node) - expected).max() < 1e-9
    np.testing.assert_allclose(annotation.landmarks, landmarks, atol=1e-9)


def test_angles_lines_and_table_show_the_library_result(scene, volume, landmarks, answer):
    annotation = logic_module.SpineCascadeLogic(scene).apply_answer(volume, answer)
    expected = cobb_angles(landmarks, HEIGHT)
    assert_same_angles(annotation.cobb, expected)
    table = annotation.table
    for row, (angle, shown) in enumerate(zip(expected.angles, annotation.cobb.angles, strict=True)):
        assert table.GetCellText(row, 0) == angle.name
        assert table.GetTable().GetValue(row, 1).ToDouble() == shown.degrees
        assert (table.GetCellText(row, 2), table.GetCellText(row, 3)) == angle.end_vertebrae
        upper, lower = annotation.lines[angle.name]
        upper_pixels = geometry.ras_to_pixels(volume, positions(upper))
        lower_pixels = geometry.ras_to_pixels(volume, positions(lower))
        # The upper line runs along the top corners of the upper vertebra, the lower one along the bottom.
        np.testing.assert_allclose(upper_pixels, markups.endplate_segments(landmarks, angle)[0], atol=1e-9)
        np.testing.assert_allclose(lower_pixels, markups.endplate_segments(landmarks, angle)[1], atol=1e-9)
        top = landmarks[angle.upper, :2]
        assert np.cross(upper_pixels[1] - upper_pixels[0], top[1] - top[0]) == pytest.approx(0.0, abs=1e-6)
        assert upper.GetLocked() and lower.GetLocked()
        assert upper.GetName().endswith(f"upper endplate of {angle.end_vertebrae[0]}")
    assert table.GetAttribute("SpineCascade.Curve") == ("S" if expected.s_shaped else "C")


def test_uncertain_points_are_unselected_and_described(scene, volume, landmarks):
    uncertainty = testdata.example_uncertainty()
    answer = testdata.example_answer(landmarks, WIDTH, HEIGHT, uncertainty)
    logic = logic_module.SpineCascadeLogic(scene)
    node = logic.apply_answer(volume, answer).points
    selected = np.array([node.GetNthControlPointSelected(i) for i in range(68)], dtype=bool)
    np.testing.assert_array_equal(selected, uncertainty <= logic.threshold)
    assert node.GetNthControlPointDescription(3) == f"uncertainty {uncertainty[3]:.1f} px"
    display = node.GetDisplayNode()
    assert display.GetSelectedColor() == pytest.approx(markups.CONFIDENT_COLOUR)
    assert display.GetColor() == pytest.approx(markups.UNCERTAIN_COLOUR)
    logic.set_threshold(100.0)
    assert all(node.GetNthControlPointSelected(i) for i in range(68))


# ---------------------------------------------------------------------- editing


def test_moving_a_point_updates_angles_lines_and_table_at_once(scene, volume, landmarks, answer):
    logic = logic_module.SpineCascadeLogic(scene)
    seen = []
    logic.on_change = seen.append
    annotation = logic.apply_answer(volume, answer)
    before = annotation.cobb
    moved = landmarks.copy()
    k = 9 * 4 + 1  # T10 top-right: lifting it tilts T10, an end vertebra of both curves
    moved[9, 1] += (-6.0, -25.0)
    annotation.points.SetNthControlPointPosition(k, *geometry.pixels_to_ras(volume, moved[9, 1])[0])

    expected = cobb_angles(moved, HEIGHT)
    assert_same_angles(annotation.cobb, expected)
    assert annotation.cobb.pt.degrees != pytest.approx(before.pt.degrees)
    assert seen[-1] is annotation
    assert annotation.moved == {k}
    assert annotation.table.GetTable().GetValue(0, 1).ToDouble() == pytest.approx(expected.pt.degrees)
    assert annotation.points.GetNthControlPointSelected(k)
    assert annotation.points.GetNthControlPointDescription(k).endswith("moved")
    upper = annotation.lines[expected.pt.name][0]
    np.testing.assert_allclose(
        geometry.ras_to_pixels(volume, positions(upper)), markups.endplate_segments(moved, expected.pt)[0], atol=1e-9
    )


def test_edited_node_exports_the_moved_landmarks_as_a_library_label(scene, volume, landmarks, answer):
    logic = logic_module.SpineCascadeLogic(scene)
    annotation = logic.apply_answer(volume, answer)
    moved = landmarks.copy()
    moved[14, 0] += (9.5, -3.25)  # L3 top-left
    index = point_names().index("L3 top-left")
    annotation.points.SetNthControlPointPosition(index, *geometry.pixels_to_ras(volume, moved[14, 0])[0])

    doc = json.loads(json.dumps(logic.export_label(volume)))
    label = label_from_json_dict(doc)
    np.testing.assert_allclose(label.landmarks, moved, atol=1e-9)
    assert (label.width, label.height, label.image_name) == (WIDTH, HEIGHT, "example.png")
    assert doc["cobb"]["PT"]["degrees"] == pytest.approx(cobb_angles(moved, HEIGHT).pt.degrees)
    assert doc["review"]["moved_points"] == ["L3 top-left"]
    assert doc["review"]["model"] == {"version": "example"}


def test_points_are_read_by_name_not_by_order(scene, volume, landmarks, answer):
    logic = logic_module.SpineCascadeLogic(scene)
    annotation = logic.apply_answer(volume, answer)
    node = annotation.points
    first, last = node.GetNthControlPointLabel(0), node.GetNthControlPointLabel(67)
    node.SetNthControlPointLabel(0, last)
    node.SetNthControlPointLabel(67, first)
    swapped = landmarks.copy()
    swapped[0, 0], swapped[16, 3] = landmarks[16, 3], landmarks[0, 0]
    np.testing.assert_allclose(markups.landmarks_from_node(node, volume), swapped, atol=1e-9)


def test_a_deleted_point_clears_the_angles_and_names_the_point(scene, volume, answer):
    logic = logic_module.SpineCascadeLogic(scene)
    annotation = logic.apply_answer(volume, answer)
    annotation.points.RemoveNthControlPoint(5)
    assert annotation.cobb is None
    assert "T2 top-right" in annotation.error
    assert np.isnan(annotation.table.GetTable().GetValue(0, 1).ToDouble())
    assert not any(line.GetDisplayNode().GetVisibility() for pair in annotation.lines.values() for line in pair)
    with pytest.raises(LabelError, match="T2 top-right"):
        logic.export_label(volume)


def test_display_toggles(scene, volume, answer):
    logic = logic_module.SpineCascadeLogic(scene)
    annotation = logic.apply_answer(volume, answer)
    logic.set_display(logic_module.DisplayOptions(corners=False, lines=False, labels=True))
    display = annotation.points.GetDisplayNode()
    assert not display.GetVisibility() and display.GetPointLabelsVisibility()
    assert not any(line.GetDisplayNode().GetVisibility() for pair in annotation.lines.values() for line in pair)
    logic.set_display(logic_module.DisplayOptions())
    assert display.GetVisibility() and not display.GetPointLabelsVisibility()
    assert all(line.GetDisplayNode().GetVisibility() for pair in annotation.lines.values() for line in pair)


def test_a_new_answer_replaces_the_old_nodes(scene, volume, answer):
    logic = logic_module.SpineCascadeLogic(scene)
    logic.apply_answer(volume, answer)
    once = scene_content(scene)
    logic.apply_answer(volume, answer)
    assert scene_content(scene) == once


# ---------------------------------------------------------------------- bad answers leave the scene alone


def bad_answers(answer: dict) -> dict[str, dict]:
    missing_point = {**answer, "landmarks": answer["landmarks"][:-1]}
    wrong_size = {**answer, "image": {**answer["image"], "width": WIDTH * 2}}
    short_uncertainty = {**answer, "uncertainty": {"unit": "pixel", "per_landmark": [1.0] * 10}}
    nan_point = json.loads(json.dumps(answer))
    nan_point["landmarks"][3]["x"] = "NaN"
    return {
        "missing point": missing_point,
        "wrong image size": wrong_size,
        "short uncertainty": short_uncertainty,
        "text coordinate": nan_point,
        "not a label": {"detail": "model not loaded"},
    }


BAD_ANSWERS = ["missing point", "wrong image size", "short uncertainty", "text coordinate", "not a label"]


@pytest.mark.parametrize("case", BAD_ANSWERS)
def test_a_bad_answer_changes_nothing(scene, landmarks, answer, case):
    volume = testdata.add_example_volume(scene, WIDTH, HEIGHT)
    logic = logic_module.SpineCascadeLogic(scene)
    logic.apply_answer(volume, answer)
    before = scene_content(scene)
    points_before = positions(logic.annotation(volume).points)
    with pytest.raises(logic_module.ServerError, match="server's answer"):
        logic.apply_answer(volume, bad_answers(answer)[case])
    assert scene_content(scene) == before
    np.testing.assert_array_equal(positions(logic.annotation(volume).points), points_before)


def test_actions_without_a_server_say_so(scene, volume):
    logic = logic_module.SpineCascadeLogic(scene)
    for action in (lambda: logic.auto_landmark(volume), logic.next_image, logic.training_status):
        with pytest.raises(logic_module.ServerError, match="not connected"):
            action()


def test_no_landmarks_yet_is_a_clear_error(scene, volume):
    with pytest.raises(LabelError, match="no landmarks yet"):
        logic_module.SpineCascadeLogic(scene).export_label(volume)


# ---------------------------------------------------------------------- .mrk.json


def test_mrk_json_round_trip_keeps_names_positions_and_state(scene, volume, landmarks, answer, tmp_path):
    logic = logic_module.SpineCascadeLogic(scene)
    annotation = logic.apply_answer(volume, answer)
    annotation.points.SetNthControlPointPosition(7, *geometry.pixels_to_ras(volume, [[150.0, 220.0]])[0])
    saved_positions, saved_moved = positions(annotation.points), set(annotation.moved)
    path = tmp_path / "landmarks.mrk.json"
    logic.save_markups(volume, path)

    logic.forget(volume)
    loaded = logic.load_markups(volume, path)
    node = loaded.points
    assert [node.GetNthControlPointLabel(i) for i in range(68)] == point_names()
    assert np.abs(positions(node) - saved_positions).max() < 1e-9
    assert loaded.moved == saved_moved
    np.testing.assert_allclose(loaded.uncertainty, np.round(testdata.example_uncertainty(), 1))
    assert_same_angles(loaded.cobb, cobb_angles(loaded.landmarks, HEIGHT))


def test_slicer_file_reads_in_the_library_for_an_image_read_from_file(scene, landmarks, answer, tmp_path):
    """For a volume as Slicer loads a PNG (LPS axes, 1 mm, origin 0) both readers agree on the pixels."""
    volume = testdata.add_example_volume(scene, WIDTH, HEIGHT)
    logic = logic_module.SpineCascadeLogic(scene)
    logic.apply_answer(volume, answer)
    path = tmp_path / "landmarks.mrk.json"
    logic.save_markups(volume, path)
    np.testing.assert_allclose(read_mrk_json(path).landmarks, landmarks, atol=1e-9)


def test_a_file_the_library_wrote_loads_onto_an_image_read_from_file(scene, landmarks, tmp_path):
    """`spinecascade convert x.json x.mrk.json` output lands on the pixels it names; all points count as sure."""
    from spinecascade.io.labels import LandmarkLabel, write_mrk_json

    volume = testdata.add_example_volume(scene, WIDTH, HEIGHT)
    path = tmp_path / "converted.mrk.json"
    write_mrk_json(path, LandmarkLabel(landmarks, WIDTH, HEIGHT))
    loaded = logic_module.SpineCascadeLogic(scene).load_markups(volume, path)
    np.testing.assert_allclose(loaded.landmarks, landmarks, atol=1e-9)
    assert loaded.uncertainty is None and not loaded.moved
    assert all(loaded.points.GetNthControlPointSelected(i) for i in range(68))


def test_an_incomplete_mrk_json_changes_nothing(scene, volume, answer, tmp_path):
    logic = logic_module.SpineCascadeLogic(scene)
    logic.apply_answer(volume, answer)
    path = tmp_path / "landmarks.mrk.json"
    logic.save_markups(volume, path)
    doc = json.loads(path.read_text())
    del doc["markups"][0]["controlPoints"][10]
    path.write_text(json.dumps(doc))
    before = scene_content(scene)
    with pytest.raises(LabelError, match="T3 bottom-left"):
        logic.load_markups(volume, path)
    assert scene_content(scene) == before
    with pytest.raises(LabelError, match="no such file"):
        logic.load_markups(volume, tmp_path / "missing.mrk.json")
    assert scene_content(scene) == before


# ---------------------------------------------------------------------- training status


@pytest.mark.parametrize(
    ("task", "state", "fraction", "running"),
    [
        (None, "NONE", None, False),
        ({"status": "RUNNING", "details": ["loading", "epoch 3/8"]}, "RUNNING", 3 / 8, True),
        ({"status": "RUNNING", "details": ["stage 2/6 epoch 3/8", "saving"]}, "RUNNING", (1 + 3 / 8) / 6, True),
        ({"status": "RUNNING", "details": ["training: corners done (3 of 6 stages): MSE 1e-3"]}, "RUNNING", 0.5, True),
        ({"status": "RUNNING", "details": ["training: corners-1, epoch 3: loss 0.1"]}, "RUNNING", None, True),
        ({"status": "RUNNING", "details": []}, "RUNNING", None, True),
        ({"status": "DONE", "details": ["saved model"]}, "DONE", 1.0, False),
        ({"status": "ERROR", "details": ["Traceback ..."]}, "ERROR", None, False),
    ],
)
def test_training_status(task, state, fraction, running):
    status = logic_module.TrainingStatus.from_task(task)
    assert (status.state, status.fraction, status.running) == (state, fraction, running)
