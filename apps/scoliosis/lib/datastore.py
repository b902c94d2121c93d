"""A local datastore of radiographs whose labels are landmark JSON files, checked before they are stored.

MONAI Label's LocalDatastore copies whatever a client uploads. Here a label is parsed (our JSON format, or a
3D Slicer point list converted to it), validated against its image, refused with a 4xx answer that says why,
and written atomically; the label it replaces is kept under labels/<tag>/history/<image id>/. The datastore's
index (datastore_v2.json) is written atomically too, and re-read before every change, because MONAI Label
runs training and scoring in other processes that update it as well.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from filelock import FileLock
from monailabel.datastore.local import DataModel, LocalDatastore
from monailabel.interfaces.datastore import DefaultLabelTag

from lib.configs.landmarks import ConfigError, flag
from spinecascade.errors import ImageError, LabelError
from spinecascade.io.atomic import atomic_path, atomic_write_text
from spinecascade.io.dataset import image_size
from spinecascade.io.images import load_image
from spinecascade.io.labels import LandmarkLabel, label_from_json_dict, label_from_mrk_dict, write_json_label
from spinecascade.landmarks import validate
from spinecascade.measurement.label_check import check_landmarks

log = logging.getLogger(__name__)

IMAGE_PATTERNS = ("*.jpg", "*.jpeg", "*.png", "*.dcm", "*.nrrd", "*.JPG", "*.JPEG", "*.PNG", "*.DCM", "*.NRRD")
LABEL_SUFFIX = ".json"
HISTORY = "history"
TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # a folder name under labels/: no path tricks
MAX_LABEL_BYTES = 2_000_000  # a label is about 10 kB; anything this large is not one


class LandmarkDatastore(LocalDatastore):
    def __init__(self, studies: str, auto_reload: bool = True, read_only: bool = False) -> None:
        super().__init__(studies, extensions=IMAGE_PATTERNS, auto_reload=auto_reload, read_only=read_only)

    # Labels -------------------------------------------------------------------------------------------
    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        """Validate, convert to our JSON, keep the previous version, write atomically, then index it."""
        self._init_from_datastore_file()
        if image_id not in self._datastore.objects:
            raise HTTPException(404, f"no image {image_id!r} in the datastore")
        tag, label, info = checked_label(image_id, label_filename, Path(self.get_image_uri(image_id)), label_tag,
                                         label_info)

        label_dir = Path(self._datastore.label_path(tag))
        dest = label_dir / f"{image_id}{LABEL_SUFFIX}"
        with FileLock(self._lock_file):
            label_dir.mkdir(parents=True, exist_ok=True)
            previous = self._keep_previous(image_id, tag)
            write_json_label(dest, label)
            info.update({"ts": int(time.time()), "name": dest.name})
            if previous:
                info["previous"] = previous
            self._datastore.objects[image_id].labels[tag] = DataModel(info=info, ext=LABEL_SUFFIX)
            self._update_datastore_file(lock=False)
        log.info("stored label %s (%s)%s", image_id, tag, f"; previous kept as {previous}" if previous else "")
        return image_id

    def _keep_previous(self, image_id: str, tag: str) -> str | None:
        """Copy the label about to be replaced into the history; the current file stays until replaced."""
        current = self.get_label_uri(image_id, tag)
        if not current or not os.path.isfile(current):
            return None
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
        target = Path(self._datastore.label_path(tag)) / HISTORY / image_id / f"{stamp}{Path(current).suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as temporary:
            shutil.copyfile(current, temporary)
        return str(target.relative_to(self._datastore.label_path(None)))

    # Images -------------------------------------------------------------------------------------------
    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        """Only a radiograph the app can read gets into the datastore."""
        try:
            load_image(image_filename)
        except ImageError as exc:
            raise HTTPException(422, str(exc).replace(image_filename, image_id or "image")) from None
        return super().add_image(image_id, image_filename, image_info)

    def get_image_info(self, image_id: str) -> dict[str, Any]:
        self._init_from_datastore_file()
        return super().get_image_info(image_id)

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        self._init_from_datastore_file()
        if image_id not in self._datastore.objects:
            raise HTTPException(404, f"no image {image_id!r} in the datastore")
        super().update_image_info(image_id, info)

    # LocalDatastore internals -------------------------------------------------------------------------
    def _to_id(self, file: str) -> tuple[str, str]:
        # The base class strips every short suffix, so "1.2.840.5.json" would become id "1".
        if file.endswith(LABEL_SUFFIX):
            return file[: -len(LABEL_SUFFIX)], LABEL_SUFFIX
        return super()._to_id(file)

    def _list_files(self, path: str, patterns: Any) -> dict[str, str]:
        # The base class looks for labels with the image patterns; ours are JSON files.
        if os.path.realpath(path) != os.path.realpath(self._datastore.image_path()):
            patterns = [f"*{LABEL_SUFFIX}"]
        return super()._list_files(path, patterns)

    def _update_datastore_file(self, lock: bool = True) -> None:
        def write() -> None:
            text = json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str)
            atomic_write_text(self._datastore_config_path, text)
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

        if lock:
            with FileLock(self._lock_file):
                write()
        else:
            write()


def checked_label(image_id: str, label_filename: str, image_path: Path, label_tag: str,
                  label_info: dict[str, Any]) -> tuple[str, LandmarkLabel, dict[str, Any]]:
    """The tag, the label parsed and checked against its image, and the info to store with it; what cannot be
    stored is refused with a 4xx answer that says why (shared with the DICOMweb datastore)."""
    tag = label_tag or DefaultLabelTag.FINAL.value
    if not TAG.fullmatch(tag) or tag == HISTORY:
        raise HTTPException(422, f"label tag {tag!r}: use letters, digits, '-' and '_' (e.g. final, original)")
    info = dict(label_info or {})
    info.pop("params", None)  # an inference result: the label file itself holds all of it
    try:
        force = flag(info.pop("force", False), "force")
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from None
    label = parse_label(Path(label_filename), image_path, image_id)
    findings = [str(f) for f in check_landmarks(label.landmarks, label.width, label.height)]
    if findings and tag == DefaultLabelTag.FINAL.value and not force:
        shown = "; ".join(findings[:5]) + (f"; and {len(findings) - 5} more" if len(findings) > 5 else "")
        raise HTTPException(
            422,
            f"label for {image_id!r} refused: {len(findings)} implausible landmark(s): {shown}. Correct it, "
            'or send params {"force": true} to store it anyway (training then repairs or skips it).',
        )
    if findings:
        info["findings"] = findings
        log.warning("storing label %s (%s) with findings: %s", image_id, tag, "; ".join(findings))
    return tag, label, info


def parse_label(path: Path, image_path: Path, image_id: str) -> LandmarkLabel:
    """Our JSON or a Slicer point list, placed on the image and checked: 68 finite points inside it."""
    try:
        if path.stat().st_size > MAX_LABEL_BYTES:
            raise HTTPException(413, f"label is over {MAX_LABEL_BYTES:,} bytes; a landmark label is ~10 kB")
        document = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HTTPException(422, f"label is not a JSON document: {exc}") from None
    try:
        if isinstance(document, dict) and "markups" in document:
            # Slicer positions are physical: place them with the image's own spacing and origin.
            radiograph = load_image(image_path)
            width, height = radiograph.width, radiograph.height
            label = label_from_mrk_dict(document, radiograph.spacing, radiograph.origin, source="label")
        else:
            label = label_from_json_dict(document, source="label")
            width, height = image_size(image_path)
        for what, said, actual in (("width", label.width, width), ("height", label.height, height)):
            if said is not None and said != actual:
                raise LabelError(f"label: says image {what} {said}, but image {image_id!r} has {actual}")
        label.landmarks = validate(label.landmarks, width, height, source="label")
    except LabelError as exc:
        raise HTTPException(422, str(exc)) from None
    except ImageError as exc:
        log.error("image %s of the datastore cannot be read: %s", image_id, exc)
        raise HTTPException(409, f"image {image_id!r} in the datastore cannot be read") from None
    label.width, label.height, label.image_name = width, height, image_path.name
    return label
