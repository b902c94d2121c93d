"""A real MONAI Label server running the scoliosis app, for the tests marked `server`.

The session fixture copies the app to a temporary folder (the server writes logs and a model history there),
serves synthetic spines with the small model from conftest's `tiny_model`, and always stops the server's
whole process group at the end, training processes included.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from spinecascade.io.images import save_image
from spinecascade.io.labels import LandmarkLabel, write_json_label
from spinecascade.synthetic import make_spine

APP = Path(__file__).resolve().parents[1] / "apps" / "scoliosis"
WIDTH, HEIGHT = 96, 240  # the size tiny_model was trained on
STUDIES = {f"spine-{i}": 7000 + i for i in range(6)}  # id -> make_spine seed
LABELLED = ("spine-4", "spine-5")  # given final labels before the server starts
START_TIMEOUT = 240.0


@dataclass
class Server:
    url: str
    root: Path
    studies: Path
    model: Path
    log: Path
    process: subprocess.Popen

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 120)
        return requests.request(method, self.url + path, **kwargs)

    def infer(self, image: str | None = None, upload: tuple[str, bytes] | None = None,
              params: dict | None = None) -> requests.Response:
        query = {"output": "json", **({"image": image} if image else {})}
        files = {"file": upload} if upload else None
        data = {"params": json.dumps(params)} if params else None
        return self.request("POST", "/infer/vertebral_landmarks", params=query, files=files, data=data)

    def wait_for(self, what: str, done, timeout: float = 240.0, every: float = 1.0):
        """Poll `done()` until it returns something truthy; fail with the server log's tail otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = done()
            if result:
                return result
            if self.process.poll() is not None:
                pytest.fail(f"the server exited while waiting for {what}:\n{self.log_tail()}")
            time.sleep(every)
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def spine(image_id: str):
    return make_spine(STUDIES[image_id], WIDTH, HEIGHT)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_studies(folder: Path) -> None:
    """Synthetic spines as PNG and JPEG; two of them already have final labels in our JSON format."""
    (folder / "labels" / "final").mkdir(parents=True)
    for k, image_id in enumerate(STUDIES):
        s = spine(image_id)
        save_image(folder / f"{image_id}.{'png' if k % 2 else 'jpg'}", s.image)
        if image_id in LABELLED:
            label = LandmarkLabel(np.asarray(s.landmarks), WIDTH, HEIGHT, f"{image_id}.png")
            write_json_label(folder / "labels" / "final" / f"{image_id}.json", label)


def _stop(process: subprocess.Popen) -> None:
    """The server and everything it started (training, scoring) share its process group.

    SIGTERM lets the server shut down; SIGKILL then ends any task process it started meanwhile.
    """
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session")
def scoliosis_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("scoliosis-server")
    app = root / "app"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("model", "logs", "bin", "sample_studies", "__pycache__"))
    model = root / "model" / "spinecascade.safetensors"
    model.parent.mkdir()
    shutil.copyfile(tiny_model, model)
    studies = root / "studies"
    make_studies(studies)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
           "MONAI_LABEL_SESSIONS": "false"}
    command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies),
               "--host", "127.0.0.1", "--port", str(port), "--conf", "model_path", str(model),
               "--conf", "threads", "1"]
    log = root / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", root, studies, model, log, process)
    try:
        server.wait_for("the server to start", lambda: _answers(server), timeout=START_TIMEOUT)
        yield server
    finally:
        _stop(process)


def _answers(server: Server) -> bool:
    try:
        return server.request("GET", "/info/", timeout=5).status_code == 200
    except (requests.ConnectionError, requests.Timeout):
        return False
