"""A datastore on a PACS over DICOMweb: radiographs in, landmark labels out as DICOM Structured Reports.

Images are the PACS's series of the configured modalities (DX and CR by default); an image id is the
SeriesInstanceUID, as in MONAI Label's own DICOMweb datastore (a series with several films is read from its
first instance). A film is fetched when it is first needed and cached. A final label is stored in the PACS as a
new Comprehensive SR (spinecascade.io.dicom_sr) in the film's study, naming the version it replaces; older
versions stay in the PACS. The newest report of a film is its label: GET /datastore/label answers it as our JSON,
the active-learning strategy counts the film as labelled, and training reads it.

A report is written to the local outbox first and sent from there, so a PACS that is down or refuses the store
loses nothing: the request gets a 503 (unreachable) or 502 (refused) answer that says the label is kept, and the
outbox is sent again every few seconds and before every listing. Labels with other tags (e.g. "original") stay on
this server. Nothing is downloaded at start except a check that the PACS takes the credentials.

Cache folder: films/<id>.dcm, reports/<uid>.dcm, outbox/<uid>.dcm, labels/<tag>/<id>.json, index.json.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pydicom
import requests
from dicomweb_client import DICOMwebClient
from fastapi import HTTPException
from filelock import FileLock
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from pydicom.dataset import Dataset

from lib.configs.dicomweb import DicomWebConfig
from lib.configs.landmarks import ConfigError
from lib.datastore import HISTORY, checked_label
from spinecascade.errors import LabelError
from spinecascade.io.atomic import atomic_path, atomic_write_text
from spinecascade.io.dicom_sr import SERIES_DESCRIPTION, build_sr, read_sr
from spinecascade.io.labels import LandmarkLabel, write_json_label

log = logging.getLogger(__name__)

FINAL = DefaultLabelTag.FINAL.value
T = TypeVar("T")


class PacsUnavailable(HTTPException):
    """The PACS could not be reached (503) or answered with an error (502)."""


class DicomWebLandmarkDatastore(Datastore):
    def __init__(self, config: DicomWebConfig) -> None:
        self.config = config
        self.client = DICOMwebClient(url=config.url, session=config.session())
        self.client.set_http_retry_params(retry=False)  # a PACS that is down answers at once, not in minutes
        self.root = config.cache
        for folder in ("films", "reports", "outbox", "labels"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self._index_path = self.root / "index.json"
        self._file_lock = FileLock(str(self.root / ".lock"))
        self._lock = threading.RLock()
        self._listing: tuple[float, dict[str, dict[str, str]]] | None = None
        self._name, self._description = config.url, f"DICOMweb {', '.join(config.modalities)} films at {config.url}"
        self._check_access()
        threading.Thread(target=self._send_outbox_forever, name="pacs-outbox", daemon=True).start()

    # The PACS ---------------------------------------------------------------------------------------
    def _check_access(self) -> None:
        """Stop the server at start on credentials or a URL the PACS refuses; a PACS that is down may come back."""
        try:
            self.client.search_for_series(limit=1, search_filters={"Modality": self.config.modalities[0]})
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status in (401, 403):
                message = (f"the DICOMweb server {self.config.url} refused the credentials (HTTP {status}): set "
                           "MONAI_LABEL_DATASTORE_USERNAME and MONAI_LABEL_DATASTORE_PASSWORD, or "
                           "SPINECASCADE_DICOMWEB_TOKEN, to an account that may search, read and store")
            elif 400 <= status < 500:
                message = (f"the DICOMweb server {self.config.url} answered HTTP {status} to a search for series: "
                           "is this the DICOMweb root (e.g. http://pacs:8042/dicom-web)?")
            else:
                log.warning("the PACS at %s answered HTTP %d at start; trying again on each request",
                            self.config.url, status)
                return
            log.error(message)
            raise ConfigError(message) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            log.warning("the PACS at %s cannot be reached now (%s); the server starts and tries again on each "
                        "request", self.config.url, type(exc).__name__)

    def _pacs(self, what: str, call: Callable[[], T]) -> T:
        """Run one DICOMweb call; an outage or an error answer becomes a 503 or 502 that says what failed."""
        try:
            return call()
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise PacsUnavailable(503, f"the PACS at {self.config.url} cannot be reached ({what}: "
                                       f"{type(exc).__name__})") from None
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise PacsUnavailable(502, f"the PACS at {self.config.url} answered HTTP {status} ({what})") from None

    def _films(self) -> dict[str, dict[str, str]]:
        """Series id -> study, modality and description of every film of the configured modalities."""
        with self._lock:
            if self._listing and time.monotonic() - self._listing[0] < self.config.list_seconds:
                return self._listing[1]
        films: dict[str, dict[str, str]] = {}
        for modality in self.config.modalities:
            found = self._pacs(f"searching {modality} series", lambda m=modality: self.client.search_for_series(
                search_filters={"Modality": m}, get_remaining=True))
            for entry in found:
                series = Dataset.from_json(entry)
                if str(series.get("Modality", modality)) not in self.config.modalities:
                    continue  # a PACS that ignores the filter
                films[str(series.SeriesInstanceUID)] = {
                    "StudyInstanceUID": str(series.StudyInstanceUID), "Modality": str(series.get("Modality", "")),
                    "SeriesDescription": str(series.get("SeriesDescription", "")),
                    "PatientID": str(series.get("PatientID", "")), "StudyDate": str(series.get("StudyDate", ""))}
        with self._lock:
            self._listing = (time.monotonic(), films)
        return films

    def _sync_reports(self) -> dict[str, dict[str, Any]]:
        """Send the outbox, then learn of reports in the PACS this server has not read yet; returns the index's
        reports (uid -> image, created, stored)."""
        self._send_outbox()
        # Filtered here, not in the query: Orthanc matches no SeriesDescription that holds a space.
        found = self._pacs("searching the landmark reports", lambda: self.client.search_for_instances(
            search_filters={"Modality": "SR"}, fields=["SeriesDescription"], get_remaining=True))
        in_pacs = {}
        for entry in found:
            instance = Dataset.from_json(entry)
            if str(instance.get("SeriesDescription", SERIES_DESCRIPTION)) != SERIES_DESCRIPTION:
                continue
            in_pacs[str(instance.SOPInstanceUID)] = (str(instance.StudyInstanceUID), str(instance.SeriesInstanceUID))
        with self._file_lock:
            index = self._read_index()
            reports = index.setdefault("reports", {})
            for uid, (study, series) in in_pacs.items():
                if uid in reports and reports[uid].get("stored"):
                    continue
                path = self.root / "reports" / f"{uid}.dcm"
                if not path.is_file():
                    dataset = self._pacs("reading a landmark report", lambda s=study, r=series, u=uid:
                                         self.client.retrieve_instance(s, r, u))
                    _save(dataset, path)
                entry = self._report_entry(path)
                if entry is not None:
                    reports[uid] = entry
            for uid in [u for u, e in reports.items() if e.get("stored") and u not in in_pacs]:
                log.warning("landmark report %s is no longer in the PACS: forgetting it", uid)
                del reports[uid]
            self._write_index(index)
        return reports

    def _report_entry(self, path: Path) -> dict[str, Any] | None:
        try:
            reported = read_sr(path)
        except LabelError as exc:
            log.warning("ignoring a landmark report this server cannot read: %s", exc)
            return {"image": None, "created": "", "stored": True, "error": str(exc)}
        return {"image": reported.series_uid, "study": reported.study_uid, "created": reported.created,
                "stored": path.parent.name == "reports"}

    # The outbox -------------------------------------------------------------------------------------
    def _send_outbox(self) -> None:
        """Store every waiting report in the PACS (oldest first); stops at the first failure, which it raises."""
        with self._file_lock:
            waiting = sorted((self.root / "outbox").glob("*.dcm"), key=lambda p: p.stat().st_mtime)
            for path in waiting:
                dataset = pydicom.dcmread(path)
                answer = self._pacs("storing a landmark report", lambda d=dataset: self.client.store_instances([d]))
                taken = {str(r.ReferencedSOPInstanceUID) for r in answer.get("ReferencedSOPSequence", [])}
                if str(dataset.SOPInstanceUID) not in taken:
                    raise PacsUnavailable(502, f"the PACS at {self.config.url} refused to store the report "
                                               f"{dataset.SOPInstanceUID}")
                target = self.root / "reports" / path.name
                os.replace(path, target)
                index = self._read_index()
                index.setdefault("reports", {}).setdefault(path.stem, {}).update(stored=True)
                self._write_index(index)
                log.info("stored landmark report %s (film %s) in the PACS", path.stem,
                         index["reports"][path.stem].get("image"))

    def _send_outbox_forever(self) -> None:
        while True:
            time.sleep(self.config.retry_seconds)
            if not any((self.root / "outbox").glob("*.dcm")):
                continue
            try:
                self._send_outbox()
            except HTTPException as exc:
                log.warning("labels wait in %s: %s", self.root / "outbox", exc.detail)

    # Datastore: images ------------------------------------------------------------------------------
    def name(self) -> str:
        return self._name

    def set_name(self, name: str) -> None:
        self._name = name

    def description(self) -> str:
        return self._description

    def set_description(self, description: str) -> None:
        self._description = description

    def list_images(self) -> list[str]:
        return sorted(self._films())

    def get_image_uri(self, image_id: str) -> str:
        """The cached film, fetched from the PACS the first time."""
        path = self.root / "films" / f"{_safe(image_id)}.dcm"
        if path.is_file():
            return str(path)
        film = self._film_entry(image_id)
        study = film["StudyInstanceUID"]
        instances = self._pacs("listing the film's instances", lambda: self.client.search_for_instances(
            study, image_id, fields=["InstanceNumber"]))
        if not instances:
            raise HTTPException(404, f"series {image_id!r} holds no images in the PACS")
        first = min((Dataset.from_json(i) for i in instances), key=lambda d: int(d.get("InstanceNumber") or 0))
        if len(instances) > 1:
            log.warning("series %s holds %d images; using instance %s", image_id, len(instances),
                        first.SOPInstanceUID)
        started = time.perf_counter()
        dataset = self._pacs("fetching the film", lambda: self.client.retrieve_instance(
            study, image_id, str(first.SOPInstanceUID)))
        _save(dataset, path)
        log.info("fetched film %s from the PACS in %.2f s", image_id, time.perf_counter() - started)
        return str(path)

    def _film_entry(self, image_id: str) -> dict[str, str]:
        films = self._films()
        if image_id not in films:
            with self._lock:
                self._listing = None  # stored since the last listing?
            films = self._films()
        if image_id not in films:
            raise HTTPException(404, f"no image {image_id!r} in the datastore (the PACS's "
                                     f"{', '.join(self.config.modalities)} series)")
        return films[image_id]

    def get_image(self, image_id: str, params: Any = None) -> Any:
        return io.BytesIO(Path(self.get_image_uri(image_id)).read_bytes())

    def get_image_info(self, image_id: str) -> dict[str, Any]:
        info = dict(self._film_entry(image_id))
        info.update(self._read_index().get("images", {}).get(image_id, {}).get("info", {}))
        return {**info, "SeriesInstanceUID": image_id}

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        with self._file_lock:
            index = self._read_index()
            index.setdefault("images", {}).setdefault(image_id, {}).setdefault("info", {}).update(info)
            self._write_index(index)

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        raise HTTPException(405, "this server reads its films from a PACS: store new films in the PACS")

    def remove_image(self, image_id: str) -> None:
        raise HTTPException(405, "this server reads its films from a PACS: remove films there")

    def refresh(self) -> None:
        with self._lock:
            self._listing = None

    # Datastore: labels ------------------------------------------------------------------------------
    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        """A final label becomes a new report in the PACS (via the outbox); other tags stay on this server."""
        film_path = Path(self.get_image_uri(image_id))
        tag, label, info = checked_label(image_id, label_filename, film_path, label_tag, label_info)
        label.image_name = image_id
        if tag != FINAL:
            self._save_local(image_id, tag, label, info)
            return image_id
        film = pydicom.dcmread(film_path, stop_before_pixels=True)
        self._labelled()  # learn of versions other servers stored, so that the new report names the newest
        with self._file_lock:
            newest = self._newest_report(image_id)
            previous = [pydicom.dcmread(newest, stop_before_pixels=True)] if newest else []
            report = build_sr(label, film, previous=previous)
            path = self.root / "outbox" / f"{report.SOPInstanceUID}.dcm"
            _save(report, path)
            index = self._read_index()
            index.setdefault("reports", {})[str(report.SOPInstanceUID)] = self._report_entry(path)
            index.setdefault("labels", {}).setdefault(FINAL, {})[image_id] = info
            self._write_index(index)
        log.info("label %s: report %s written%s", image_id, report.SOPInstanceUID,
                 f", replacing {newest.stem}" if newest else "")
        try:
            self._send_outbox()
        except PacsUnavailable as exc:
            log.warning("label %s kept on this server until the PACS takes it: %s", image_id, exc.detail)
            raise PacsUnavailable(exc.status_code, f"{exc.detail}. The label of {image_id!r} is kept on this "
                                                   "server and is sent to the PACS when it takes it.") from None
        return image_id

    def _newest_report(self, image_id: str) -> Path | None:
        """The newest report of a film, stored or waiting in the outbox."""
        reports = self._read_index().get("reports", {})
        mine = [(e.get("created", ""), uid, e) for uid, e in reports.items() if e.get("image") == image_id]
        for _, uid, entry in sorted(mine, reverse=True):
            path = self.root / ("reports" if entry.get("stored") else "outbox") / f"{uid}.dcm"
            if path.is_file():
                return path
        return None

    def _save_local(self, image_id: str, tag: str, label: LandmarkLabel, info: dict[str, Any]) -> None:
        dest = self.root / "labels" / tag / f"{_safe(image_id)}.json"
        with self._file_lock:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_file():
                kept = dest.parent / HISTORY / _safe(image_id) / f"{time.time_ns()}.json"
                kept.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(dest, kept)
            write_json_label(dest, label)
            index = self._read_index()
            index.setdefault("labels", {}).setdefault(tag, {})[image_id] = {**info, "ts": int(time.time())}
            self._write_index(index)

    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        """Our JSON of the label: for final, converted from the film's newest report."""
        tag = label_tag or FINAL
        dest = self.root / "labels" / _safe(tag) / f"{_safe(label_id)}.json"
        if tag != FINAL:
            return str(dest) if dest.is_file() else ""
        self._labelled()
        newest = self._newest_report(label_id)
        if newest is None:
            return ""
        marker = dest.with_suffix(".source")
        if not dest.is_file() or not marker.is_file() or marker.read_text() != newest.stem:
            label = read_sr(newest).label
            label.image_name = label_id
            film = pydicom.dcmread(self.get_image_uri(label_id), stop_before_pixels=True)
            label.width, label.height = int(film.Columns), int(film.Rows)
            dest.parent.mkdir(parents=True, exist_ok=True)
            write_json_label(dest, label)
            atomic_write_text(marker, newest.stem)
        return str(dest)

    def get_label(self, label_id: str, label_tag: str, params: Any = None) -> Any:
        uri = self.get_label_uri(label_id, label_tag)
        return io.BytesIO(Path(uri).read_bytes()) if uri else None

    def get_label_info(self, label_id: str, label_tag: str) -> dict[str, Any]:
        index = self._read_index()
        info = dict(index.get("labels", {}).get(label_tag or FINAL, {}).get(label_id, {}))
        if (label_tag or FINAL) == FINAL:
            newest = self._newest_report(label_id)
            if newest is not None:
                entry = index["reports"][newest.stem]
                info.update(report=newest.stem, created=entry.get("created"), in_pacs=bool(entry.get("stored")),
                            versions=sum(1 for e in index["reports"].values() if e.get("image") == label_id))
        return info

    def update_label_info(self, label_id: str, label_tag: str, info: dict[str, Any]) -> None:
        with self._file_lock:
            index = self._read_index()
            index.setdefault("labels", {}).setdefault(label_tag or FINAL, {}).setdefault(label_id, {}).update(info)
            self._write_index(index)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        raise HTTPException(405, "labels are kept: the PACS holds every version of a final label; save a new one")

    def get_labels_by_image_id(self, image_id: str) -> dict[str, str]:
        tags = {tag: image_id for tag, labels in self._read_index().get("labels", {}).items()
                if tag != FINAL and image_id in labels}
        if image_id in self._labelled():
            tags[FINAL] = image_id
        return tags

    def get_label_by_image_id(self, image_id: str, tag: str) -> str:
        return image_id if tag in self.get_labels_by_image_id(image_id) else ""

    def _labelled(self) -> set[str]:
        """Films with a final label: a report in the PACS or one waiting in the outbox."""
        try:
            reports = self._sync_reports()
        except PacsUnavailable:
            reports = self._read_index().get("reports", {})  # the outbox still counts; the error shows elsewhere
        return {e["image"] for e in reports.values() if e.get("image")}

    def get_labeled_images(self, label_tag: str | None = None, labels: Any = None) -> list[str]:
        films = set(self.list_images())
        if (label_tag or FINAL) != FINAL:
            return sorted(films & set(self._read_index().get("labels", {}).get(label_tag, {})))
        return sorted(films & self._labelled())

    def get_unlabeled_images(self, label_tag: str | None = None, labels: Any = None) -> list[str]:
        labelled = set(self.get_labeled_images(label_tag))
        return [i for i in self.list_images() if i not in labelled]

    def datalist(self, full_path: bool = True) -> list[dict[str, Any]]:
        """Every film with a final label, fetched, and its label converted from the newest report."""
        return [{"image": self.get_image_uri(i), "label": self.get_label_uri(i, FINAL)}
                for i in self.get_labeled_images()]

    def get_dataset_archive(self, limit_cases: int | None) -> str:
        raise HTTPException(405, "download the films from the PACS; the labels are its landmark reports")

    def status(self) -> dict[str, Any]:
        try:
            images = self.list_images()
            labelled = self.get_labeled_images()
        except PacsUnavailable as exc:
            return {"total": None, "completed": None, "label_tags": {}, "error": exc.detail}
        waiting = len(list((self.root / "outbox").glob("*.dcm")))
        return {"total": len(images), "completed": len(labelled), "label_tags": {FINAL: len(labelled)},
                "pacs": self.config.url, "labels_waiting_for_pacs": waiting}

    def json(self) -> dict[str, Any]:
        labelled = set(self.get_labeled_images())
        objects = {}
        for image_id in self.list_images():
            labels = {FINAL: {"info": self.get_label_info(image_id, FINAL)}} if image_id in labelled else {}
            objects[image_id] = {"image": {"info": self.get_image_info(image_id)}, "labels": labels}
        return {"name": self.name(), "description": self.description(), "objects": objects}

    # The index --------------------------------------------------------------------------------------
    def _read_index(self) -> dict[str, Any]:
        try:
            return json.loads(self._index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}

    def _write_index(self, index: dict[str, Any]) -> None:
        atomic_write_text(self._index_path, json.dumps(index, indent=1, default=str))


def _save(dataset: Dataset, path: Path) -> None:
    with atomic_path(path) as temporary:
        dataset.save_as(temporary, write_like_original=False)


def _safe(name: str) -> str:
    """A series UID or tag as a file name; anything else is refused (no path tricks)."""
    if not name or not all(c.isalnum() or c in ".-_" for c in name) or name.startswith("."):
        raise HTTPException(422, f"{name!r} is not an image id of this datastore (a DICOM series UID)")
    return name
