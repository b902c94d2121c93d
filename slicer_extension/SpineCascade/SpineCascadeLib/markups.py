"""The MRML nodes that show one X-ray's landmarks: a point list, the Cobb angles' endplate lines and a table.

Points are named like "L3 top-left" and read back by name (through the library's own label parser), so a
clinician may reorder them in the Markups module without breaking anything. Slicer colours a point list's
points with only two colours, the one for selected and the one for unselected points, so the uncertainty
is shown with those: selected points (green) are ones the model is sure of or that the clinician has moved,
unselected points (orange) are ones the model is unsure of and nobody has touched yet. Each point's
description carries its uncertainty in pixels, which the Markups module lists beside the point.

Those two colours are taken, so the points the server's quality check flags get a third colour from a second,
locked point list: a red ring around each flagged point that nobody has moved yet.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer
import vtk

from spinecascade.errors import LabelError
from spinecascade.io.labels import JSON_FORMAT, JSON_VERSION, label_from_json_dict
from spinecascade.landmarks import N_POINTS, as_landmarks, point_names
from spinecascade.measurement.cobb import ANGLE_NAMES, CobbAngle, CobbResult
from SpineCascadeLib.geometry import pixels_to_ras, ras_to_pixels

CONFIDENT_COLOUR = (0.25, 0.85, 0.35)
UNCERTAIN_COLOUR = (1.0, 0.55, 0.1)
WARNING_COLOUR = (0.95, 0.1, 0.1)
# The ring's size relative to a corner point's glyph, so that it surrounds the point rather than covering it.
FLAGGED_GLYPH_FACTOR = 2.0
ANGLE_COLOURS = {"PT": (0.3, 0.65, 1.0), "MT": (0.95, 0.35, 0.85), "TL": (1.0, 0.85, 0.2)}
# Endplate lines reach this fraction of the endplate's width past each corner, the way Cobb lines are drawn
# on film: long enough to judge their angle by eye.
LINE_EXTENSION = 0.5
TABLE_COLUMNS = ("Angle", "Cobb angle", "Upper end vertebra", "Lower end vertebra")
_UPPER_ENDPLATE = (0, 1)  # top-left, top-right
_LOWER_ENDPLATE = (2, 3)  # bottom-left, bottom-right


# ---------------------------------------------------------------------- the 68 corner points


def add_landmark_node(scene, volume, landmarks: np.ndarray, name: str):
    """A point list with the 68 corners, in RAS through the volume's geometry, named in the AASCE order."""
    ras = pixels_to_ras(volume, as_landmarks(landmarks).reshape(N_POINTS, 2))
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    node.CreateDefaultDisplayNodes()
    with _modifying(node):
        for label, position in zip(point_names(), ras, strict=True):
            node.AddControlPoint(vtk.vtkVector3d(*position), label)
    display = node.GetDisplayNode()
    display.SetSelectedColor(*CONFIDENT_COLOUR)
    display.SetColor(*UNCERTAIN_COLOUR)
    return node


def landmarks_from_node(node, volume) -> np.ndarray:
    """(17, 4, 2) pixel landmarks of a point list, matched by point name; LabelError if any is missing."""
    entries = []
    for i in range(node.GetNumberOfControlPoints()):
        if node.GetNthControlPointPositionStatus(i) != slicer.vtkMRMLMarkupsNode.PositionDefined:
            continue
        x, y = ras_to_pixels(volume, node.GetNthControlPointPosition(i))[0]
        entries.append({"name": node.GetNthControlPointLabel(i), "x": float(x), "y": float(y)})
    doc = {"format": JSON_FORMAT, "version": JSON_VERSION, "landmarks": entries}
    return label_from_json_dict(doc, source=f"point list {node.GetName()!r}").landmarks


def point_indices(node) -> dict[int, int]:
    """Landmark index (0-67) -> control point index, for the points whose names are landmark names."""
    names = {name: k for k, name in enumerate(point_names())}
    found = {}
    for i in range(node.GetNumberOfControlPoints()):
        k = names.get(node.GetNthControlPointLabel(i).strip())
        if k is not None:
            found[k] = i
    return found


