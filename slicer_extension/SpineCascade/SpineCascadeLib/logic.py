"""All of the SpineCascade module's behaviour, on MRML nodes and the server, without any GUI.

The widget only calls this, so everything a clinician can do is testable on real MRML (the slicer-core
wheel) without the Slicer application. Each action first fetches and checks everything it needs and only
then changes the scene, so a failure (server down, timeout, bad answer, bad file) leaves the scene as it was.
Angles always come from `spinecascade.measurement.cobb`, on pixel coordinates read back from the points.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import slicer

from spinecascade.errors import LabelError
from spinecascade.io.labels import LandmarkLabel, label_from_json_dict, label_to_json_dict
from spinecascade.landmarks import N_POINTS, point_names
from spinecascade.measurement.cobb import CobbResult, cobb_angles
from SpineCascadeLib.client import DEFAULT_TIMEOUT_S, MonaiLabelClient, ServerError, ServerInfo
from SpineCascadeLib.geometry import image_size
from SpineCascadeLib.imaging import add_volume_from_image, encode_png
from SpineCascadeLib.markups import (
    add_angle_lines,
    add_angle_table,
    add_landmark_node,
    landmarks_from_node,
    point_indices,
    read_markups,
    remove_nodes,
    save_markups,
    show_uncertainty,
    update_angle_lines,
    update_angle_table,
)

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "vertebral_landmarks"
DEFAULT_STRATEGY = "landmark_uncertainty"
# Points whose predicted uncertainty exceeds this many pixels are shown as needing a look.
DEFAULT_UNCERTAINTY_THRESHOLD_PX = 20.0
IMAGE_ID_ATTRIBUTE = "SpineCascade.ImageID"
# A point counts as moved by the clinician when it is this far (pixels) from where it was.
_MOVED_PX = 1e-6
_POINT_EVENTS = (
    slicer.vtkMRMLMarkupsNode.PointModifiedEvent,
    slicer.vtkMRMLMarkupsNode.PointAddedEvent,
    slicer.vtkMRMLMarkupsNode.PointRemovedEvent,
)
# Progress counters in training log lines: "epoch 3/8", "stage 2 of 6", "(3 of 6 stages)".
_UNITS = r"(?:epoch|stage|step|iteration)"
_PROGRESS = re.compile(
    rf"\b{_UNITS}\s*(\d+)\s*(?:/|of)\s*(\d+)|\b(\d+)\s*(?:/|of)\s*(\d+)\s*{_UNITS}s\b", re.IGNORECASE
)
_UNCERTAINTY_TEXT = re.compile(r"uncertainty\s+([0-9.]+)\s*px")


@dataclass
class DisplayOptions:
    """What is drawn: the corner points, the endplate lines of the Cobb angles, the points' names."""

    corners: bool = True
    lines: bool = True
    labels: bool = False


@dataclass
class TrainingStatus:
    """The server's latest training task, reduced to what a progress bar and a status line show."""

    state: str
    fraction: float | None
    message: str

    @property
    def running(self) -> bool:
        return self.state in ("SUBMITTED", "RUNNING")

    @classmethod
    def from_task(cls, task: dict | None) -> TrainingStatus:
        if task is None:
            return cls("NONE", None, "the server has not trained yet")
        state = str(task.get("status", "UNKNOWN")).upper()
        details = [str(line) for line in task.get("details") or []]
        fraction = 1.0 if state == "DONE" else None
        for line in reversed(details):
            counters = [
                (int(a or c), int(b or d)) for a, b, c, d in _PROGRESS.findall(line) if 0 < int(a or c) <= int(b or d)
            ]
            if counters:
                # Nested counters ("stage 2/6 epoch 3/8"): the innermost is done to n/m, the outer ones are
                # at their n-th step.
                n, m = counters[-1]
                fraction = n / m
                for n, m in reversed(counters[:-1]):
                    fraction = (n - 1 + fraction) / m
                break
        return cls(state, fraction, details[-1] if details else state.lower())


