"""The scoliosis app on a real PACS: Orthanc with DICOMweb (orthanc_fixture.py) and a real MONAI Label server.

Tests run in file order on one server: listing and inference, labels stored as DICOM SR and read back, active
learning and training from those reports, then a PACS that is down or refuses stores, and bad credentials.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orthanc_fixture
import pydicom
import pytest
from orthanc_fixture import PASSWORD, USER, Orthanc
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from server_fixture import APP, HEIGHT, WIDTH, Server, _answers, _stop, free_port

from spinecascade.io.dicom_sr import read_sr
from spinecascade.io.labels import LandmarkLabel, label_to_json_dict, read_label
from spinecascade.landmarks import point_names
from spinecascade.synthetic import make_spine

pytestmark = pytest.mark.server
orthanc = orthanc_fixture.orthanc
TASK = "vertebral_landmarks"
SPACING = 0.5
SEEDS = (7100, 7101, 7102)
FINISHED = ("DONE", "ERROR", "STOPPED")


def ct_slice() -> Dataset:
    """A small CT image: in the PACS, never in the list of films."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CT"
    ds.PatientID, ds.PatientName = "CT1", "Test^CT"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored = 1, "MONOCHROME2", 16, 16
    ds.HighBit, ds.PixelRepresentation, ds.PixelData = 15, 0, np.zeros((8, 8), np.uint16).tobytes()
    return ds


def start_server(root: Path, studies: str, model: Path, env: dict[str, str]) -> Server:
    """A MONAI Label server on the DICOMweb URL, launched like server_fixture's."""
    app = root / "app"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("model", "logs", "bin", "sample_studies", "__pycache__"))
    port = free_port()
    command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", studies,
               "--host", "127.0.0.1", "--port", str(port), "--conf", "model_path", str(model), "--conf",
               "threads", "1"]
    log = root / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=root, env={**os.environ, **env}, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return Server(f"http://127.0.0.1:{port}", root, root, model, log, process)


def pacs_env(root: Path, password: str = PASSWORD) -> dict[str, str]:
    return {"OMP_NUM_THREADS": "1", "MONAI_LABEL_AUTO_UPDATE_SCORING": "false", "MONAI_LABEL_SESSIONS": "false",
            "MONAI_LABEL_DATASTORE_USERNAME": USER, "MONAI_LABEL_DATASTORE_PASSWORD": password,
            "MONAI_LABEL_DATASTORE_CACHE_PATH": str(root / "cache"), "SPINECASCADE_DICOMWEB_RETRY": "1",
            "SPINECASCADE_DICOMWEB_LIST_SECONDS": "0.5", "SPINECASCADE_DICOMWEB_TIMEOUT": "10"}


class Pacs:
    def __init__(self, pacs: Orthanc, server: Server, films: dict[str, int], others: list[str]) -> None:
        self.orthanc, self.server, self.films, self.others = pacs, server, films, others

    def reports(self) -> list[Dataset]:
        return [self.orthanc.instance(i) for i in self.orthanc.find({"Modality": "SR"})]

    def label(self, image_id: str, shift: float = 0.0, moved: bool = True) -> dict:
        """A label as the Slicer module sends it: our JSON, with the points a person moved."""
        spine = make_spine(self.films[image_id], WIDTH, HEIGHT)
        landmarks = np.asarray(spine.landmarks) + shift
        review = {"tool": "3D Slicer SpineCascade", "moved_points": ["T1 top-left"] if moved else []}
        return label_to_json_dict(LandmarkLabel(landmarks, WIDTH, HEIGHT, None, extra={"review": review}))

    def save(self, image_id: str, label: dict):
        return self.server.request("PUT", "/datastore/label", params={"image": image_id, "tag": "final"},
                                   files={"label": (f"{image_id}.json", json.dumps(label), "application/json")})


