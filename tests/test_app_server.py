"""The scoliosis MONAI Label app, over HTTP, against a real server (see server_fixture.py).

Tests run in file order on one server: inference and labels first, then active learning, then training,
which replaces the model that the later answers report.
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import server_fixture
import SimpleITK as sitk
from PIL import Image
from server_fixture import HEIGHT, LABELLED, STUDIES, WIDTH, Server, spine
from test_images import patch_png_size, write_dicom

from spinecascade.io.labels import LandmarkLabel, label_to_json_dict, label_to_mrk_dict
from spinecascade.landmarks import CORNERS, VERTEBRAE
from spinecascade.method.model_file import load_model, read_metadata

pytestmark = pytest.mark.server
scoliosis_server = server_fixture.scoliosis_server

TASK = "vertebral_landmarks"
FINISHED = ("DONE", "ERROR", "STOPPED")  # MONAI Label's task states after SUBMITTED and RUNNING


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def points(answer: dict) -> np.ndarray:
    return np.array([[p["x"], p["y"]] for p in answer["landmarks"]])


def version(model: Path) -> str:
    return read_metadata(model)["sha256"][:12]


def label_doc(image_id: str) -> dict:
    return label_to_json_dict(LandmarkLabel(np.asarray(spine(image_id).landmarks), WIDTH, HEIGHT, None))


def put_label(server: Server, image_id: str, content: bytes, tag: str = "final", params: dict | None = None,
              filename: str = "label.json"):
    return server.request("PUT", "/datastore/label", params={"image": image_id, "tag": tag},
                          files={"label": (filename, content)},
                          data={"params": json.dumps(params)} if params else None)


def stored_label(server: Server, image_id: str, tag: str = "final") -> dict:
    response = server.request("GET", "/datastore/label", params={"label": image_id, "tag": tag})
    assert response.status_code == 200, response.text
    return response.json()


# --- info and inference ----------------------------------------------------------------------------------


def test_info_lists_the_tasks_and_the_studies(scoliosis_server: Server):
    info = scoliosis_server.request("GET", "/info/").json()
    model = info["models"][TASK]
    assert (model["type"], model["dimension"], model["labels"]) == ("detection", 2, list(VERTEBRAE))
    assert TASK in info["trainers"]
    assert {"landmark_uncertainty", "random", "first"} <= set(info["strategies"])
    assert "landmark_uncertainty" in info["scoring"]
    # Labels already in labels/final/ when the server started are found.
    assert (info["datastore"]["total"], info["datastore"]["completed"]) == (len(STUDIES), len(LABELLED))


def test_infer_by_image_id(scoliosis_server: Server):
    response = scoliosis_server.infer("spine-0")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["format"] == "spinecascade-landmarks"
    assert answer["image"] == {"name": "spine-0.jpg", "width": WIDTH, "height": HEIGHT, "spacing_mm": None}
    names = [(p["vertebra"], p["corner"]) for p in answer["landmarks"]]
    assert names == [(v, c) for v in VERTEBRAE for c in CORNERS]
    error = np.linalg.norm(points(answer) - spine("spine-0").landmarks.reshape(-1, 2), axis=1)
    assert error.mean() < 10, f"mean landmark error {error.mean():.1f} px"
    assert [c["vertebra"] for c in answer["centres"]] == list(VERTEBRAE)
    for angle in ("PT", "MT", "TL"):
        cobb = answer["cobb"][angle]
        assert 0 <= cobb["degrees"] < 90 and {cobb["upper_vertebra"], cobb["lower_vertebra"]} <= set(VERTEBRAE)
    assert answer["cobb"]["curve"] in ("C", "S")
    assert len(answer["uncertainty"]["per_landmark"]) == 68 and answer["uncertainty"]["image"] >= 0
    assert answer["model"]["version"] == version(scoliosis_server.model)
    assert answer["timings_ms"]["server"] > 0


def test_infer_uploads_in_every_format(scoliosis_server: Server, tmp_path: Path):
    pixels = spine("spine-1").image  # the PNG of the datastore: lossless copies must answer the same
    by_id = points(scoliosis_server.infer("spine-1").json())
    write_dicom(tmp_path / "x.dcm", pixels, PixelSpacing=[0.25, 0.2])
    sitk.WriteImage(sitk.GetImageFromArray(pixels), str(tmp_path / "x.nrrd"))
    jpeg = io.BytesIO()
    Image.fromarray(pixels).save(jpeg, format="JPEG", quality=95)
    uploads = {"x.png": png(pixels), "x.dcm": (tmp_path / "x.dcm").read_bytes(),
               "x.nrrd": (tmp_path / "x.nrrd").read_bytes(), "x.jpg": jpeg.getvalue()}
    for name, content in uploads.items():
        response = scoliosis_server.infer(upload=(name, content))
        assert response.status_code == 200, f"{name}: {response.text}"
        answer = response.json()
        assert answer["image"]["name"] is None
        tolerance = 3.0 if name.endswith(".jpg") else 1e-6
        np.testing.assert_allclose(points(answer), by_id, atol=tolerance, err_msg=name)
        if name.endswith(".dcm"):
            assert answer["image"]["spacing_mm"] == [0.2, 0.25]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.txt", b"not an image at all\n", "is not a supported image"),
        ("empty.png", b"", "is empty"),
        ("truncated.jpg", None, "corrupt or truncated"),
        ("volume.nrrd", None, "3D volume"),
        ("huge.png", None, "pixels"),
        ("label.json", json.dumps({"format": "spinecascade-landmarks"}).encode(), "is not a supported image"),
    ],
)
def test_bad_uploads_get_a_clear_4xx(scoliosis_server: Server, tmp_path: Path, name, content, message):
    pixels = spine("spine-0").image
    if name == "truncated.jpg":
        jpeg = io.BytesIO()
        Image.fromarray(pixels).save(jpeg, format="JPEG")
        content = jpeg.getvalue()[: len(jpeg.getvalue()) // 2]
    elif name == "volume.nrrd":
        sitk.WriteImage(sitk.GetImageFromArray(np.stack([pixels] * 4)), str(tmp_path / name))
        content = (tmp_path / name).read_bytes()
    elif name == "huge.png":
        content = patch_png_size(png(pixels), 200_000, 200_000)
    response = scoliosis_server.infer(upload=(name, content))
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert scoliosis_server.infer("spine-0").status_code == 200  # and the server keeps serving


def test_unknown_image_id_is_404(scoliosis_server: Server):
    response = scoliosis_server.infer("no-such-study")
    assert response.status_code == 404
    assert "no-such-study" in response.json()["detail"]
    response = put_label(scoliosis_server, "no-such-study", json.dumps(label_doc("spine-0")).encode())
    assert response.status_code == 404


def test_unknown_inference_task_is_404_naming_the_tasks(scoliosis_server: Server):
    response = scoliosis_server.request("POST", "/infer/auto-landmark", params={"image": "spine-0", "output": "json"})
    assert response.status_code == 404
    assert "'auto-landmark'" in response.json()["detail"]
    assert "vertebral_landmarks" in response.json()["detail"]
    assert scoliosis_server.infer("spine-0").status_code == 200


def test_datastore_refuses_a_file_that_is_no_radiograph(scoliosis_server: Server):
    response = scoliosis_server.request("PUT", "/datastore/image", params={"image": "notes"},
                                        files={"file": ("notes.png", b"not a picture")})
    assert response.status_code == 422
    assert "is not a supported image" in response.json()["detail"]
    assert scoliosis_server.request("GET", "/datastore/", params={"output": "stats"}).json()["total"] == len(STUDIES)


def test_bad_request_parameter_is_422(scoliosis_server: Server):
    response = scoliosis_server.infer("spine-0", params={"save_label": "perhaps"})
    assert response.status_code == 422
    assert "save_label" in response.json()["detail"]


def test_concurrent_requests_all_get_the_right_answer(scoliosis_server: Server):
    expected = points(scoliosis_server.infer("spine-2").json())
    upload = ("spine.jpg", (scoliosis_server.studies / "spine-2.jpg").read_bytes())

    def one(k: int):
        return scoliosis_server.infer("spine-2") if k % 2 else scoliosis_server.infer(upload=upload)

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(one, range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    for response in responses:
        np.testing.assert_allclose(points(response.json()), expected, atol=1e-6)


# --- labels ----------------------------------------------------------------------------------------------


def test_label_is_stored_in_our_format_and_the_previous_kept(scoliosis_server: Server):
    first = label_doc("spine-1")
    assert put_label(scoliosis_server, "spine-1", json.dumps(first).encode()).status_code == 200
    stored = stored_label(scoliosis_server, "spine-1")
    assert stored["image"] == {"name": "spine-1.png", "width": WIDTH, "height": HEIGHT, "spacing_mm": None}
    np.testing.assert_array_equal(points(stored), points(first))

    # A 3D Slicer point list (pixel = mm for a PNG) replaces it, converted to our format.
    moved = LandmarkLabel(np.asarray(spine("spine-1").landmarks) + [1.5, -1.0], WIDTH, HEIGHT, None)
    response = put_label(scoliosis_server, "spine-1", json.dumps(label_to_mrk_dict(moved)).encode(),
                         filename="spine-1.mrk.json")
    assert response.status_code == 200, response.text
    stored = stored_label(scoliosis_server, "spine-1")
    assert stored["format"] == "spinecascade-landmarks"
    np.testing.assert_allclose(points(stored), moved.landmarks.reshape(-1, 2), atol=1e-9)

    info = scoliosis_server.request("GET", "/datastore/label/info", params={"label": "spine-1", "tag": "final"})
    previous = scoliosis_server.studies / "labels" / info.json()["previous"]
    np.testing.assert_array_equal(points(json.loads(previous.read_text())), points(first))


def _broken(change) -> bytes:
    doc = label_doc("spine-3")
    change(doc)
    return json.dumps(doc).encode()


def _swap_t1_sides(doc: dict) -> None:
    t1 = doc["landmarks"][:4]
    for left, right in ((0, 1), (2, 3)):
        t1[left]["x"], t1[right]["x"] = t1[right]["x"], t1[left]["x"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (_broken(lambda d: d.update(landmarks=d["landmarks"][:60])), "8 of 68 landmarks missing"),
        (_broken(lambda d: d["landmarks"][5].update(x=float("nan"))), "finite"),
        (_broken(lambda d: d["landmarks"][9].update(y=5000.0)), "outside"),
        (_broken(lambda d: d["image"].update(width=WIDTH + 1)), "width"),
        (_broken(_swap_t1_sides), "left-right"),
        (b"{not json", "not a JSON document"),
        (b"\xff\xd8\xff\xe0 binary", "not a JSON document"),
    ],
)
def test_bad_labels_are_refused_and_nothing_is_stored(scoliosis_server: Server, content: bytes, message: str):
    response = put_label(scoliosis_server, "spine-3", content)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert scoliosis_server.request("HEAD", "/datastore/label", params={"image": "spine-3", "tag": "final"}
                                    ).status_code == 404


def test_label_tag_cannot_leave_the_labels_folder(scoliosis_server: Server):
    response = put_label(scoliosis_server, "spine-3", json.dumps(label_doc("spine-3")).encode(), tag="../../x")
    assert response.status_code == 422
    assert not (scoliosis_server.root / "x").exists()


def test_flagged_label_is_stored_when_forced(scoliosis_server: Server):
    response = put_label(scoliosis_server, "spine-3", _broken(_swap_t1_sides), params={"force": True})
    assert response.status_code == 200, response.text
    info = scoliosis_server.request("GET", "/datastore/label/info", params={"label": "spine-3", "tag": "final"})
    assert any("left-right" in finding for finding in info.json()["findings"])


def test_prediction_saved_as_an_editable_label(scoliosis_server: Server):
    answer = scoliosis_server.infer("spine-0", params={"save_label": True}).json()
    stored = stored_label(scoliosis_server, "spine-0", tag="original")
    np.testing.assert_allclose(points(stored), points(answer))
    assert stored["model"]["version"] == answer["model"]["version"]
    unlabelled = scoliosis_server.request("GET", "/datastore/", params={"output": "stats"}).json()
    assert unlabelled["label_tags"]["original"] == 1


def test_model_can_be_downloaded_but_not_overwritten(scoliosis_server: Server):
    response = scoliosis_server.request("GET", f"/model/{TASK}")
    assert response.status_code == 200 and response.content == scoliosis_server.model.read_bytes()
    response = scoliosis_server.request("PUT", f"/model/{TASK}", files={"file": ("m.safetensors", b"junk")})
    assert response.status_code == 405
    assert "POST /train" in response.json()["detail"]
    assert scoliosis_server.infer("spine-0").status_code == 200


# --- active learning -------------------------------------------------------------------------------------


def test_scoring_caches_the_flag_and_uncertainty_and_the_strategy_picks_flagged_then_highest(
        scoliosis_server: Server):
    server = scoliosis_server
    assert server.request("POST", "/scoring/landmark_uncertainty").status_code == 200
    server.wait_for("scoring", lambda: server.request("GET", "/scoring/").json()["status"] in FINISHED)
    assert server.request("GET", "/scoring/").json()["status"] == "DONE"
    unlabelled = ["spine-0", "spine-2"]  # the others have final labels by now
    current = version(server.model)
    scores = {}
    for image_id in unlabelled:
        entry = server.request("GET", "/datastore/image/info", params={"image": image_id}).json()
        assert entry["landmark_uncertainty"]["model"] == current
        scores[image_id] = (entry["landmark_uncertainty"]["review_needed"], entry["landmark_uncertainty"]["value"])
    chosen = server.request("POST", "/activelearning/landmark_uncertainty").json()
    assert chosen["id"] == max(scores, key=scores.__getitem__)
    assert (chosen["review_needed"], chosen["uncertainty"]) == pytest.approx(max(scores.values()))
    assert chosen["not_scored_yet"] == 0
    for strategy in ("random", "first"):
        assert server.request("POST", f"/activelearning/{strategy}").json()["id"] in unlabelled


# --- training --------------------------------------------------------------------------------------------


def _train_status(server: Server) -> str:
    return server.request("GET", "/train/").json()["status"]


def test_training_publishes_a_model_that_inference_uses_at_once(scoliosis_server: Server):
    server = scoliosis_server
    before = version(server.model)
    response = server.request("POST", f"/train/{TASK}", json={"epochs": 1, "set": ["train.stages.lr_decay=0.7"]})
    assert response.status_code == 200, response.text
    server.wait_for("training", lambda: _train_status(server) in FINISHED, every=2.0)
    stats = server.request("GET", "/info/").json()["train_stats"][TASK]
    assert (_train_status(server), stats["status"]) == ("DONE", "DONE"), server.log_tail()
    assert stats["mode"] == "fine-tune" and stats["stages_done"] == stats["stages_total"]
    # spine-1, spine-3 (forced: its swapped T1 is repaired) and the two labelled from the start.
    assert (stats["labelled_images"], stats["images"], list(stats["repaired"])) == (4, 4, ["spine-3.png"])
    after = version(server.model)
    assert after != before and stats["model_version"] == after and stats["previous_version"] == before
    assert version(Path(stats["previous_model"])) == before
    assert server.infer("spine-0").json()["model"]["version"] == after
    info = load_model(server.model)[1]
    # The served model's recipe's fine-tuning settings, with the request's epochs and decay.
    assert info["recipe"] == "small" and info["train"]["finetuned_from"] == before
    assert (info["train"]["stages"]["epochs"], info["train"]["stages"]["lr_decay"]) == (1, 0.7)


def test_stopped_training_leaves_the_model_alone(scoliosis_server: Server):
    server = scoliosis_server
    before = version(server.model)
    assert server.request("POST", f"/train/{TASK}", json={"epochs": 500}).status_code == 200
    server.wait_for("training to start", lambda: _train_status(server) == "RUNNING", every=0.2)
    stopped = server.request("DELETE", "/train/")
    assert stopped.status_code == 200 and stopped.json()["status"] == "STOPPED"
    assert version(server.model) == before
    assert server.infer("spine-0").json()["model"]["version"] == before


@pytest.mark.parametrize(("request_body", "message"), [
    ({"from_scratch": True}, "at least 20 final labels"),
    ({"lr_decay": 0.5}, "unknown training parameter(s) lr_decay"),
    ({"set": ["train.stages.lr_decay=2"]}, "stages.lr_decay 2: expected a number in (0, 1]"),
    ({"set": {"train.film_start.framing": 400}}, "film_start.framing 400: expected a number in [0, 170]"),
    ({"epochs": "many"}, "epochs 'many': expected a whole number"),
])
def test_training_refuses_what_it_cannot_do(scoliosis_server: Server, request_body: dict, message: str):
    server = scoliosis_server
    before = version(server.model)
    assert server.request("POST", f"/train/{TASK}", json=request_body).status_code == 200
    server.wait_for("training", lambda: _train_status(server) in FINISHED, every=2.0)
    stats = server.request("GET", "/info/").json()["train_stats"][TASK]
    assert stats["status"] == "ERROR" and message in stats["message"], stats
    assert version(server.model) == before
