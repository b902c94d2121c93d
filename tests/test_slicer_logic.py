"""The Slicer module's logic on real MRML (the slicer-core wheel), without the Slicer application.

Each test builds its own scene: the wheel has no global slicer.mrmlScene.
"""

from __future__ import annotations

import importlib
import json
import os

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is not installed")

geometry = importlib.import_module("SpineCascadeLib.geometry")
imaging = importlib.import_module("SpineCascadeLib.imaging")
markups = importlib.import_module("SpineCascadeLib.markups")
logic_module = importlib.import_module("SpineCascadeLib.logic")
parameters_module = importlib.import_module("SpineCascadeLib.parameters")
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
    assert not annotation.flagged_points.GetDisplayNode().GetVisibility()
    assert not any(line.GetDisplayNode().GetVisibility() for pair in annotation.lines.values() for line in pair)
    logic.set_display(logic_module.DisplayOptions())
    assert display.GetVisibility() and not display.GetPointLabelsVisibility()
    assert annotation.flagged_points.GetDisplayNode().GetVisibility()
    assert all(line.GetDisplayNode().GetVisibility() for pair in annotation.lines.values() for line in pair)


def test_a_new_answer_replaces_the_old_nodes(scene, volume, answer):
    logic = logic_module.SpineCascadeLogic(scene)
    logic.apply_answer(volume, answer)
    once = scene_content(scene)
    logic.apply_answer(volume, answer)
    assert scene_content(scene) == once


# ---------------------------------------------------------------------- bad answers leave the scene alone


def bad_answers(answer: dict) -> dict[str, dict]:
    flags = {"review_needed": True, "reasons": ["x"], "flagged_landmarks": [0]}
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
        "quality not an object": {**answer, "quality": ["review"]},
        "review flag a text": {**answer, "quality": {**flags, "review_needed": "yes"}},
        "reasons not texts": {**answer, "quality": {**flags, "reasons": [3]}},
        "flagged point 68": {**answer, "quality": {**flags, "flagged_landmarks": [5, 68]}},
    }


BAD_ANSWERS = [
    "missing point", "wrong image size", "short uncertainty", "text coordinate", "not a label",
    "quality not an object", "review flag a text", "reasons not texts", "flagged point 68",
]


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


# ---------------------------------------------------------------------- the review flag (quality)


def flagged_answer(answer: dict, flagged: list[int], review: bool = True, reasons: list[str] | None = None) -> dict:
    reasons = ["T12-L1 spacing is implausible.", "landmarks near the film edge"] if reasons is None else reasons
    return {**answer, "quality": {"review_needed": review, "reasons": reasons, "flagged_landmarks": flagged}}


def ring_labels(annotation) -> list[str]:
    rings = annotation.flagged_points
    return [rings.GetNthControlPointLabel(i) for i in range(rings.GetNumberOfControlPoints())]


def test_flagged_points_are_ringed_in_the_warning_colour_and_the_banner_says_why(scene, volume, answer):
    annotation = logic_module.SpineCascadeLogic(scene).apply_answer(volume, flagged_answer(answer, [45, 3]))
    assert annotation.quality.review_needed and annotation.quality.flagged == {3, 45}
    assert ring_labels(annotation) == ["T1 bottom-right", "T12 top-right"]
    rings = annotation.flagged_points
    for i, k in enumerate((3, 45)):  # each ring sits on its landmark's point
        assert rings.GetNthControlPointPosition(i) == pytest.approx(annotation.points.GetNthControlPointPosition(k))
    display = rings.GetDisplayNode()
    assert rings.GetLocked() and display.GetGlyphType() == slicer.vtkMRMLMarkupsDisplayNode.Circle2D
    assert display.GetColor() == pytest.approx(markups.WARNING_COLOUR)
    assert display.GetSelectedColor() == pytest.approx(markups.WARNING_COLOUR)
    assert rings.GetTransformNodeID() == annotation.points.GetTransformNodeID()
    assert annotation.review_banner() == (
        "Review needed: T12-L1 spacing is implausible; landmarks near the film edge.\n"
        "Flagged points to check (red rings): T1 bottom-right, T12 top-right."
    )


def test_moving_a_flagged_point_removes_its_ring(scene, volume, landmarks, answer):
    annotation = logic_module.SpineCascadeLogic(scene).apply_answer(volume, flagged_answer(answer, [3, 45]))
    for k in (3, 45):
        vertebra, corner = divmod(k, 4)
        position = geometry.pixels_to_ras(volume, landmarks[vertebra, corner] + (2.0, 1.0))[0]
        annotation.points.SetNthControlPointPosition(k, *position)
        if k == 3:
            assert ring_labels(annotation) == ["T12 top-right"]
            assert annotation.review_banner().endswith("(red rings): T12 top-right.")
    assert ring_labels(annotation) == []
    assert annotation.review_banner().endswith("All 2 flagged points have been moved.")
    assert annotation.review_banner().startswith("Review needed: T12-L1 spacing")


