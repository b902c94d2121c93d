"""Landmark label files: AASCE .mat and CSV, our JSON format, and 3D Slicer markups (.mrk.json).

Every reader returns the canonical (17, 4, 2) pixel array of `spinecascade.landmarks` and every problem is a
LabelError that names the file, so a bad label stops a run with a message a person can act on.
Points in JSON and Slicer files are matched by name, never by position, so hand-edited files whose points
were reordered still load correctly.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from spinecascade.errors import LabelError
from spinecascade.io.atomic import atomic_write_bytes, atomic_write_text
from spinecascade.landmarks import (
    CORNERS,
    N_POINTS,
    SHAPE,
    VERTEBRAE,
    as_landmarks,
    point_index,
    point_names,
    validate,
)

JSON_FORMAT = "spinecascade-landmarks"
JSON_VERSION = 1
JSON_UNITS = "pixel"
JSON_COORDINATES = "x right, y down, origin at the top-left image corner"
MAT_KEY = "p2"
MRK_SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
    "markups-schema-v1.0.3.json#"
)
MRK_SUFFIX = ".mrk.json"
_JSON_KEYS = ("format", "version", "image", "units", "coordinates", "landmarks")
# Slicer's default control point orientation for an LPS file (a 180 degree turn about z from RAS).
_MRK_ORIENTATION = [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0]


@dataclass
class LandmarkLabel:
    """One image's 68 corners and what is known of the image; `extra` carries unknown JSON keys through."""

    landmarks: np.ndarray
    width: int | None
    height: int | None
    image_name: str | None = None
    spacing_mm: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- AASCE MATLAB files


def read_mat(path: str | Path) -> np.ndarray:
    """The (17, 4, 2) pixel landmarks of an AASCE `.mat` file (key `p2`, 68 x 2)."""
    path = Path(path)
    data = _read_bytes(path)
    try:
        content = scipy.io.loadmat(io.BytesIO(data))
    except Exception as exc:  # scipy raises many unrelated types on a file that is not MATLAB
        raise LabelError(f"{path}: not a readable MATLAB .mat file ({exc})") from exc
    if MAT_KEY not in content:
        keys = sorted(k for k in content if not k.startswith("__"))
        raise LabelError(f"{path}: no variable {MAT_KEY!r} in the .mat file (found {keys or 'none'})")
    points = np.asarray(content[MAT_KEY])
    if points.shape != (N_POINTS, 2):
        raise LabelError(f"{path}: variable {MAT_KEY!r} has shape {points.shape}, expected ({N_POINTS}, 2)")
    if not (np.issubdtype(points.dtype, np.integer) or np.issubdtype(points.dtype, np.floating)):
        raise LabelError(f"{path}: variable {MAT_KEY!r} is not numeric ({points.dtype})")
    return validate(points.astype(np.float64), source=str(path))


def write_mat(path: str | Path, landmarks: np.ndarray) -> None:
    """Write an AASCE-compatible `.mat` file: `p2` as 68 x 2 float64 pixel (x, y)."""
    path = Path(path)
    arr = validate(landmarks, source=str(path))
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {MAT_KEY: arr.reshape(N_POINTS, 2)})
    atomic_write_bytes(path, buffer.getvalue())


# ---------------------------------------------------------------- AASCE CSV files


def read_filenames_csv(path: str | Path) -> list[str]:
    """Image names in row order; that order is the row order of landmarks.csv and angles.csv."""
    path = Path(path)
    names = [row[0].strip() for row in _csv_rows(path) if row and row[0].strip()]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise LabelError(f"{path}: image name {name!r} is listed twice")
        seen.add(name)
    return names


def write_filenames_csv(path: str | Path, names: list[str]) -> None:
    atomic_write_text(Path(path), "".join(f"{name}\n" for name in names))


def read_landmarks_csv_normalised(
    landmarks_csv: str | Path, filenames_csv: str | Path
) -> dict[str, np.ndarray]:
    """Name -> (17, 4, 2) image-relative landmarks from landmarks.csv (68 x / w, then 68 y / h a row)."""
    landmarks_csv = Path(landmarks_csv)
    names = read_filenames_csv(filenames_csv)
    rows = _numeric_rows(landmarks_csv, 2 * N_POINTS)
    if len(rows) != len(names):
        raise LabelError(f"{landmarks_csv}: {len(rows)} rows, but {filenames_csv} names {len(names)} images")
    result = {}
    for name, row in zip(names, rows, strict=True):
        xy = np.stack([row[:N_POINTS], row[N_POINTS:]], axis=1)
        result[name] = validate(xy, source=f"{landmarks_csv} ({name})")
    return result