@dataclass(eq=False)
class Annotation:
    """One X-ray's landmarks in the scene, with what the server said about them."""

    volume: Any
    points: Any
    lines: dict[str, tuple]
    table: Any
    image: LandmarkLabel  # the image's name, size and spacing, and the landmarks as first placed
    uncertainty: np.ndarray | None
    model: Any = None
    landmarks: np.ndarray | None = None
    cobb: CobbResult | None = None
    error: str | None = None
    moved: set[int] = field(default_factory=set)
    observers: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.volume.GetName()

    def summary(self) -> str:
        """One line for the status bar: the angles with their end vertebrae, or why there are none."""
        if self.cobb is None:
            return f"{self.name}: no angles ({self.error})"
        angles = ", ".join(
            f"{a.name} {a.degrees:.1f}\N{DEGREE SIGN} ({a.end_vertebrae[0]}-{a.end_vertebrae[1]})"
            for a in self.cobb.angles
        )
        moved = f"; {len(self.moved)} points moved" if self.moved else ""
        return f"{self.name}: {angles}; {'S' if self.cobb.s_shaped else 'C'} curve{moved}"


class SpineCascadeLogic:
    """Auto-landmark, edit with live Cobb angles, submit corrections, active learning and training."""

    def __init__(self, scene, client: MonaiLabelClient | None = None) -> None:
        self.scene = scene
        self.client = client
        self.info: ServerInfo | None = None
        self.model = DEFAULT_MODEL
        self.strategy = DEFAULT_STRATEGY
        self.threshold = DEFAULT_UNCERTAINTY_THRESHOLD_PX
        self.display = DisplayOptions()
        self.on_change: Callable[[Annotation], None] | None = None
        self._annotations: dict[str, Annotation] = {}
        self._updating = False

    # ------------------------------------------------------------------ server

    def connect(self, url: str, timeout: float = DEFAULT_TIMEOUT_S) -> ServerInfo:
        """Ask the server what it offers; the client is kept only if it answers."""
        client = MonaiLabelClient(url, timeout=timeout)
        info = client.info()
        if not info.models:
            raise ServerError(f"the server at {client.url} offers no models")
        self.client, self.info = client, info
        self.model = DEFAULT_MODEL if DEFAULT_MODEL in info.models else sorted(info.models)[0]
        if info.strategies and DEFAULT_STRATEGY not in info.strategies:
            self.strategy = info.strategies[0]
        return info

    def _client(self) -> MonaiLabelClient:
        if self.client is None:
            raise ServerError("not connected: enter the server address and press Connect")
        return self.client

    # ------------------------------------------------------------------ landmarks

    def auto_landmark(self, volume) -> Annotation:
        """Landmarks from the server for the volume (by datastore id if it came from there, else uploaded)."""
        image_size(volume)
        client = self._client()
        image_id = volume.GetAttribute(IMAGE_ID_ATTRIBUTE)
        if image_id:
            answer = client.infer(self.model, image_id=image_id)
        else:
            answer = client.infer(self.model, image=encode_png(volume), filename=f"{_slug(volume.GetName())}.png")
        return self.apply_answer(volume, answer)

    def apply_answer(self, volume, answer: Any) -> Annotation:
        """Place a server answer (our label JSON plus `uncertainty`, `model`, ...) on the volume."""
        width, height = image_size(volume)
        try:
            label = label_from_json_dict(answer, source="the server's answer")
        except LabelError as exc:
            raise ServerError(f"the server's answer is not a valid landmark label: {exc}") from None
        if (label.width, label.height) not in ((None, None), (width, height)):
            raise ServerError(
                f"the server's answer is for a {label.width} x {label.height} image, "
                f"but volume {volume.GetName()!r} is {width} x {height} pixels"
            )
        uncertainty = _uncertainty(answer.get("uncertainty"))
        image = replace(
            label, width=width, height=height, image_name=label.image_name or volume.GetName(), extra={}
        )
        return self._install(volume, image, uncertainty, answer.get("model"), set(), None)

    def annotation(self, volume) -> Annotation:
        """The volume's landmarks; LabelError when it has none (or the clinician deleted the point list)."""
        found = self._annotations.get(volume.GetID()) if volume is not None else None
        if found is not None and not self.scene.IsNodePresent(found.points):
            self.forget(volume)
            found = None
        if found is None:
            name = volume.GetName() if volume is not None else "(none)"
            raise LabelError(f"volume {name!r} has no landmarks yet: run Auto-landmark or load a .mrk.json")
        return found

    def has_annotation(self, volume) -> bool:
        try:
            self.annotation(volume)
        except LabelError:
            return False
        return True

    def forget(self, volume) -> None:
        """Remove the volume's landmark nodes from the scene."""
        found = self._annotations.pop(volume.GetID(), None)
        if found is None:
            return
        for tag in found.observers:
            found.points.RemoveObserver(tag)
        remove_nodes(self.scene, [found.points, found.table, *(line for pair in found.lines.values() for line in pair)])

    def close(self) -> None:
        """Stop observing the point lists (the nodes stay in the scene)."""
        for found in self._annotations.values():
            for tag in found.observers:
                found.points.RemoveObserver(tag)
        self._annotations.clear()

    def _install(
        self, volume, image: LandmarkLabel, uncertainty, model, moved: set[int], points
    ) -> Annotation:
        """Create the nodes (or adopt `points`), fill them, and replace the volume's previous landmarks."""
        name = volume.GetName()
        created = [] if points is None else [points]
        try:
            if points is None:
                points = add_landmark_node(self.scene, volume, image.landmarks, f"{name} landmarks")
                created.append(points)
            lines = add_angle_lines(self.scene, name)
            created.extend(line for pair in lines.values() for line in pair)
            table = add_angle_table(self.scene, f"{name} Cobb angles")
            created.append(table)
            for node in [points, *(line for pair in lines.values() for line in pair)]:
                node.SetAndObserveTransformNodeID(volume.GetTransformNodeID())
            annotation = Annotation(volume, points, lines, table, image, uncertainty, model, moved=set(moved))
            self._refresh(annotation)
        except Exception:
            remove_nodes(self.scene, created)
            raise
        self.forget(volume)
        points.SetAttribute("SpineCascade.VolumeID", volume.GetID())
        annotation.observers = [points.AddObserver(event, self._on_points_changed) for event in _POINT_EVENTS]
        self._annotations[volume.GetID()] = annotation
        self._show(annotation)
        return annotation

    def _on_points_changed(self, caller, _event) -> None:
        if self._updating:
            return
        for annotation in self._annotations.values():
            if annotation.points is caller:
                self._refresh(annotation)
                return

    def _refresh(self, annotation: Annotation) -> None:
        """Recompute the angles from the points as they are now and redraw lines, table and colours."""
        self._updating = True
        try:
            # Colours change only when the set of moved points grows, not on every step of a drag.
            recolour = annotation.landmarks is None
            try:
                landmarks = landmarks_from_node(annotation.points, annotation.volume)
            except LabelError as exc:
                annotation.cobb, annotation.error = None, str(exc)
            else:
                if annotation.landmarks is not None:
                    shift = np.abs(landmarks - annotation.landmarks).reshape(N_POINTS, 2).max(axis=1)
                    moved = {int(k) for k in np.flatnonzero(shift > _MOVED_PX)}
                    recolour = not moved <= annotation.moved
                    annotation.moved |= moved
                annotation.landmarks = landmarks
                annotation.cobb = cobb_angles(landmarks, annotation.image.height)
                annotation.error = None
            if recolour:
                show_uncertainty(annotation.points, annotation.uncertainty, self.threshold, annotation.moved)
            update_angle_lines(
                annotation.lines,
                annotation.volume,
                annotation.landmarks,
                annotation.cobb,
                visible=self.display.lines,
                name=annotation.name,
            )
            update_angle_table(annotation.table, annotation.cobb)
        finally:
            self._updating = False
        if self.on_change is not None:
            self.on_change(annotation)

    # ------------------------------------------------------------------ display

    def set_display(self, options: DisplayOptions) -> None:
        self.display = options
        for annotation in self._annotations.values():
            self._show(annotation)

    def set_threshold(self, pixels: float) -> None:
        """Recolour every point list for a new uncertainty threshold."""
        self.threshold = float(pixels)
        for annotation in self._annotations.values():
            self._updating = True
            try:
                show_uncertainty(annotation.points, annotation.uncertainty, self.threshold, annotation.moved)
            finally:
                self._updating = False

    def _show(self, annotation: Annotation) -> None:
        display = annotation.points.GetDisplayNode()
        display.SetVisibility(self.display.corners)
        display.SetPointLabelsVisibility(self.display.labels)
        for pair in annotation.lines.values():
            for line in pair:
                line.GetDisplayNode().SetVisibility(self.display.lines and annotation.cobb is not None)

    # ------------------------------------------------------------------ labels

    def export_label(self, volume) -> dict:
        """The volume's landmarks as our label JSON, in pixels of the original image, with the angles."""
        annotation = self.annotation(volume)
        landmarks = landmarks_from_node(annotation.points, volume)
        height = annotation.image.height
        moved = [point_names()[k] for k in sorted(annotation.moved)]
        review = {"tool": "3D Slicer SpineCascade", "moved_points": moved}
        if annotation.model is not None:
            review["model"] = annotation.model
        label = replace(
            annotation.image,
            landmarks=landmarks,
            extra={"cobb": cobb_angles(landmarks, height).as_dict(), "review": review},
        )
        return label_to_json_dict(label)

    def submit_correction(self, volume) -> dict:
        """Store the edited landmarks as the image's final label; a local image is uploaded first."""
        label = self.export_label(volume)
        client = self._client()
        image_id = volume.GetAttribute(IMAGE_ID_ATTRIBUTE)
        if not image_id:
            png = encode_png(volume)
            wanted = f"{_slug(volume.GetName())}-{hashlib.sha256(png).hexdigest()[:12]}"
            image_id = client.upload_image(wanted, png, f"{wanted}.png")
        answer = client.save_label(image_id, label)
        volume.SetAttribute(IMAGE_ID_ATTRIBUTE, image_id)
        logger.info("SpineCascade: stored the label of %s as %r", volume.GetName(), image_id)
        return answer

    def save_markups(self, volume, path: str | Path) -> None:
        save_markups(self.annotation(volume).points, path)

    def load_markups(self, volume, path: str | Path) -> Annotation:
        """Landmarks of the volume from a .mrk.json file, replacing the ones it has; the file must be complete."""
        width, height = image_size(volume)
        points = read_markups(self.scene, path, f"{volume.GetName()} landmarks")
        try:
            landmarks = landmarks_from_node(points, volume)
        except LabelError:
            remove_nodes(self.scene, [points])
            raise
        uncertainty, moved = _point_state(points)
        previous = self._annotations.get(volume.GetID())
        image = LandmarkLabel(landmarks, width, height, volume.GetName())
        if previous is not None:
            image = replace(previous.image, landmarks=landmarks)
        model = previous.model if previous is not None else None
        return self._install(volume, image, uncertainty, model, moved, points)

    # ------------------------------------------------------------------ active learning and training

    def next_image(self):
        """Download the image the active-learning strategy picks and add it as a volume; None if none left."""
        client = self._client()
        image_id = client.next_sample(self.strategy)
        if image_id is None:
            return None
        data, filename = client.download_image(image_id)
        volume = add_volume_from_image(self.scene, data, image_id)
        volume.SetAttribute(IMAGE_ID_ATTRIBUTE, image_id)
        logger.info("SpineCascade: loaded %s (%s) for labelling", image_id, filename)
        return volume

    def start_training(self) -> TrainingStatus:
        self._client().start_training(self.model)
        return self.training_status()

    def training_status(self) -> TrainingStatus:
        return TrainingStatus.from_task(self._client().training_status())