@pytest.fixture(scope="module")
def pacs(orthanc: Orthanc, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    films = {orthanc.store_film(np.asarray(make_spine(seed, WIDTH, HEIGHT).image), SPACING, f"P{seed}"): seed
             for seed in SEEDS}
    others = [orthanc.store(ct_slice())]
    root = tmp_path_factory.mktemp("pacs-server")
    model = root / "model" / "spinecascade.safetensors"
    model.parent.mkdir()
    shutil.copyfile(tiny_model, model)
    server = start_server(root, orthanc.dicomweb, model, pacs_env(root))
    try:
        server.wait_for("the server to start", lambda: _answers(server), timeout=240)
        yield Pacs(orthanc, server, films, others)
    finally:
        _stop(server.process)


def points(answer: dict) -> np.ndarray:
    return np.array([[p["x"], p["y"]] for p in answer["landmarks"]])


# --- listing and inference -------------------------------------------------------------------------------


def test_lists_the_radiographs_and_leaves_out_other_modalities(pacs: Pacs):
    objects = pacs.server.request("GET", "/datastore/", params={"output": "all"}).json()["objects"]
    assert set(objects) == set(pacs.films)
    assert not set(pacs.others) & set(objects)
    assert {o["image"]["info"]["Modality"] for o in objects.values()} == {"DX"}


def test_infers_by_dicomweb_id_and_caches_the_film(pacs: Pacs):
    image_id = next(iter(pacs.films))
    started = time.perf_counter()
    first = pacs.server.request("POST", f"/infer/{TASK}", params={"image": image_id, "output": "json"})
    first_seconds = time.perf_counter() - started
    assert first.status_code == 200, first.text
    started = time.perf_counter()
    second = pacs.server.request("POST", f"/infer/{TASK}", params={"image": image_id, "output": "json"})
    cached_seconds = time.perf_counter() - started
    assert second.status_code == 200 and points(second.json()).shape == (68, 2)
    assert first.json()["image"]["spacing_mm"] == [SPACING, SPACING]
    assert "fetched film" in pacs.server.log.read_text() and pacs.server.log.read_text().count("fetched film") == 1
    print(f"/infer by DICOMweb id: {first_seconds:.2f} s with the fetch, {cached_seconds:.2f} s cached")


def test_an_unknown_id_is_a_404(pacs: Pacs):
    answer = pacs.server.request("POST", f"/infer/{TASK}", params={"image": pacs.others[0], "output": "json"})
    assert answer.status_code == 404 and "no image" in answer.json()["detail"]


def test_the_stock_monailabel_client_gets_a_markups_file(pacs: Pacs, tmp_path: Path):
    from monailabel.client import MONAILabelClient

    image_id = next(iter(pacs.films))
    client = MONAILabelClient(pacs.server.url, tmpdir=str(tmp_path))
    result_file, params = client.infer(TASK, image_id, {})
    assert result_file and result_file.endswith(".json")
    markups = json.loads(Path(result_file).read_text())
    (markup,) = markups["markups"]
    assert markup["type"] == "Fiducial" and markup["coordinateSystem"] == "RAS"
    assert [p["label"] for p in markup["controlPoints"]] == point_names()
    # RAS as Slicer loads the film: x and y of LPS (pixel * spacing, origin 0) negated.
    ras = np.array([p["position"][:2] for p in markup["controlPoints"]])
    np.testing.assert_allclose(ras, -points(params) * SPACING, atol=1e-9)


# --- labels as DICOM SR ----------------------------------------------------------------------------------


def test_a_saved_label_is_a_report_in_the_pacs_and_reads_back(pacs: Pacs):
    image_id = next(iter(pacs.films))
    label = pacs.label(image_id)
    answer = pacs.save(image_id, label)
    assert answer.status_code == 200, answer.text
    (report,) = pacs.reports()
    assert report.Modality == "SR" and report.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.ReferencedSeriesSequence[0].SeriesInstanceUID == image_id
    assert report.ContentSequence and report.ConceptNameCodeSequence[0].CodeValue == "126000"
    assert read_sr(report).label.extra["review"] == {"corrected": True}
    back = pacs.server.request("GET", "/datastore/label", params={"label": image_id, "tag": "final"})
    assert back.status_code == 200
    assert np.abs(points(back.json()) - points(label)).max() < 1e-3
    stats = pacs.server.request("GET", "/datastore/", params={"output": "stats"}).json()
    assert (stats["total"], stats["completed"]) == (len(pacs.films), 1)
    objects = pacs.server.request("GET", "/datastore/", params={"output": "all"}).json()["objects"]
    assert set(objects) == set(pacs.films)  # our report is an SR: not a film


def test_a_second_save_keeps_the_first_and_names_it(pacs: Pacs):
    image_id = next(iter(pacs.films))
    first = pacs.reports()
    label = pacs.label(image_id, shift=1.25)
    assert pacs.save(image_id, label).status_code == 200
    reports = pacs.reports()
    assert len(reports) == 2 and {r.SOPInstanceUID for r in first} < {r.SOPInstanceUID for r in reports}
    newest = max(reports, key=lambda r: r.ContentTime)
    assert newest.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]\
        .ReferencedSOPInstanceUID == first[0].SOPInstanceUID
    back = pacs.server.request("GET", "/datastore/label", params={"label": image_id, "tag": "final"}).json()
    assert np.abs(points(back) - points(label)).max() < 1e-3


def test_a_label_the_checker_refuses_never_reaches_the_pacs(pacs: Pacs):
    image_id = list(pacs.films)[1]
    label = pacs.label(image_id)
    label["landmarks"][0]["x"], label["landmarks"][1]["x"] = label["landmarks"][1]["x"], label["landmarks"][0]["x"]
    before = len(pacs.reports())
    answer = pacs.save(image_id, label)
    assert answer.status_code == 422 and len(pacs.reports()) == before


def test_active_learning_skips_films_with_a_report(pacs: Pacs):
    labelled = next(iter(pacs.films))
    for _ in range(3):
        answer = pacs.server.request("POST", "/activelearning/landmark_uncertainty")
        assert answer.status_code == 200, answer.text
        assert answer.json()["id"] in set(pacs.films) - {labelled}