def read_landmarks_csv(
    landmarks_csv: str | Path, filenames_csv: str | Path, sizes: Mapping[str, tuple[int, int]] | None
) -> dict[str, np.ndarray]:
    """Name -> (17, 4, 2) landmarks: pixels with `sizes` (name -> (width, height)), normalised without."""
    normalised = read_landmarks_csv_normalised(landmarks_csv, filenames_csv)
    if sizes is None:
        return normalised
    missing = [name for name in normalised if name not in sizes]
    if missing:
        raise LabelError(f"{landmarks_csv}: no image size for {len(missing)} images, e.g. {missing[0]!r}")
    return {name: arr * np.array(sizes[name], dtype=np.float64) for name, arr in normalised.items()}


def write_landmarks_csv(
    landmarks_csv: str | Path, filenames_csv: str | Path, items: Mapping[str, np.ndarray]
) -> None:
    """Write normalised landmarks in the AASCE layout, with shortest-exact floats so reading back is exact."""
    lines = []
    for name, arr in items.items():
        flat = validate(arr, source=f"{landmarks_csv} ({name})").reshape(N_POINTS, 2)
        lines.append(",".join(_exact(v) for v in np.concatenate([flat[:, 0], flat[:, 1]])) + "\n")
    atomic_write_text(Path(landmarks_csv), "".join(lines))
    write_filenames_csv(filenames_csv, list(items))