def _uncertainty(value: Any) -> np.ndarray | None:
    """The per-landmark uncertainty in pixels from an answer, None if absent; ServerError if malformed."""
    if value is None:
        return None
    per_landmark = value.get("per_landmark") if isinstance(value, dict) else None
    if not isinstance(value, dict) or value.get("unit", "pixel") != "pixel" or not isinstance(per_landmark, list):
        raise ServerError("the server's answer has an 'uncertainty' without a per_landmark list in pixels")
    numbers = [v for v in per_landmark if isinstance(v, (int, float)) and not isinstance(v, bool)]
    numbers = [v for v in numbers if math.isfinite(v) and v >= 0]
    if len(per_landmark) != N_POINTS or len(numbers) != N_POINTS:
        raise ServerError(f"the server's answer has an uncertainty that is not {N_POINTS} finite numbers >= 0")
    return np.array(numbers, dtype=np.float64)


def _point_state(points) -> tuple[np.ndarray | None, set[int]]:
    """Uncertainty and moved flags read back from the point descriptions that show_uncertainty writes."""
    values = np.full(N_POINTS, np.nan)
    moved = set()
    for k, i in point_indices(points).items():
        description = points.GetNthControlPointDescription(i)
        match = _UNCERTAINTY_TEXT.search(description)
        if match:
            values[k] = float(match.group(1))
        if "moved" in description:
            moved.add(k)
    return (None if np.isnan(values).any() else values), moved


def _slug(name: str) -> str:
    """A name safe as a datastore id and file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"