def test_training_reads_the_reports(pacs: Pacs):
    server = pacs.server
    labelled = next(iter(pacs.films))
    (entry,) = server.request("GET", "/datastore/", params={"output": "train"}).json()  # what training gets
    assert read_label(entry["label"], (WIDTH, HEIGHT)).landmarks.shape == (17, 4, 2)
    assert pydicom.dcmread(entry["image"]).SeriesInstanceUID == labelled
    assert server.request("POST", f"/train/{TASK}", json={"epochs": 1}).status_code == 200
    server.wait_for("training", lambda: server.request("GET", "/train/").json()["status"] in FINISHED, every=2.0)
    stats = server.request("GET", "/info/").json()["train_stats"][TASK]
    assert stats["status"] == "DONE", server.log_tail()
    assert stats["labelled_images"] == 1


# --- a PACS that is down or refuses ----------------------------------------------------------------------


def _arrives(pacs: Pacs, count: int) -> bool:
    return len(pacs.reports()) >= count


def test_a_pacs_that_is_down_gets_the_label_when_it_is_back(pacs: Pacs):
    image_id = list(pacs.films)[2]
    before = len(pacs.reports())
    label = pacs.label(image_id, shift=0.5)
    pacs.orthanc.stop()
    try:
        answer = pacs.save(image_id, label)
        assert answer.status_code == 503 and "cannot be reached" in answer.json()["detail"]
        assert "kept on this server" in answer.json()["detail"]
        back = pacs.server.request("GET", "/datastore/label", params={"label": image_id, "tag": "final"})
        assert back.status_code == 200 and np.abs(points(back.json()) - points(label)).max() < 1e-3
        down = pacs.server.request("POST", "/activelearning/landmark_uncertainty")
        assert down.status_code == 503 and "cannot be reached" in down.json()["detail"]
    finally:
        pacs.orthanc.start()
    pacs.server.wait_for("the kept label to reach the PACS", lambda: _arrives(pacs, before + 1), timeout=30)
    assert read_sr(max(pacs.reports(), key=lambda r: r.ContentTime)).series_uid == image_id


def test_a_pacs_that_refuses_the_store_gets_it_later(pacs: Pacs):
    image_id = list(pacs.films)[2]
    before = len(pacs.reports())
    pacs.orthanc.refuse_stores(True)
    try:
        answer = pacs.save(image_id, pacs.label(image_id, shift=-0.5))
        assert answer.status_code == 502 and "answered HTTP 403" in answer.json()["detail"]
        assert "kept on this server" in answer.json()["detail"] and len(pacs.reports()) == before
    finally:
        pacs.orthanc.refuse_stores(False)
    pacs.server.wait_for("the kept label to reach the PACS", lambda: _arrives(pacs, before + 1), timeout=30)


def test_the_credentials_never_reach_the_log(pacs: Pacs):
    assert PASSWORD not in pacs.server.log.read_text()


def test_bad_credentials_stop_the_server_at_start(pacs: Pacs, tmp_path: Path):
    wrong = "not-the-pacs-password-91"
    server = start_server(tmp_path, pacs.orthanc.dicomweb, pacs.server.model, pacs_env(tmp_path, wrong))
    try:
        server.process.wait(120)
    finally:
        _stop(server.process)
    text = server.log.read_text()
    assert server.process.returncode != 0 and "refused the credentials (HTTP 401)" in text
    assert wrong not in text


_LIST_WITH_TOKEN = """
import os, sys
from lib.configs.dicomweb import DicomWebConfig
from lib.configs.landmarks import ConfigError
from lib.datastores.dicomweb import DicomWebLandmarkDatastore
try:
    print(len(DicomWebLandmarkDatastore(DicomWebConfig.from_env(sys.argv[1])).list_images()))
except ConfigError as exc:
    sys.exit(str(exc))
"""


@pytest.mark.parametrize("token", ["token-5e1f", "not-the-token"])
def test_a_bearer_token_reaches_the_pacs(tmp_path: Path, token: str):
    port = free_port()
    gateway = Orthanc(tmp_path, orthanc_fixture.local_pacs.write_config(tmp_path, port, free_port(), None,
                                                                         "token-5e1f"), port, auth=None)
    gateway.start()
    try:
        gateway.store_film(np.asarray(make_spine(SEEDS[0], WIDTH, HEIGHT).image))
        env = {**os.environ, "PYTHONPATH": str(APP), "SPINECASCADE_DICOMWEB_TOKEN": token,
               "MONAI_LABEL_DATASTORE_CACHE_PATH": str(tmp_path / "cache")}
        env.pop("MONAI_LABEL_DATASTORE_USERNAME", None)
        result = subprocess.run([sys.executable, "-c", _LIST_WITH_TOKEN, gateway.dicomweb], cwd=APP, env=env,
                                capture_output=True, text=True, timeout=120)
    finally:
        gateway.stop()
    if token == "token-5e1f":
        assert (result.returncode, result.stdout.strip()) == (0, "1"), result.stderr
    else:
        assert result.returncode == 1 and "refused the credentials (HTTP 403)" in result.stderr
        assert token not in result.stderr
