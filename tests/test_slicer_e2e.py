"""End to end: the Slicer module's logic against the real MONAI Label app (apps/scoliosis).

The server comes from tests/server_fixture.py, whose `scoliosis_server` fixture starts the app on synthetic
studies with a small model trained by the tests. Skipped when slicer-core is missing.
"""

from __future__ import annotations

import importlib
import time

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="the slicer-core wheel is not installed")
import server_fixture  # noqa: E402

scoliosis_server = server_fixture.scoliosis_server

geometry = importlib.import_module("SpineCascadeLib.geometry")
imaging = importlib.import_module("SpineCascadeLib.imaging")
logic_module = importlib.import_module("SpineCascadeLib.logic")

from spinecascade.io.labels import label_from_json_dict  # noqa: E402
from spinecascade.landmarks import point_names  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.timeout(600)]


@pytest.fixture
def logic(scoliosis_server):
    scene = slicer.vtkMRMLScene()
    scene.AddNode(slicer.vtkMRMLSelectionNode())
    logic = logic_module.SpineCascadeLogic(scene)
    info = logic.connect(scoliosis_server.url)
    assert "vertebral_landmarks" in info.models
    yield logic
    logic.close()


def move(annotation, k: int, shift: tuple[float, float]) -> np.ndarray:
    """Move landmark k by `shift` pixels the way a drag in Slicer does; the moved landmarks."""
    moved = annotation.landmarks.copy()
    vertebra, corner = divmod(k, 4)
    moved[vertebra, corner] += shift
    position = geometry.pixels_to_ras(annotation.volume, moved[vertebra, corner])[0]
    annotation.points.SetNthControlPointPosition(k, *position)
    return moved


def test_next_image_auto_landmark_correct_submit_and_read_back(logic):
    volume = logic.next_image()
    assert volume is not None, "the server's datastore should hold an unlabelled image"
    image_id = volume.GetAttribute(logic_module.IMAGE_ID_ATTRIBUTE)
    width, height = geometry.image_size(volume)

    annotation = logic.auto_landmark(volume)
    node = annotation.points
    assert [node.GetNthControlPointLabel(i) for i in range(node.GetNumberOfControlPoints())] == point_names()
    answer = logic.client.infer(logic.model, image_id=image_id)
    # The server and Slicer measure with the same library, so they agree on the predicted landmarks.
    for angle in annotation.cobb.angles:
        assert answer["cobb"][angle.name]["degrees"] == pytest.approx(angle.degrees, abs=1e-5)
        assert answer["cobb"][angle.name]["upper_vertebra"] == angle.end_vertebrae[0]
    assert annotation.uncertainty is not None and annotation.uncertainty.shape == (68,)
    # The review flag as the server sends it (none from a server without a quality check).
    quality = answer.get("quality") or {}
    assert annotation.quality.flagged == set(quality.get("flagged_landmarks", []))
    assert bool(annotation.review_banner()) == bool(quality.get("review_needed"))

    k = point_names().index("L3 top-left")
    moved = move(annotation, k, (6.5, -4.0))
    assert annotation.moved == {k}
    logic.submit_correction(volume)

    stored = label_from_json_dict(logic.client.get_label(image_id))
    np.testing.assert_allclose(stored.landmarks, moved, atol=1e-9)
    assert (stored.width, stored.height) == (width, height)
    assert stored.extra["review"]["moved_points"] == ["L3 top-left"]


def test_a_local_image_is_uploaded_for_inference_and_for_its_label(logic):
    downloaded = logic.next_image()
    assert downloaded is not None
    local = imaging.add_volume_from_image(logic.scene, imaging.encode_png(downloaded), "local film")
    assert local.GetAttribute(logic_module.IMAGE_ID_ATTRIBUTE) is None

    annotation = logic.auto_landmark(local)
    width, height = geometry.image_size(local)
    assert annotation.cobb is not None
    moved = move(annotation, 0, (-3.0, 2.5))
    logic.submit_correction(local)

    image_id = local.GetAttribute(logic_module.IMAGE_ID_ATTRIBUTE)
    assert image_id.startswith("local_film-")
    stored = label_from_json_dict(logic.client.get_label(image_id))
    np.testing.assert_allclose(stored.landmarks, moved, atol=1e-9)
    assert (stored.width, stored.height) == (width, height)


def test_training_progress_follows_the_trainers_status(logic):
    """Last in this file: the run publishes a new model. One epoch per stage keeps it short."""
    logic.client.start_training(logic.model, {"epochs": 1})
    seen = []
    deadline = time.monotonic() + 400
    while True:
        status = logic.training_status()
        seen.append(status)
        if not status.running:
            break
        assert time.monotonic() < deadline, f"training still running: {status}"
        time.sleep(0.5)
    assert (status.state, status.fraction) == ("DONE", 1.0), status
    assert status.message.startswith("finished after") and "new model" in status.message
    stats = logic.info.train_stats[logic.model]
    assert stats["stages_done"] == stats["stages_total"] > 0
    fractions = [s.fraction for s in seen if s.fraction is not None]
    assert fractions == sorted(fractions)