def show_uncertainty(node, uncertainty: np.ndarray | None, threshold: float, moved: set[int]) -> None:
    """Select (green) the confident and the moved points, unselect (orange) the rest; describe each one."""
    indices = point_indices(node)
    with _modifying(node):
        for k, i in indices.items():
            value = None if uncertainty is None else float(uncertainty[k])
            parts = [] if value is None else [f"uncertainty {value:.1f} px"]
            if k in moved:
                parts.append("moved")
            node.SetNthControlPointDescription(i, ", ".join(parts))
            node.SetNthControlPointSelected(i, k in moved or value is None or value <= threshold)


def add_flagged_node(scene, name: str):
    """An empty, locked point list drawn as red rings (filled by show_flagged); it cannot be dragged by mistake."""
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetLocked(True)
    display = node.GetDisplayNode()
    display.SetColor(*WARNING_COLOUR)
    display.SetSelectedColor(*WARNING_COLOUR)
    display.SetGlyphType(slicer.vtkMRMLMarkupsDisplayNode.Circle2D)
    display.SetGlyphScale(display.GetGlyphScale() * FLAGGED_GLYPH_FACTOR)
    display.SetPointLabelsVisibility(False)
    display.SetPropertiesLabelVisibility(False)
    return node


def show_flagged(node, points, flagged: list[int]) -> None:
    """Put one ring on each flagged landmark (indices 0-67), where that landmark's point is now, named like it."""
    indices = point_indices(points)
    with _modifying(node):
        node.RemoveAllControlPoints()
        for k in flagged:
            if k in indices:
                position = points.GetNthControlPointPosition(indices[k])
                node.AddControlPoint(vtk.vtkVector3d(*position), point_names()[k])


# ---------------------------------------------------------------------- Cobb angle lines and table


def endplate_segments(landmarks: np.ndarray, angle: CobbAngle) -> tuple[np.ndarray, np.ndarray]:
    """Pixel end points (2, 2) of the upper endplate of the upper and the lower endplate of the lower vertebra."""
    p = as_landmarks(landmarks)
    return (
        _extended(p[angle.upper, list(_UPPER_ENDPLATE)]),
        _extended(p[angle.lower, list(_LOWER_ENDPLATE)]),
    )


def _extended(segment: np.ndarray) -> np.ndarray:
    start, end = segment
    reach = (end - start) * LINE_EXTENSION
    return np.array([start - reach, end + reach])


def add_angle_lines(scene, name: str) -> dict[str, tuple]:
    """Two locked line markups for each of PT, MT and TL; placed by update_angle_lines."""
    lines = {}
    for angle in ANGLE_NAMES:
        pair = []
        for which in ("upper", "lower"):
            line = scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", f"{name} {angle} {which}")
            line.CreateDefaultDisplayNodes()
            for _ in range(2):
                line.AddControlPoint(vtk.vtkVector3d(0.0, 0.0, 0.0))
            line.SetLocked(True)
            line.SetFixedNumberOfControlPoints(True)
            line.GetMeasurement("length").SetEnabled(False)
            display = line.GetDisplayNode()
            display.SetSelectedColor(*ANGLE_COLOURS[angle])
            display.SetColor(*ANGLE_COLOURS[angle])
            display.SetPointLabelsVisibility(False)
            display.SetPropertiesLabelVisibility(False)
            pair.append(line)
        lines[angle] = tuple(pair)
    return lines


def update_angle_lines(
    lines: dict[str, tuple], volume, landmarks: np.ndarray | None, cobb: CobbResult | None, *, visible: bool, name: str
) -> None:
    """Move each angle's lines onto its end vertebrae's endplates (named after them); shown only with angles."""
    for angle in cobb.angles if cobb is not None else ():
        segments = endplate_segments(landmarks, angle)
        for line, segment, vertebra, which in zip(
            lines[angle.name], segments, angle.end_vertebrae, ("upper", "lower"), strict=True
        ):
            with _modifying(line):
                for i, position in enumerate(pixels_to_ras(volume, segment)):
                    line.SetNthControlPointPosition(i, *position)
                line.SetName(f"{name} {angle.name}: {which} endplate of {vertebra}")
    for pair in lines.values():
        for line in pair:
            line.GetDisplayNode().SetVisibility(visible and cobb is not None)


