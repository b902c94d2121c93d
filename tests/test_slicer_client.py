"""The Slicer module's HTTP client, and its logic over HTTP, against a small stand-in for the server.

The stand-in answers like MONAI Label does (FastAPI's {"detail": ...} errors, multipart uploads) so these
tests check the module's side of the API in isolation; tests/test_slicer_e2e.py runs against the real app.
The client itself needs no Slicer; the logic tests skip without the slicer-core wheel.
"""

from __future__ import annotations

import email
import importlib
import importlib.util
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

client_module = importlib.import_module("SpineCascadeLib.client")
ServerError = client_module.ServerError
MonaiLabelClient = client_module.MonaiLabelClient

needs_slicer = pytest.mark.skipif(importlib.util.find_spec("slicer") is None, reason="slicer-core is not installed")

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def parts(self) -> dict[str, tuple[str | None, bytes]]:
        """Multipart form fields: name -> (filename, content)."""
        message = email.message_from_bytes(
            f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + self.body
        )
        return {
            part.get_param("name", header="content-disposition"): (part.get_filename(), part.get_payload(decode=True))
            for part in message.get_payload()
        }


def json_reply(doc, status: int = 200) -> Reply:
    return status, {"Content-Type": "application/json"}, json.dumps(doc).encode()


@dataclass
class FakeServer:
    """Routes (method, path) to a reply or to a function of the request; records every request."""

    url: str = ""
    routes: dict[tuple[str, str], Reply | Callable[[Request], Reply]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def handle(self, request: Request) -> Reply:
        self.requests.append(request)
        route = self.routes.get((request.method, request.path))
        if route is None:
            return json_reply({"detail": "Not Found"}, 404)
        return route(request) if callable(route) else route


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            request = Request(
                self.command,
                parts.path,
                dict(urllib.parse.parse_qsl(parts.query)),
                dict(self.headers.items()),
                self.rfile.read(length),
            )
            status, headers, body = fake.handle(request)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield fake
    httpd.shutdown()
    httpd.server_close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


INFO = {
    "name": "scoliosis",
    "version": "0.1",
    "models": {"vertebral_landmarks": {"type": "detection", "dimension": 2}},
    "strategies": {"landmark_uncertainty": {}, "random": {}},
    "trainers": {"vertebral_landmarks": {}},
}


# ---------------------------------------------------------------------- client


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("127.0.0.1:8000", "http://127.0.0.1:8000"),
        (" http://host:8000/ ", "http://host:8000"),
        ("https://host/monai/", "https://host/monai"),
    ],
)
def test_server_address_is_normalised(address, url):
    assert client_module.normalise_url(address) == url


@pytest.mark.parametrize("address", ["", "ftp://host", "http://"])
def test_a_bad_server_address_is_refused(address):
    with pytest.raises(ServerError, match="address"):
        client_module.normalise_url(address)


def test_info_lists_models_strategies_and_trainers(server):
    server.routes[("GET", "/info/")] = json_reply(INFO)
    info = MonaiLabelClient(server.url).info()
    assert list(info.models) == ["vertebral_landmarks"]
    assert info.strategies == ("landmark_uncertainty", "random")
    assert info.trainers == ("vertebral_landmarks",)
    assert info.train_stats == {}
    stats = {"status": "RUNNING", "stages_done": 1, "stages_total": 6}
    server.routes[("GET", "/info/")] = json_reply({**INFO, "train_stats": {"vertebral_landmarks": stats}})
    assert MonaiLabelClient(server.url).info().train_stats == {"vertebral_landmarks": stats}
    server.routes[("GET", "/info/")] = json_reply({**INFO, "train_stats": ["RUNNING"]})
    with pytest.raises(ServerError, match="'train_stats' that is not an object"):
        MonaiLabelClient(server.url).info()


def test_infer_by_id_and_by_upload(server):
    server.routes[("POST", "/infer/vertebral_landmarks")] = json_reply({"format": "spinecascade-landmarks"})
    client = MonaiLabelClient(server.url)
    client.infer("vertebral_landmarks", image_id="spine 1")
    client.infer("vertebral_landmarks", image=b"\x89PNG...", filename="x.png")
    by_id, by_upload = server.requests
    assert by_id.query == {"output": "json", "image": "spine 1"}
    assert by_upload.query == {"output": "json"}
    assert by_upload.parts() == {"file": ("x.png", b"\x89PNG...")}
    with pytest.raises(ValueError, match="exactly one"):
        client.infer("vertebral_landmarks")