def test_many_flagged_points_are_counted_in_the_banner(scene, volume, answer):
    doc = flagged_answer(answer, list(range(12)), reasons=[])
    annotation = logic_module.SpineCascadeLogic(scene).apply_answer(volume, doc)
    assert annotation.review_banner() == (
        "Review needed: the server flagged this prediction.\nFlagged points to check (red rings): 12 points."
    )
    assert len(ring_labels(annotation)) == 12


@pytest.mark.parametrize("quality", [None, {"review_needed": False, "reasons": [], "flagged_landmarks": []}])
def test_a_prediction_without_a_review_flag_shows_no_banner_and_no_rings(scene, volume, answer, quality):
    """An older server sends no `quality` at all: nothing is flagged."""
    doc = dict(answer) if quality is None else {**answer, "quality": quality}
    annotation = logic_module.SpineCascadeLogic(scene).apply_answer(volume, doc)
    assert annotation.quality == logic_module.Quality()
    assert annotation.review_banner() == "" and ring_labels(annotation) == []


def test_points_flagged_without_a_review_are_ringed_but_raise_no_banner(scene, volume, answer):
    annotation = logic_module.SpineCascadeLogic(scene).apply_answer(volume, flagged_answer(answer, [7], review=False))
    assert annotation.review_banner() == "" and ring_labels(annotation) == ["T2 bottom-right"]


def test_the_rings_go_with_the_landmarks(scene, volume, answer):
    logic = logic_module.SpineCascadeLogic(scene)
    logic.apply_answer(volume, flagged_answer(answer, [1, 2]))
    once = scene_content(scene)
    assert ("vtkMRMLMarkupsFiducialNode", "example flagged points") in once
    logic.apply_answer(volume, answer)
    assert scene_content(scene) == once and ring_labels(logic.annotation(volume)) == []
    logic.forget(volume)
    assert not scene.GetNodesByName("example flagged points").GetNumberOfItems()


def test_moving_the_levels_renames_the_points_where_they_lie(scene, volume, landmarks, answer):
    logic = logic_module.SpineCascadeLogic(scene)
    doc = flagged_answer(answer, [5, 45], reasons=["levels uncertain: the spine sits high in the film"])
    annotation = logic.apply_answer(volume, doc)
    assert "Levels up or Levels down renames them all at once" in annotation.review_banner()
    t3 = point_names().index("T3 top-left")
    dragged = landmarks[2, 0] + (3.0, 2.0)
    annotation.points.SetNthControlPointPosition(t3, *geometry.pixels_to_ras(volume, dragged)[0])
    before = [kind for kind, _ in scene_content(scene)]

    moved = logic.move_levels(volume, 1)  # the old nodes are replaced, not added to
    assert logic.annotation(volume) is moved and [kind for kind, _ in scene_content(scene)] == before
    now = geometry.ras_to_pixels(volume, positions(moved.points)).reshape(17, 4, 2)
    was = landmarks.copy()
    was[2, 0] = dragged
    np.testing.assert_allclose(now[:16], was[1:], atol=1e-9)  # the points stay, each named one vertebra up
    step = was[16].mean(axis=0) - was[15].mean(axis=0)
    np.testing.assert_allclose(now[16], was[16] + step, atol=1e-9)  # L5 extrapolated below the old L5
    assert moved.moved == {t3 - 4}  # the dragged point is T2's now
    assert moved.quality.flagged == {1, 41, 64, 65, 66, 67}
    assert moved.uncertainty[:64] == pytest.approx(answer_uncertainty(answer)[4:])
    assert ring_labels(moved)[-4:] == [f"L5 {c}" for c in ("top-left", "top-right", "bottom-left", "bottom-right")]
    assert moved.review_banner().startswith(
        "Review needed: levels uncertain: the spine sits high in the film; "
        "vertebrae renamed by hand, 1 level(s) down: L5 extrapolated, to be placed."
    )
    assert "renames them all" not in moved.review_banner()
    assert_same_angles(moved.cobb, cobb_angles(now, HEIGHT))

    doc = logic.export_label(volume)
    assert doc["review"]["levels_moved"] == 1 and doc["review"]["moved_points"] == ["T2 top-left"]
    np.testing.assert_allclose(label_from_json_dict(doc).landmarks, now, atol=1e-9)

    back = logic.move_levels(volume, -1)
    again = geometry.ras_to_pixels(volume, positions(back.points)).reshape(17, 4, 2)
    np.testing.assert_allclose(again[1:], was[1:], atol=1e-9)
    assert back.moved == {t3} and back.levels_moved == 0
    assert "levels_moved" not in logic.export_label(volume)["review"]