def add_angle_table(scene, name: str):
    """A table with one row for each of PT, MT and TL (degrees and end vertebrae)."""
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    for title in TABLE_COLUMNS:
        column = vtk.vtkDoubleArray() if title == "Cobb angle" else vtk.vtkStringArray()
        column.SetName(title)
        table.AddColumn(column)
    table.SetColumnUnitLabel("Cobb angle", "deg")
    table.SetColumnDescription("Cobb angle", "Cobb angle by the AASCE challenge's method")
    for angle in ANGLE_NAMES:
        row = table.AddEmptyRow()
        table.SetCellText(row, 0, angle)
    table.SetUseColumnTitleAsColumnHeader(True)
    table.SetLocked(True)  # computed from the points: edited there, not in the table
    return table


def update_angle_table(table, cobb: CobbResult | None) -> None:
    """Write the angles into the table; empty cells and NaN while the landmarks are incomplete."""
    degrees = table.GetTable().GetColumnByName("Cobb angle")
    for row, name in enumerate(ANGLE_NAMES):
        angle = None if cobb is None else {a.name: a for a in cobb.angles}[name]
        degrees.SetValue(row, float("nan") if angle is None else angle.degrees)
        upper, lower = ("", "") if angle is None else angle.end_vertebrae
        table.SetCellText(row, 2, upper)
        table.SetCellText(row, 3, lower)
    table.SetAttribute("SpineCascade.Curve", "" if cobb is None else ("S" if cobb.s_shaped else "C"))
    table.Modified()


# ---------------------------------------------------------------------- .mrk.json files


def save_markups(node, path: str | Path) -> None:
    """Write the point list as Slicer's own .mrk.json (names, positions, selection and descriptions)."""
    storage = _json_storage(node.GetScene(), path)
    try:
        if not storage.WriteData(node):
            raise OSError(f"{path}: Slicer could not write the point list")
    finally:
        node.GetScene().RemoveNode(storage)


def read_markups(scene, path: str | Path, name: str):
    """A new point list read from a .mrk.json file; nothing is left in the scene if reading fails."""
    if not Path(path).is_file():
        raise LabelError(f"{path}: no such file")
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    storage = _json_storage(scene, path)
    try:
        if not storage.ReadData(node) or node.GetNumberOfControlPoints() == 0:
            raise LabelError(f"{path}: not a Slicer point list (.mrk.json) that Slicer can read")
        node.SetName(name)
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        display.SetSelectedColor(*CONFIDENT_COLOUR)
        display.SetColor(*UNCERTAIN_COLOUR)
    except Exception:
        remove_nodes(scene, [node])
        raise
    finally:
        scene.RemoveNode(storage)
    return node


def remove_nodes(scene, nodes) -> None:
    """Remove nodes with their display nodes, which plain MRML would leave behind as orphans."""
    for node in nodes:
        if not scene.IsNodePresent(node):
            continue
        count = node.GetNumberOfDisplayNodes() if node.IsA("vtkMRMLDisplayableNode") else 0
        displays = [node.GetNthDisplayNode(i) for i in range(count)]
        scene.RemoveNode(node)
        for display in displays:
            if display is not None and scene.IsNodePresent(display):
                scene.RemoveNode(display)


def _json_storage(scene, path: str | Path):
    storage = slicer.vtkMRMLMarkupsJsonStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    return storage


class _modifying:
    """StartModify/EndModify around a batch of changes, so observers hear of them once."""

    def __init__(self, node) -> None:
        self.node = node

    def __enter__(self) -> None:
        self.was_modifying = self.node.StartModify()

    def __exit__(self, *exc_info: object) -> None:
        self.node.EndModify(self.was_modifying)
