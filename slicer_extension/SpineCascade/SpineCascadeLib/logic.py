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
import vtk

from spinecascade.errors import LabelError
from spinecascade.io.labels import LandmarkLabel, label_from_json_dict, label_to_json_dict
from spinecascade.landmarks import N_CORNERS, N_POINTS, move_levels, point_names
from spinecascade.measurement.cobb import CobbResult, cobb_angles
from spinecascade.measurement.quality import median_vertebra_height
from SpineCascadeLib.client import DEFAULT_TIMEOUT_S, MonaiLabelClient, ServerError, ServerInfo
from SpineCascadeLib.geometry import image_size
from SpineCascadeLib.imaging import add_volume_from_image, encode_png
from SpineCascadeLib.markups import (
    add_angle_lines,
    add_angle_table,
    add_flagged_node,
    add_landmark_node,
    landmarks_from_node,
    point_indices,
    read_markups,
    remove_nodes,
    save_markups,
    show_flagged,
    show_uncertainty,
    update_angle_lines,
    update_angle_table,
)
from SpineCascadeLib.parameters import (
    DEFAULT_MODEL,
    DEFAULT_STRATEGY,
    DisplayOptions,
    SpineCascadeParameters,
    parameter_node,
)

logger = logging.getLogger(__name__)

IMAGE_ID_ATTRIBUTE = "SpineCascade.ImageID"
# A point counts as moved by the clinician when it is this far (pixels) from where it was.
_MOVED_PX = 1e-6
_POINT_EVENTS = (
    slicer.vtkMRMLMarkupsNode.PointModifiedEvent,
    slicer.vtkMRMLMarkupsNode.PointAddedEvent,
    slicer.vtkMRMLMarkupsNode.PointRemovedEvent,
)
_UNCERTAINTY_TEXT = re.compile(r"uncertainty\s+([0-9.]+)\s*px")
# The banner names the flagged points up to this many, and counts them beyond.
_BANNER_NAMES = 8


@dataclass(frozen=True)
class Quality:
    """The server's review flag of a prediction: whether a person must check it, why, and which points."""

    review_needed: bool = False
    reasons: tuple[str, ...] = ()
    flagged: frozenset[int] = frozenset()  # landmark indices 0-67

    @classmethod
    def from_answer(cls, value: Any) -> Quality:
        """The answer's `quality` entry; None (an older server) flags nothing. ServerError if malformed."""
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise ServerError("the server's answer has a 'quality' that is not an object")
        review = value.get("review_needed", False)
        reasons = value.get("reasons") or []
        flagged = value.get("flagged_landmarks") or []
        if not isinstance(review, bool):
            raise ServerError(f"the server's answer has a quality 'review_needed' of {review!r}, not true or false")
        if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
            raise ServerError("the server's answer has quality 'reasons' that are not a list of texts")
        if not isinstance(flagged, list) or not all(
            isinstance(k, int) and not isinstance(k, bool) and 0 <= k < N_POINTS for k in flagged
        ):
            raise ServerError(
                f"the server's answer has quality 'flagged_landmarks' that are not landmark indices 0-{N_POINTS - 1}"
            )
        return cls(review, tuple(r.strip() for r in reasons if r.strip()), frozenset(flagged))


@dataclass
class TrainingStatus:
    """The server's latest training run, reduced to what a progress bar and a status line show."""

    state: str
    fraction: float | None
    message: str

    @property
    def running(self) -> bool:
        return self.state in ("SUBMITTED", "RUNNING")

    @classmethod
    def from_server(cls, stats: dict | None, task: dict | None = None) -> TrainingStatus:
        """From the trainer's own status (GET /info/ `train_stats`: status, stage, epoch, loss, stages_done,
        stages_total, message) and MONAI Label's task record (GET /train/), which knows of a run from the
        moment it is submitted, before the run writes a status of its own."""
        stats = stats if isinstance(stats, dict) and stats else None
        stats_state = str(stats.get("status", "UNKNOWN")).upper() if stats else None
        task_state = str(task.get("status", "UNKNOWN")).upper() if isinstance(task, dict) else None
        state = task_state or stats_state or "NONE"
        if state == "NONE":
            return cls(state, None, "the server has not trained yet")
        # Until the new run writes its status, the trainer's status is the previous run's.
        current = stats if stats_state == ("RUNNING" if state == "SUBMITTED" else state) else None
        if state in ("SUBMITTED", "RUNNING"):
            return cls(state, _stage_fraction(current), _progress_text(current))
        if state == "DONE":
            return cls(state, 1.0, _done_text(current))
        if current is not None and current.get("message"):
            return cls(state, None, str(current["message"]))
        details = [str(line) for line in (task or {}).get("details") or []]
        return cls(state, None, details[-1] if details else f"{state.lower()}; see the server's log")


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _stage_fraction(stats: dict | None) -> float | None:
    """stages_done / stages_total of a running run; None while that is not known yet."""
    if stats is None:
        return None
    done, total = _count(stats.get("stages_done")), _count(stats.get("stages_total"))
    if done is None or not total:
        return None
    return min(done / total, 1.0)