def test_moving_the_levels_needs_every_point(scene, volume, answer):
    logic = logic_module.SpineCascadeLogic(scene)
    annotation = logic.apply_answer(volume, answer)
    annotation.points.RemoveNthControlPoint(7)
    before = scene_content(scene)
    with pytest.raises(LabelError, match="T2 bottom-right"):
        logic.move_levels(volume, 1)
    assert scene_content(scene) == before


def answer_uncertainty(answer: dict) -> np.ndarray:
    return np.array(answer["uncertainty"]["per_landmark"])


# ---------------------------------------------------------------------- settings in the parameter node


SETTINGS = {
    "server_url": "http://pacs-gateway:8123",
    "model": "vertebral_landmarks_v2",
    "strategy": "random",
    "threshold": 35.5,
    "display": logic_module.DisplayOptions(corners=False, lines=True, labels=True),
}


def save_and_load(scene, path) -> object:
    """A new scene loaded from `scene` saved as `path`: a .mrml scene file, or a .mrb bundle with the data."""
    loaded = slicer.vtkMRMLScene()
    if str(path).endswith(".mrb"):
        bundle = path.parent / "bundle"
        bundle.mkdir()
        saver = slicer.vtkMRMLApplicationLogic()
        saver.SetMRMLScene(scene)
        assert saver.SaveSceneToSlicerDataBundleDirectory(str(bundle)) and saver.Zip(str(path), str(bundle))
        opener = slicer.vtkMRMLApplicationLogic()
        opener.SetMRMLScene(loaded)
        unpacked = path.parent / "unpacked"
        unpacked.mkdir()
        assert opener.OpenSlicerDataBundle(str(path), str(unpacked))
    else:
        scene.SetRootDirectory(str(path.parent))
        scene.SetURL(str(path))
        assert scene.Commit()
        loaded.SetURL(str(path))
        assert loaded.Connect()
    return loaded


@pytest.mark.parametrize("file_name", ["settings.mrml", "settings.mrb"])
def test_settings_survive_saving_and_loading_the_scene(scene, tmp_path, file_name):
    volume = testdata.add_example_volume(scene, WIDTH, HEIGHT, name="film 7")
    logic = logic_module.SpineCascadeLogic(scene)
    parameters = logic.parameters
    for name, value in SETTINGS.items():
        setattr(parameters, name, value)
    parameters.xray = volume

    loaded = save_and_load(scene, tmp_path / file_name)
    assert os.path.getsize(tmp_path / file_name) > 0
    node = loaded.GetSingletonNode("SpineCascade", "vtkMRMLScriptedModuleNode")
    assert node is not None and node.GetAttribute("ModuleName") == "SpineCascade"
    restored = logic_module.SpineCascadeLogic(loaded)
    assert {name: getattr(restored.parameters, name) for name in SETTINGS} == SETTINGS
    assert (restored.model, restored.strategy, restored.threshold) == ("vertebral_landmarks_v2", "random", 35.5)
    assert restored.parameters.xray.GetName() == "film 7"
    if file_name.endswith(".mrb"):  # the bundle carries the X-ray's pixels too
        assert geometry.image_size(restored.parameters.xray) == (WIDTH, HEIGHT)


def test_landmarks_placed_in_a_loaded_scene_follow_its_settings(scene, tmp_path, answer):
    logic = logic_module.SpineCascadeLogic(scene)
    logic.set_threshold(30.0)
    logic.set_display(logic_module.DisplayOptions(corners=True, lines=False, labels=True))
    loaded = save_and_load(scene, tmp_path / "settings.mrml")
    loaded.AddNode(slicer.vtkMRMLSelectionNode())
    volume = testdata.add_example_volume(loaded, WIDTH, HEIGHT)
    annotation = logic_module.SpineCascadeLogic(loaded).apply_answer(volume, answer)
    selected = np.array([annotation.points.GetNthControlPointSelected(i) for i in range(68)], dtype=bool)
    np.testing.assert_array_equal(selected, testdata.example_uncertainty() <= 30.0)
    assert annotation.points.GetDisplayNode().GetPointLabelsVisibility()
    assert not any(line.GetDisplayNode().GetVisibility() for line in annotation.lines["PT"])