def test_save_and_get_label(server):
    stored = {}

    def save(request: Request) -> Reply:
        filename, content = request.parts()["label"]
        stored[request.query["image"], request.query["tag"]] = json.loads(content)
        return json_reply({"image": request.query["image"], "label": request.query["image"]})

    server.routes[("PUT", "/datastore/label")] = save
    server.routes[("GET", "/datastore/label")] = lambda r: json_reply(stored[r.query["label"], r.query["tag"]])
    client = MonaiLabelClient(server.url)
    answer = client.save_label("spine1", {"format": "spinecascade-landmarks", "x": 1})
    assert answer["label"] == "spine1"
    assert client.get_label("spine1") == {"format": "spinecascade-landmarks", "x": 1}


def test_next_sample_and_download(server):
    server.routes[("POST", "/activelearning/landmark_uncertainty")] = json_reply({"id": "spine7", "ts": 1})
    server.routes[("GET", "/datastore/image")] = (
        200,
        {"Content-Disposition": 'attachment; filename="spine7.jpg"', "Content-Type": "image/jpeg"},
        b"jpeg bytes",
    )
    client = MonaiLabelClient(server.url)
    assert client.next_sample("landmark_uncertainty") == "spine7"
    assert client.download_image("spine7") == (b"jpeg bytes", "spine7.jpg")
    server.routes[("POST", "/activelearning/landmark_uncertainty")] = json_reply({})
    assert client.next_sample("landmark_uncertainty") is None


def test_training_status_none_before_the_first_training(server):
    client = MonaiLabelClient(server.url)
    server.routes[("GET", "/train/")] = json_reply({"detail": "No Train Tasks Found"}, 404)
    assert client.training_status() is None
    server.routes[("GET", "/train/")] = json_reply({"status": "RUNNING", "details": ["epoch 1/8"]})
    assert client.training_status()["status"] == "RUNNING"


def test_http_errors_carry_the_servers_explanation(server):
    server.routes[("POST", "/train/vertebral_landmarks")] = json_reply({"detail": "Train Task is Already Running"}, 429)
    with pytest.raises(ServerError, match="HTTP 429: Train Task is Already Running") as caught:
        MonaiLabelClient(server.url).start_training("vertebral_landmarks")
    assert caught.value.status == 429


def test_an_answer_that_is_not_json_is_refused(server):
    server.routes[("GET", "/info/")] = (200, {"Content-Type": "text/html"}, b"<html>login</html>")
    with pytest.raises(ServerError, match="not JSON"):
        MonaiLabelClient(server.url).info()


