"""A real Orthanc with its DICOMweb plugin on a free loopback port, for the PACS tests (skipped without Orthanc).

One Orthanc per test session, with basic authentication on; `stop()` and `start()` take it down and bring it back
on the same port and storage, and `refuse_stores()` makes it answer STOW-RS requests with 403.
"""

from __future__ import annotations

import io
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from conftest import load_app_module
from pydicom.dataset import Dataset
from server_fixture import free_port

local_pacs = load_app_module("tools/local_pacs.py", "scoliosis_local_pacs")
dx_film = load_app_module("tools/dx_film.py", "scoliosis_dx_film")

USER, PASSWORD = "radiology", "pacs-secret-7f3a"


@dataclass
class Orthanc:
    root: Path
    config: Path
    port: int
    process: subprocess.Popen | None = None
    auth: tuple[str, str] | None = (USER, PASSWORD)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self) -> None:
        self.process = local_pacs.start_orthanc(self.config, self.root / "orthanc.log")
        local_pacs.wait_until_up(self.url, self.auth, self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def refuse_stores(self, refuse: bool) -> None:
        flag = self.root / local_pacs.REFUSE_FILE
        if refuse:
            flag.touch()
        else:
            flag.unlink(missing_ok=True)

    def store(self, dataset: Dataset) -> str:
        buffer = io.BytesIO()
        dataset.save_as(buffer, write_like_original=False)
        local_pacs.store(self.url, self.auth, buffer.getvalue())
        return str(dataset.SeriesInstanceUID)

    def store_film(self, pixels: np.ndarray, spacing_mm: float = 0.5, patient: str = "P1") -> str:
        """A DX film; returns its series UID (the datastore's image id)."""
        return self.store(dx_film.dx_dataset(pixels, spacing_mm, patient_id=patient, patient_name=f"Test^{patient}"))

    def find(self, query: dict, level: str = "Instance") -> list[str]:
        answer = requests.post(f"{self.url}/tools/find", json={"Level": level, "Query": query}, auth=self.auth,
                               timeout=30)
        answer.raise_for_status()
        return answer.json()

    def instance(self, orthanc_id: str) -> Dataset:
        answer = requests.get(f"{self.url}/instances/{orthanc_id}/file", auth=self.auth, timeout=30)
        answer.raise_for_status()
        return pydicom.dcmread(io.BytesIO(answer.content))


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    if local_pacs.orthanc_binary() is None:
        pytest.skip("Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)")
    root = tmp_path_factory.mktemp("orthanc")
    port = free_port()
    server = Orthanc(root, local_pacs.write_config(root, port, free_port(), {USER: PASSWORD}), port)
    server.start()
    try:
        yield server
    finally:
        server.stop()