def test_the_logic_applies_whatever_changes_the_parameter_node(scene, volume, answer, tmp_path):
    """A script, the widget or a scene loaded on top: the logic redraws from the node, never from a copy."""
    logic = logic_module.SpineCascadeLogic(scene)
    annotation = logic.apply_answer(volume, answer)
    node = scene.GetSingletonNode("SpineCascade", "vtkMRMLScriptedModuleNode")
    assert node is logic.parameter_node()
    node.SetParameter("UncertaintyThresholdPx", "100")
    assert logic.threshold == 100.0
    assert all(annotation.points.GetNthControlPointSelected(i) for i in range(68))
    node.SetParameter("ShowCorners", "false")
    assert not annotation.points.GetDisplayNode().GetVisibility()

    other = slicer.vtkMRMLScene()
    logic_module.SpineCascadeLogic(other).set_threshold(0.5)
    save_and_load(other, tmp_path / "strict.mrml")
    scene.SetURL(str(tmp_path / "strict.mrml"))
    assert scene.Import()  # the scene's singleton parameter node takes the file's values
    assert logic.threshold == 0.5
    assert not any(annotation.points.GetNthControlPointSelected(i) for i in range(68))


def test_missing_or_unreadable_settings_read_as_defaults(scene):
    logic = logic_module.SpineCascadeLogic(scene)
    defaults = (logic.model, logic.strategy, logic.threshold, logic.display, logic.parameters.server_url)
    assert defaults == ("vertebral_landmarks", "landmark_uncertainty", 20.0, logic_module.DisplayOptions(),
                        "http://127.0.0.1:8000")
    node = logic.parameter_node()
    node.SetParameter("UncertaintyThresholdPx", "a lot")
    node.SetParameter("ShowLines", "perhaps")
    assert logic.threshold == 20.0 and logic.display.lines
    node.SetParameter("UncertaintyThresholdPx", "-3")
    assert logic.threshold == 20.0
    with pytest.raises(ValueError, match="threshold"):
        logic.set_threshold(float("nan"))
    logic.set_threshold(42.0)
    scene.Clear(0)  # closing the scene resets the settings, and the node is found again under its module's name
    assert logic.threshold == 20.0
    assert logic.parameter_node().GetAttribute("ModuleName") == "SpineCascade"
    assert scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode") == 1


# ---------------------------------------------------------------------- training status


def trainer_status(status: str = "RUNNING", **fields) -> dict:
    """What the app's trainer publishes under GET /info/ train_stats (apps/scoliosis/lib/trainers/job.py)."""
    return {"status": status, "pid": 4321, "start_ts": "2026-01-01T10:00:00Z", "mode": "fine-tune",
            "labelled_images": 12, **fields}


RUNNING = trainer_status(images=12, stages_done=2, stages_total=6, stage="corners-1", epoch=3, loss=0.01234)
FINISHED = trainer_status("DONE", stages_done=6, stages_total=6, model_version="0123456789ab")


@pytest.mark.parametrize(
    ("stats", "task", "expected"),
    [
        (None, None, ("NONE", None, "the server has not trained yet")),
        ({}, None, ("NONE", None, "the server has not trained yet")),
        (RUNNING, {"status": "RUNNING"},
         ("RUNNING", 2 / 6, "stage corners-1, epoch 3, loss 0.01234, 2 of 6 stages done")),
        (trainer_status(images=12, stages_done=0, stages_total=6), {"status": "RUNNING"},
         ("RUNNING", 0.0, "0 of 6 stages done")),
        (trainer_status(), {"status": "RUNNING"}, ("RUNNING", None, "preparing the labelled images")),
        # Submitted or just started: the trainer's status is still the previous run's.
        (FINISHED, {"status": "SUBMITTED"}, ("SUBMITTED", None, "starting")),
        (FINISHED, {"status": "RUNNING"}, ("RUNNING", None, "starting")),
        # The log's wording is not read: only the structured status counts.
        (None, {"status": "RUNNING", "details": ["stage 2/6 epoch 3/8"]}, ("RUNNING", None, "starting")),
        (trainer_status("DONE", stages_done=6, stages_total=6, model_version="0123456789ab", seconds=81.5),
         {"status": "DONE"}, ("DONE", 1.0, "finished after 81.5 s: new model 0123456789ab")),
        (trainer_status("DONE", model_version="0123456789ab"), None, ("DONE", 1.0, "finished: new model 0123456789ab")),
        (trainer_status("ERROR", message="no images with final labels in the datastore"), {"status": "ERROR"},
         ("ERROR", None, "no images with final labels in the datastore")),
        (trainer_status("DONE", model_version="0123456789ab"), {"status": "ERROR", "details": ["ImportError: torch"]},
         ("ERROR", None, "ImportError: torch")),
        (trainer_status("STOPPED", message="stopped with DELETE /train"), {"status": "STOPPED"},
         ("STOPPED", None, "stopped with DELETE /train")),
        (trainer_status(stages_done="2", stages_total=None), {"status": "RUNNING"},
         ("RUNNING", None, "preparing the labelled images")),
    ],
)
def test_training_progress_comes_from_the_structured_status(stats, task, expected):
    status = logic_module.TrainingStatus.from_server(stats, task)
    assert (status.state, status.fraction, status.message) == expected
    assert status.running == (expected[0] in ("SUBMITTED", "RUNNING"))