def read_angles_csv(path: str | Path) -> np.ndarray:
    """(N, 3) Cobb angles PT, MT, TL in degrees, in filenames.csv row order."""
    path = Path(path)
    rows = _numeric_rows(path, 3)
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def write_angles_csv(path: str | Path, angles: np.ndarray) -> None:
    arr = np.asarray(angles, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise LabelError(f"{path}: angles must have shape (N, 3) (PT, MT, TL), got {arr.shape}")
    atomic_write_text(Path(path), "".join(",".join(_exact(v) for v in row) + "\n" for row in arr))


# ---------------------------------------------------------------- our JSON format


def label_to_json_dict(label: LandmarkLabel) -> dict[str, Any]:
    """Our JSON document for a label (docs/label-format.md); `extra` keys follow the fixed ones."""
    arr = validate(label.landmarks, source="label")
    points = [
        {"name": f"{v} {c}", "vertebra": v, "corner": c, "x": float(arr[i, j, 0]), "y": float(arr[i, j, 1])}
        for i, v in enumerate(VERTEBRAE)
        for j, c in enumerate(CORNERS)
    ]
    doc: dict[str, Any] = {
        "format": JSON_FORMAT,
        "version": JSON_VERSION,
        "image": {
            "name": label.image_name,
            "width": label.width,
            "height": label.height,
            "spacing_mm": None if label.spacing_mm is None else [float(s) for s in label.spacing_mm],
        },
        "units": JSON_UNITS,
        "coordinates": JSON_COORDINATES,
        "landmarks": points,
    }
    clash = set(label.extra) & set(doc)
    if clash:
        raise LabelError(f"label extra keys {sorted(clash)} would overwrite the format's own keys")
    doc.update(label.extra)
    return doc


def label_from_json_dict(d: Any, source: str = "<json>") -> LandmarkLabel:
    """Parse our JSON document; points are placed by name, so their order in the file does not matter."""
    if not isinstance(d, dict):
        raise LabelError(f"{source}: expected a JSON object, got {type(d).__name__}")
    if d.get("format") != JSON_FORMAT:
        raise LabelError(f"{source}: format is {d.get('format')!r}, expected {JSON_FORMAT!r}")
    if d.get("version") != JSON_VERSION or isinstance(d.get("version"), bool):
        raise LabelError(
            f"{source}: unsupported {JSON_FORMAT} version {d.get('version')!r}; "
            f"this reader knows version {JSON_VERSION}"
        )
    if d.get("units", JSON_UNITS) != JSON_UNITS:
        raise LabelError(f"{source}: units {d.get('units')!r} not supported, expected {JSON_UNITS!r}")
    image = d.get("image") or {}
    if not isinstance(image, dict):
        raise LabelError(f"{source}: 'image' must be an object or null")
    entries = d.get("landmarks")
    if not isinstance(entries, list):
        raise LabelError(f"{source}: 'landmarks' must be a list of {N_POINTS} points")
    found: dict[str, tuple[float, float]] = {}
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise LabelError(f"{source}: landmark {k} is not an object")
        name = _json_point_name(entry, k, source)
        _add(found, name, (_number(entry, "x", source, name), _number(entry, "y", source, name)), source)
    landmarks = _assemble(found, source)
    name = image.get("name")
    if name is not None and not isinstance(name, str):
        raise LabelError(f"{source}: image name must be a string or null")
    return LandmarkLabel(
        landmarks=landmarks,
        width=_size(image, "width", source),
        height=_size(image, "height", source),
        image_name=name,
        spacing_mm=_spacing(image.get("spacing_mm"), source),
        extra={k: v for k, v in d.items() if k not in _JSON_KEYS},
    )


def read_json_label(path: str | Path) -> LandmarkLabel:
    path = Path(path)
    return label_from_json_dict(_load_json(path), source=str(path))


def write_json_label(path: str | Path, label: LandmarkLabel) -> None:
    atomic_write_text(Path(path), json.dumps(label_to_json_dict(label), indent=2) + "\n")


# ---------------------------------------------------------------- 3D Slicer markups


def label_to_mrk_dict(
    label: LandmarkLabel,
    spacing: tuple[float, float] = (1.0, 1.0),
    origin: tuple[float, float] = (0.0, 0.0),
    coordinate_system: str = "LPS",
) -> dict[str, Any]:
    """A Slicer point list: LPS position = origin + pixel * spacing in x and y, z = 0; RAS negates x, y."""
    sign = _mrk_sign(coordinate_system, "label")
    sx, sy = _check_spacing(spacing, "label")
    arr = validate(label.landmarks, source="label").reshape(N_POINTS, 2)
    points = []
    for k, name in enumerate(point_names()):
        x = sign * (origin[0] + arr[k, 0] * sx)
        y = sign * (origin[1] + arr[k, 1] * sy)
        points.append(
            {
                "id": str(k + 1),
                "label": name,
                "description": "",
                "associatedNodeID": "",
                "position": [float(x), float(y), 0.0],
                "orientation": list(_MRK_ORIENTATION),
                "selected": True,
                "locked": False,
                "visibility": True,
                "positionStatus": "defined",
            }
        )
    markup = {
        "type": "Fiducial",
        "coordinateSystem": coordinate_system,
        "coordinateUnits": "mm",
        "locked": False,
        "fixedNumberOfControlPoints": False,
        "labelFormat": "%N-%d",
        "lastUsedControlPointNumber": N_POINTS,
        "controlPoints": points,
        "measurements": [],
        "display": {
            "visibility": True,
            "opacity": 1.0,
            "pointLabelsVisibility": True,
            "glyphType": "Sphere3D",
        },
    }
    if label.image_name:
        markup["name"] = label.image_name
    return {"@schema": MRK_SCHEMA, "markups": [markup]}


def label_from_mrk_dict(
    d: Any,
    spacing: tuple[float, float] | None = None,
    origin: tuple[float, float] = (0.0, 0.0),
    source: str = "<mrk.json>",
) -> LandmarkLabel:
    """Inverse of label_to_mrk_dict, points matched by label name; spacing None means 1 mm a pixel, unknown.

    The file does not record the pixel spacing, so the spacing it was written with must be given again.
    """
    if not isinstance(d, dict) or not isinstance(d.get("markups"), list):
        raise LabelError(f"{source}: not a Slicer markups file (no 'markups' list)")
    sx, sy = _check_spacing(spacing or (1.0, 1.0), source)
    found: dict[str, tuple[float, float]] = {}
    fiducials = [m for m in d["markups"] if isinstance(m, dict) and m.get("type") == "Fiducial"]
    if not fiducials:
        raise LabelError(f"{source}: no point list ('Fiducial' markup) in the file")
    for markup in fiducials:
        sign = _mrk_sign(markup.get("coordinateSystem", "LPS"), source)
        units = markup.get("coordinateUnits", "mm")
        # The schema also allows a DICOM code triple such as ["mm", "UCUM", "millimeter"].
        if (units[0] if isinstance(units, list) and units else units) != "mm":
            raise LabelError(f"{source}: coordinate units {units!r} not supported, expected 'mm'")
        for k, point in enumerate(markup.get("controlPoints") or []):
            if not isinstance(point, dict) or not isinstance(point.get("label"), str):
                raise LabelError(f"{source}: control point {k} has no label")
            name = _canonical_name(point["label"], source)
            position = point.get("position")
            if point.get("positionStatus", "defined") != "defined" or not _is_vector(position):
                raise LabelError(f"{source}: point {name!r} has no defined position")
            x = (sign * position[0] - origin[0]) / sx
            y = (sign * position[1] - origin[1]) / sy
            _add(found, name, (x, y), source)
    name = fiducials[0].get("name")
    return LandmarkLabel(
        landmarks=_assemble(found, source),
        width=None,
        height=None,
        image_name=name if isinstance(name, str) and name else None,
        spacing_mm=None if spacing is None else (sx, sy),
    )


def read_mrk_json(
    path: str | Path, spacing: tuple[float, float] | None = None, origin: tuple[float, float] = (0.0, 0.0)
) -> LandmarkLabel:
    path = Path(path)
    return label_from_mrk_dict(_load_json(path), spacing, origin, source=str(path))


def write_mrk_json(
    path: str | Path,
    label: LandmarkLabel,
    spacing: tuple[float, float] = (1.0, 1.0),
    origin: tuple[float, float] = (0.0, 0.0),
    coordinate_system: str = "LPS",
) -> None:
    doc = label_to_mrk_dict(label, spacing, origin, coordinate_system)
    atomic_write_text(Path(path), json.dumps(doc, indent=2) + "\n")


# ---------------------------------------------------------------- any single-label file


def is_mrk_path(path: str | Path) -> bool:
    return Path(path).name.lower().endswith(MRK_SUFFIX)


def read_label(
    path: str | Path,
    image_size: tuple[int, int] | None = None,
    *,
    spacing: tuple[float, float] | None = None,
    origin: tuple[float, float] = (0.0, 0.0),
) -> LandmarkLabel:
    """One label by suffix: `.mat`, `.json` (ours), `.mrk.json` (Slicer, placed with spacing and origin) or `.dcm`
    (a DICOM SR landmark report, spinecascade.io.dicom_sr)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".mat":
        name = path.name[: -len(".mat")]
        label = LandmarkLabel(read_mat(path), None, None, image_name=name if Path(name).suffix else None)
    elif suffix == ".json":
        doc = _load_json(path)
        if is_mrk_path(path) or (isinstance(doc, dict) and "markups" in doc):
            label = label_from_mrk_dict(doc, spacing, origin, source=str(path))
        else:
            label = label_from_json_dict(doc, source=str(path))
    elif suffix == ".dcm":
        from spinecascade.io.dicom_sr import read_sr  # it builds on this module

        label = read_sr(path).label
    else:
        raise LabelError(f"{path}: {_unsupported(suffix)}")
    if image_size is not None:
        _apply_size(label, image_size, str(path))
    return label


def write_label(
    path: str | Path,
    label: LandmarkLabel,
    *,
    spacing: tuple[float, float] = (1.0, 1.0),
    origin: tuple[float, float] = (0.0, 0.0),
) -> None:
    """Write by suffix: `.mat` (landmarks only), `.mrk.json` (with spacing/origin) or our `.json`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".mat":
        write_mat(path, label.landmarks)
    elif is_mrk_path(path):
        write_mrk_json(path, label, spacing, origin)
    elif suffix == ".json":
        write_json_label(path, label)
    elif suffix == ".dcm":
        raise LabelError(f"{path}: a DICOM SR report references its film; write it with "
                         "`spinecascade predict FILM.dcm --sr REPORT.dcm`")
    else:
        raise LabelError(f"{path}: {_unsupported(suffix)}")


# ---------------------------------------------------------------- helpers


def _unsupported(suffix: str) -> str:
    if suffix == ".csv":
        return (
            "a .csv file holds a whole dataset, not one label; use the dataset functions "
            "(read_landmarks_csv, AasceDataset)"
        )
    return f"unknown label format {suffix or '(no suffix)'!r}; expected .mat, .json, .mrk.json or .dcm (DICOM SR)"


def _apply_size(label: LandmarkLabel, image_size: tuple[int, int], source: str) -> None:
    width, height = (int(v) for v in image_size)
    if width <= 0 or height <= 0:
        raise LabelError(f"{source}: image size must be positive, got {width} x {height}")
    for attr, value in (("width", width), ("height", height)):
        known = getattr(label, attr)
        if known is not None and known != value:
            raise LabelError(f"{source}: the label says image {attr} {known}, but the image has {value}")
        setattr(label, attr, value)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise LabelError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def _load_json(path: Path) -> Any:
    try:
        return json.loads(_read_bytes(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LabelError(f"{path}: not valid JSON ({exc})") from exc


def _csv_rows(path: Path) -> list[list[str]]:
    text = _read_bytes(path).decode("utf-8-sig", errors="replace")
    return list(csv.reader(io.StringIO(text)))


def _numeric_rows(path: Path, width: int) -> list[list[float]]:
    rows = []
    for k, row in enumerate(_csv_rows(path), start=1):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != width:
            raise LabelError(f"{path}: row {k} has {len(row)} values, expected {width}")
        try:
            rows.append([float(cell) for cell in row])
        except ValueError:
            raise LabelError(f"{path}: row {k} holds a value that is not a number") from None
    return rows


def _exact(value: float) -> str:
    return repr(float(value))


def _canonical_name(name: str, source: str) -> str:
    try:
        index = point_index(name)
    except LabelError as exc:
        raise LabelError(f"{source}: {exc}") from None
    return point_names()[index]


def _json_point_name(entry: dict, k: int, source: str) -> str:
    name = entry.get("name")
    if not isinstance(name, str):
        raise LabelError(f"{source}: landmark {k} has no name")
    name = _canonical_name(name, source)
    vertebra, corner = name.split(" ", 1)
    if entry.get("vertebra", vertebra) != vertebra or entry.get("corner", corner) != corner:
        raise LabelError(
            f"{source}: landmark {name!r} says vertebra {entry.get('vertebra')!r}, "
            f"corner {entry.get('corner')!r}"
        )
    return name


def _number(entry: dict, key: str, source: str, name: str) -> float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LabelError(f"{source}: landmark {name!r} has {key} = {value!r}, expected a finite number")
    return float(value)


def _add(found: dict[str, tuple[float, float]], name: str, xy: tuple[float, float], source: str) -> None:
    if name in found:
        raise LabelError(f"{source}: landmark {name!r} appears more than once")
    found[name] = xy


def _assemble(found: Mapping[str, tuple[float, float]], source: str) -> np.ndarray:
    missing = [n for n in point_names() if n not in found]
    if missing:
        shown = ", ".join(repr(n) for n in missing[:4]) + (", ..." if len(missing) > 4 else "")
        raise LabelError(f"{source}: {len(missing)} of {N_POINTS} landmarks missing: {shown}")
    arr = np.array([found[n] for n in point_names()], dtype=np.float64).reshape(SHAPE)
    return validate(as_landmarks(arr, source), source=source)


def _size(image: dict, key: str, source: str) -> int | None:
    value = image.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value <= 0:
        raise LabelError(f"{source}: image {key} must be a positive integer or null, got {value!r}")
    return int(value)


def _spacing(value: Any, source: str) -> tuple[float, float] | None:
    if value is None:
        return None
    if not _is_vector(value, 2):
        raise LabelError(f"{source}: spacing_mm must be [sx, sy] or null, got {value!r}")
    return _check_spacing((float(value[0]), float(value[1])), source)


def _check_spacing(spacing: tuple[float, float], source: str) -> tuple[float, float]:
    sx, sy = (float(s) for s in spacing)
    if not (math.isfinite(sx) and math.isfinite(sy) and sx > 0 and sy > 0):
        raise LabelError(f"{source}: pixel spacing must be two positive numbers, got {tuple(spacing)}")
    return sx, sy


def _is_vector(value: Any, length: int = 3) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == length
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )


def _mrk_sign(coordinate_system: Any, source: str) -> float:
    if coordinate_system == "LPS":
        return 1.0
    if coordinate_system == "RAS":
        return -1.0
    raise LabelError(f"{source}: coordinate system {coordinate_system!r} not supported; expected LPS or RAS")