def test_a_server_that_is_down_is_named(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(ServerError, match="cannot reach the server at .*connection refused"):
        MonaiLabelClient(url).info()


def test_a_slow_server_times_out(server):
    def slow(request: Request) -> Reply:
        time.sleep(1.0)
        return json_reply(INFO)

    server.routes[("GET", "/info/")] = slow
    started = time.monotonic()
    with pytest.raises(ServerError, match=r"did not answer .*within 0.2 s"):
        MonaiLabelClient(server.url, timeout=0.2).info()
    assert time.monotonic() - started < 0.9


# ---------------------------------------------------------------------- logic over HTTP


@pytest.fixture
def slicer_parts():
    slicer = pytest.importorskip("slicer")
    scene = slicer.vtkMRMLScene()
    scene.AddNode(slicer.vtkMRMLSelectionNode())
    logic = importlib.import_module("SpineCascadeLib.logic")
    testdata = importlib.import_module("SpineCascadeLib.testdata")
    return scene, logic, testdata


def scene_content(scene) -> list[tuple[str, str]]:
    nodes = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
    return sorted((n.GetClassName(), "" if n.IsA("vtkMRMLDisplayNode") else n.GetName()) for n in nodes)


@needs_slicer
def test_connect_picks_the_landmark_model(server, slicer_parts):
    scene, logic_module, _ = slicer_parts
    server.routes[("GET", "/info/")] = json_reply(INFO)
    logic = logic_module.SpineCascadeLogic(scene)
    info = logic.connect(server.url)
    assert logic.model == "vertebral_landmarks" and logic.strategy == "landmark_uncertainty"
    assert info.name == "scoliosis"
    server.routes[("GET", "/info/")] = json_reply({**INFO, "models": {}})
    with pytest.raises(ServerError, match="no models"):
        logic_module.SpineCascadeLogic(scene).connect(server.url)


@needs_slicer
def test_connect_uses_and_stores_the_settings_of_the_scene(server, slicer_parts):
    scene, logic_module, _ = slicer_parts
    models = {"vertebral_landmarks": {}, "vertebral_landmarks_v2": {}}
    server.routes[("GET", "/info/")] = json_reply({**INFO, "models": models})
    logic = logic_module.SpineCascadeLogic(scene)
    parameters = logic.parameters
    parameters.server_url = server.url.removeprefix("http://") + "/"
    parameters.model, parameters.strategy = "vertebral_landmarks_v2", "random"
    logic.connect()  # no address given: the scene's
    assert parameters.server_url == server.url == logic.client.url  # stored as the client normalised it
    assert (logic.model, logic.strategy) == ("vertebral_landmarks_v2", "random")  # offered, so kept

    server.routes[("GET", "/info/")] = json_reply({**INFO, "strategies": {"first": {}}})
    logic.connect()
    assert (logic.model, logic.strategy) == ("vertebral_landmarks", "first")  # not offered: default, else first

    parameters.server_url = f"127.0.0.1:{closed_port()}"
    with pytest.raises(ServerError, match="cannot reach"):
        logic.connect()
    assert logic.client.url == server.url  # the working client is kept


@needs_slicer
def test_training_progress_over_http(server, slicer_parts):
    scene, logic_module, _ = slicer_parts
    stats = {"status": "RUNNING", "stage": "centres-2", "epoch": 4, "loss": 0.5, "stages_done": 3, "stages_total": 4}
    server.routes[("GET", "/info/")] = json_reply({**INFO, "train_stats": {"vertebral_landmarks": stats}})
    server.routes[("GET", "/train/")] = json_reply({"status": "RUNNING", "details": ["epoch 1/8"]})
    server.routes[("POST", "/train/vertebral_landmarks")] = json_reply({"id": "task-1", "status": "SUBMITTED"})
    logic = logic_module.SpineCascadeLogic(scene)
    logic.connect(server.url)
    status = logic.start_training()
    assert (status.state, status.fraction, status.running) == ("RUNNING", 0.75, True)
    assert status.message == "stage centres-2, epoch 4, loss 0.5, 3 of 4 stages done"
    server.routes[("GET", "/train/")] = json_reply({"detail": "No Train Tasks Found"}, 404)
    server.routes[("GET", "/info/")] = json_reply(INFO)
    assert logic.training_status().state == "NONE"


@needs_slicer
def test_auto_landmark_uploads_a_local_volume_and_submit_stores_it(server, slicer_parts):
    scene, logic_module, testdata = slicer_parts
    from spinecascade.io.images import load_image_bytes
    from spinecascade.io.labels import label_from_json_dict

    landmarks = testdata.example_landmarks(200, 500)
    server.routes[("GET", "/info/")] = json_reply(INFO)
    server.routes[("POST", "/infer/vertebral_landmarks")] = json_reply(testdata.example_answer(landmarks, 200, 500))
    server.routes[("PUT", "/datastore/image")] = lambda r: json_reply({"image": r.query["image"]})
    server.routes[("PUT", "/datastore/label")] = lambda r: json_reply({"image": r.query["image"], "label": "x"})
    volume = testdata.add_example_volume(scene, 200, 500, spacing=(0.5, 0.5), name="local film")
    logic = logic_module.SpineCascadeLogic(scene)
    logic.connect(server.url)
    annotation = logic.auto_landmark(volume)
    np.testing.assert_allclose(annotation.landmarks, landmarks, atol=1e-9)
    upload = server.requests[-1]
    filename, png = upload.parts()["file"]
    assert filename == "local_film.png"
    np.testing.assert_array_equal(load_image_bytes(png).pixels, volume_pixels(volume))

    logic.submit_correction(volume)
    image_upload, label_upload = server.requests[-2:]
    image_id = image_upload.query["image"]
    assert image_id.startswith("local_film-") and label_upload.query == {"image": image_id, "tag": "final"}
    stored = label_from_json_dict(json.loads(label_upload.parts()["label"][1]))
    np.testing.assert_allclose(stored.landmarks, landmarks, atol=1e-9)
    assert volume.GetAttribute(logic_module.IMAGE_ID_ATTRIBUTE) == image_id
    logic.submit_correction(volume)
    assert server.requests[-1].path == "/datastore/label"  # uploaded once, then referred to by id


def volume_pixels(volume) -> np.ndarray:
    import slicer.util

    return slicer.util.arrayFromVolume(volume)[0].astype(np.float32)


@needs_slicer
def test_next_image_loads_the_strategys_pick_and_infers_by_id(server, slicer_parts):
    scene, logic_module, testdata = slicer_parts
    imaging = importlib.import_module("SpineCascadeLib.imaging")
    png = imaging.encode_png(testdata.add_example_volume(scene, 120, 300, name="source"))
    landmarks = testdata.example_landmarks(120, 300)
    server.routes[("GET", "/info/")] = json_reply(INFO)
    server.routes[("POST", "/activelearning/landmark_uncertainty")] = json_reply({"id": "spine7"})
    download = {"Content-Disposition": 'attachment; filename="spine7.png"'}
    server.routes[("GET", "/datastore/image")] = (200, download, png)
    server.routes[("POST", "/infer/vertebral_landmarks")] = json_reply(testdata.example_answer(landmarks, 120, 300))
    logic = logic_module.SpineCascadeLogic(scene)
    logic.connect(server.url)
    volume = logic.next_image()
    assert volume.GetName() == "spine7" and volume.GetAttribute(logic_module.IMAGE_ID_ATTRIBUTE) == "spine7"
    logic.auto_landmark(volume)
    assert server.requests[-1].query == {"output": "json", "image": "spine7"}
    server.routes[("POST", "/activelearning/landmark_uncertainty")] = json_reply({})
    assert logic.next_image() is None


@needs_slicer
@pytest.mark.parametrize("failure", ["down", "timeout", "http 500", "not json", "bad label", "bad image"])
def test_every_failure_leaves_the_scene_as_it_was(server, slicer_parts, failure):
    scene, logic_module, testdata = slicer_parts
    landmarks = testdata.example_landmarks(200, 500)
    server.routes[("GET", "/info/")] = json_reply(INFO)
    server.routes[("POST", "/infer/vertebral_landmarks")] = json_reply(testdata.example_answer(landmarks, 200, 500))
    server.routes[("POST", "/activelearning/landmark_uncertainty")] = json_reply({"id": "spine7"})
    volume = testdata.add_example_volume(scene, 200, 500)
    logic = logic_module.SpineCascadeLogic(scene)
    logic.connect(server.url)
    logic.client.timeout = logic.client.long_timeout = 0.3
    logic.auto_landmark(volume)
    before = scene_content(scene)

    def slow(request: Request) -> Reply:
        time.sleep(1.0)
        return json_reply({})

    broken = {
        "down": None,
        "timeout": slow,
        "http 500": json_reply({"detail": "Failed to execute infer"}, 500),
        "not json": (200, {}, b"Internal Server Error"),
        "bad label": json_reply({"format": "spinecascade-landmarks", "version": 1, "landmarks": []}),
        "bad image": (200, {}, b"<html>no image</html>"),
    }[failure]
    everything = [("POST", "/infer/vertebral_landmarks"), ("GET", "/datastore/image"), ("PUT", "/datastore/image")]
    routes = {"bad label": everything[:1], "bad image": everything[1:2]}.get(failure, everything)
    for route in routes:
        server.routes[route] = broken
    if failure == "down":
        logic.client.url = f"http://127.0.0.1:{closed_port()}"
    actions = {
        "auto-landmark": lambda: logic.auto_landmark(volume),
        "next image": logic.next_image,
        "submit": lambda: logic.submit_correction(volume),
    }
    if failure in ("bad label", "bad image"):
        actions = {"auto-landmark": actions["auto-landmark"]} if failure == "bad label" else {"next": logic.next_image}
    for action in actions.values():
        with pytest.raises(Exception) as caught:
            action()
        assert str(caught.value)
        assert scene_content(scene) == before
    assert volume.GetAttribute(logic_module.IMAGE_ID_ATTRIBUTE) is None