def _progress_text(stats: dict | None) -> str:
    if stats is None:
        return "starting"
    parts = []
    if stats.get("stage"):
        parts.append(f"stage {stats['stage']}")
    if _count(stats.get("epoch")) is not None:
        parts.append(f"epoch {stats['epoch']}")
    loss = stats.get("loss")
    if isinstance(loss, (int, float)) and not isinstance(loss, bool) and math.isfinite(loss):
        parts.append(f"loss {loss:.4g}")
    done, total = _count(stats.get("stages_done")), _count(stats.get("stages_total"))
    if done is not None and total:
        parts.append(f"{done} of {total} stages done")
    return ", ".join(parts) or "preparing the labelled images"


def _done_text(stats: dict | None) -> str:
    if stats is None or not stats.get("model_version"):
        return "finished"
    seconds = stats.get("seconds")
    took = f" after {seconds:g} s" if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else ""
    return f"finished{took}: new model {stats['model_version']}"


@dataclass(eq=False)
class Annotation:
    """One X-ray's landmarks in the scene, with what the server said about them."""

    volume: Any
    points: Any
    lines: dict[str, tuple]
    table: Any
    flagged_points: Any  # a point list ringing the flagged points that nobody has moved yet
    image: LandmarkLabel  # the image's name, size and spacing, and the landmarks as first placed
    uncertainty: np.ndarray | None
    model: Any = None
    quality: Quality = field(default_factory=Quality)
    landmarks: np.ndarray | None = None
    cobb: CobbResult | None = None
    error: str | None = None
    moved: set[int] = field(default_factory=set)
    levels_moved: int = 0  # vertebrae the clinician renamed the whole chain by (move_levels); + is down
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

    @property
    def unchecked_flags(self) -> list[int]:
        """The landmarks the server flagged that nobody has moved yet, in landmark order."""
        return sorted(self.quality.flagged - self.moved)

    def review_banner(self) -> str:
        """The warning the module panel shows when the server asks for a review; empty when it does not."""
        if not self.quality.review_needed:
            return ""
        reasons = "; ".join(r.rstrip(". ") for r in self.quality.reasons) or "the server flagged this prediction"
        lines = [f"Review needed: {reasons}."]
        if any(r.startswith("levels uncertain") for r in self.quality.reasons) and not self.levels_moved:
            lines.append("If every vertebra is a level off, Levels up or Levels down renames them all at once.")
        waiting = self.unchecked_flags
        if waiting:
            names = [point_names()[k] for k in waiting]
            shown = ", ".join(names) if len(names) <= _BANNER_NAMES else f"{len(names)} points"
            lines.append(f"Flagged points to check (red rings): {shown}.")
        elif self.quality.flagged:
            lines.append(f"All {len(self.quality.flagged)} flagged points have been moved.")
        return "\n".join(lines)


class SpineCascadeLogic:
    """Auto-landmark, edit with live Cobb angles, submit corrections, active learning and training.

    The settings (server, model, strategy, uncertainty threshold, what is drawn) live in the scene's parameter
    node, so they are saved with the scene; the logic reads them from there and redraws every X-ray's
    landmarks whenever the node changes, whoever changed it (the widget, a script, a loaded scene).
    """

    def __init__(self, scene, client: MonaiLabelClient | None = None) -> None:
        self.scene = scene
        self.client = client
        self.info: ServerInfo | None = None
        self.on_change: Callable[[Annotation], None] | None = None
        self._annotations: dict[str, Annotation] = {}
        self._updating = False
        self._observed: tuple[Any, int] | None = None  # the parameter node and the observer's tag
        self.parameter_node()

    # ------------------------------------------------------------------ settings

    def parameter_node(self):
        """The scene's parameter node (added if missing), observed so that changes to it are applied."""
        node = parameter_node(self.scene)
        if self._observed is None or self._observed[0] is not node:
            self._stop_observing_parameters()
            self._observed = (node, node.AddObserver(vtk.vtkCommand.ModifiedEvent, self._on_parameters_changed))
        return node

    @property
    def parameters(self) -> SpineCascadeParameters:
        return SpineCascadeParameters(self.parameter_node())

    @property
    def model(self) -> str:
        return self.parameters.model

    @property
    def strategy(self) -> str:
        return self.parameters.strategy

    @property
    def threshold(self) -> float:
        return self.parameters.threshold

    @property
    def display(self) -> DisplayOptions:
        return self.parameters.display

    def set_threshold(self, pixels: float) -> None:
        """Store a new uncertainty threshold; every point list is recoloured."""
        self.parameters.threshold = pixels

    def set_display(self, options: DisplayOptions) -> None:
        """Store what to draw; every X-ray's landmarks are shown accordingly."""
        self.parameters.display = options

    def _on_parameters_changed(self, _caller, _event) -> None:
        threshold, display = self.threshold, self.display
        for annotation in self._annotations.values():
            self._updating = True
            try:
                show_uncertainty(annotation.points, annotation.uncertainty, threshold, annotation.moved)
            finally:
                self._updating = False
            self._show(annotation, display)

    def _stop_observing_parameters(self) -> None:
        if self._observed is not None:
            node, tag = self._observed
            node.RemoveObserver(tag)
            self._observed = None

    # ------------------------------------------------------------------ server

    def connect(self, url: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> ServerInfo:
        """Ask the server (`url`, else the parameter node's) what it offers; kept and stored only if it answers.

        The scene's model and strategy stay chosen when the server offers them; otherwise the defaults, else
        the first the server lists.
        """
        parameters = self.parameters
        client = MonaiLabelClient(parameters.server_url if url is None else url, timeout=timeout)
        info = client.info()
        if not info.models:
            raise ServerError(f"the server at {client.url} offers no models")
        self.client, self.info = client, info
        node = parameters.node
        was_modifying = node.StartModify()
        try:
            parameters.server_url = client.url
            parameters.model = _choose(parameters.model, DEFAULT_MODEL, sorted(info.models))
            if info.strategies:
                parameters.strategy = _choose(parameters.strategy, DEFAULT_STRATEGY, list(info.strategies))
        finally:
            node.EndModify(was_modifying)
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
        """Place a server answer (our label JSON plus `uncertainty`, `model`, `quality`, ...) on the volume."""
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
        quality = Quality.from_answer(answer.get("quality"))
        image = replace(
            label, width=width, height=height, image_name=label.image_name or volume.GetName(), extra={}
        )
        return self._install(volume, image, uncertainty, answer.get("model"), quality, set(), None)

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
        remove_nodes(self.scene, [found.points, found.flagged_points, found.table, *_line_nodes(found.lines)])

    def close(self) -> None:
        """Stop observing the point lists and the parameter node (the nodes stay in the scene)."""
        for found in self._annotations.values():
            for tag in found.observers:
                found.points.RemoveObserver(tag)
        self._annotations.clear()
        self._stop_observing_parameters()

    def _install(
        self, volume, image: LandmarkLabel, uncertainty, model, quality: Quality, moved: set[int], points
    ) -> Annotation:
        """Create the nodes (or adopt `points`), fill them, and replace the volume's previous landmarks."""
        name = volume.GetName()
        created = [] if points is None else [points]
        try:
            if points is None:
                points = add_landmark_node(self.scene, volume, image.landmarks, f"{name} landmarks")
                created.append(points)
            flagged_points = add_flagged_node(self.scene, f"{name} flagged points")
            created.append(flagged_points)
            lines = add_angle_lines(self.scene, name)
            created.extend(_line_nodes(lines))
            table = add_angle_table(self.scene, f"{name} Cobb angles")
            created.append(table)
            for node in [points, flagged_points, *_line_nodes(lines)]:
                node.SetAndObserveTransformNodeID(volume.GetTransformNodeID())
            annotation = Annotation(
                volume, points, lines, table, flagged_points, image, uncertainty, model, quality, moved=set(moved)
            )
            self._refresh(annotation)
        except Exception:
            remove_nodes(self.scene, created)
            raise
        self.forget(volume)
        points.SetAttribute("SpineCascade.VolumeID", volume.GetID())
        annotation.observers = [points.AddObserver(event, self._on_points_changed) for event in _POINT_EVENTS]
        self._annotations[volume.GetID()] = annotation
        self._show(annotation, self.display)
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
                show_flagged(annotation.flagged_points, annotation.points, annotation.unchecked_flags)
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

    @staticmethod
    def _show(annotation: Annotation, options: DisplayOptions) -> None:
        display = annotation.points.GetDisplayNode()
        display.SetVisibility(options.corners)
        display.SetPointLabelsVisibility(options.labels)
        annotation.flagged_points.GetDisplayNode().SetVisibility(options.corners)
        for line in _line_nodes(annotation.lines):
            line.GetDisplayNode().SetVisibility(options.lines and annotation.cobb is not None)

    def move_levels(self, volume, levels: int) -> Annotation:
        """Rename the whole chain `levels` vertebrae down the spine (negative: up), for an answer that is whole
        levels off: the points stay where they are and take the names of the vertebrae they lie on, with what
        they carry (uncertainty, flags, moved by the clinician). Each vertebra the chain did not have is
        extrapolated from its end (spinecascade.landmarks.move_levels), flagged for a check and given the
        uncertainty of a whole vertebra's height."""
        annotation = self.annotation(volume)
        landmarks = landmarks_from_node(annotation.points, volume)
        renamed, added = move_levels(landmarks, levels)
        if not levels:
            return annotation
        shift = N_CORNERS * int(levels)

        def carried(indices) -> set[int]:
            return {k - shift for k in indices if 0 <= k - shift < N_POINTS}

        uncertainty = None
        if annotation.uncertainty is not None:
            uncertainty = np.roll(annotation.uncertainty, -shift)
            uncertainty[added] = median_vertebra_height(renamed)
        new_vertebrae = ", ".join(dict.fromkeys(point_names()[k].split()[0] for k in added))
        reasons = (*annotation.quality.reasons, f"vertebrae renamed by hand, {abs(levels)} level(s) "
                   f"{'down' if levels > 0 else 'up'}: {new_vertebrae} extrapolated, to be placed")
        quality = Quality(True, reasons, frozenset(carried(annotation.quality.flagged) | set(added)))
        image = replace(annotation.image, landmarks=renamed)
        done = self._install(volume, image, uncertainty, annotation.model, quality, carried(annotation.moved), None)
        done.levels_moved = annotation.levels_moved + int(levels)
        logger.info("SpineCascade: renamed the vertebrae of %s %+d levels", volume.GetName(), levels)
        return done

    # ------------------------------------------------------------------ labels

    def export_label(self, volume) -> dict:
        """The volume's landmarks as our label JSON, in pixels of the original image, with the angles."""
        annotation = self.annotation(volume)
        landmarks = landmarks_from_node(annotation.points, volume)
        height = annotation.image.height
        moved = [point_names()[k] for k in sorted(annotation.moved)]
        review = {"tool": "3D Slicer SpineCascade", "moved_points": moved}
        if annotation.levels_moved:
            review["levels_moved"] = annotation.levels_moved
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
        quality = previous.quality if previous is not None else Quality()
        return self._install(volume, image, uncertainty, model, quality, moved, points)

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
        """The latest run: its state from MONAI Label's task record, its progress from the trainer's status."""
        client = self._client()
        task = client.training_status()
        self.info = client.info()
        return TrainingStatus.from_server(self.info.train_stats.get(self.model), task)


def _choose(current: str, default: str, offered: list[str]) -> str:
    """The current choice if offered, else the default if offered, else the first offered."""
    return next(name for name in (current, default, *offered) if name in offered)


def _line_nodes(lines: dict[str, tuple]) -> list:
    return [line for pair in lines.values() for line in pair]


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
