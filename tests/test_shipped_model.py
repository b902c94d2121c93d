"""Regression guard for the shipped model on 20 AASCE training images: catches a broken pipeline, not a
slightly worse model (the figures of record come from `spinecascade evaluate`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import AASCE, needs_aasce

from spinecascade.io.dataset import AasceDataset
from spinecascade.io.images import Radiograph, load_image
from spinecascade.landmarks import flip_horizontal
from spinecascade.method.evaluation import evaluate_predictor
from spinecascade.method.model_file import read_metadata, shipped_model_path
from spinecascade.method.prediction import Predictor

SHIPPED_MODEL = shipped_model_path()
SAMPLE_STUDIES = Path(__file__).resolve().parents[1] / "apps" / "scoliosis" / "sample_studies"
REFERENCE = Path(__file__).resolve().parent / "data" / "shipped_model_reference.json"


def test_shipped_model_is_small_and_describes_its_training():
    assert SHIPPED_MODEL.stat().st_size <= 25 * 1024 * 1024
    info = json.loads(read_metadata(SHIPPED_MODEL)["info"])
    assert info["recipe"] == "shipped" and info["data"]["split"] == "all"
    assert info["data"]["n_images"] + len(info["data"]["excluded"]) == 481


@needs_aasce
def test_shipped_model_on_twenty_training_images():
    samples = AasceDataset(AASCE).split("all")[::24][:20]
    result = evaluate_predictor(Predictor(SHIPPED_MODEL, device="cpu"), samples, progress=False)
    assert result.n_images == 20
    # The mean start shape alone scores about 1.1e-2: a pipeline that loses the image or the coordinates lands there.
    assert result.mse < 7e-3, result
    assert result.smape < 40.0, result
    assert result.mean_px_error < 80.0, result


@pytest.mark.parametrize("name", ["sunhl-1th-26-Jul-2016-70_A_AP.jpg"])
def test_shipped_model_on_a_bundled_sample_study(name):
    study = SAMPLE_STUDIES / name
    pred = Predictor(SHIPPED_MODEL, device="cpu").predict(study)
    assert pred.cobb.pt.degrees > 20  # reference PT 40.7 deg: a clear curve, not a straight default shape
    assert pred.image_uncertainty < 50


def test_shipped_model_gives_a_mirrored_study_the_mirrored_landmarks_point_by_point():
    """Each answer averages a view and its mirror, so only CLAHE's tile grid, which is not mirror-symmetric,
    separates the two: on average within the image's uncertainty, and every point within the two predictions'
    own uncertainties there and one cell of the corner heatmaps (2 px of the 680-px film the model reads), where a
    soft-argmax between two edges can tip either way. A corner swapped left for right would be a vertebra off."""
    study = SAMPLE_STUDIES / "sunhl-1th-26-Jul-2016-68_A_AP.jpg"
    film = load_image(study).to_uint8().astype(np.float32)
    predictor = Predictor(SHIPPED_MODEL, device="cpu")
    pred = predictor.predict(Radiograph(film))
    mirrored = predictor.predict(Radiograph(np.ascontiguousarray(film[:, ::-1])))
    back = flip_horizontal(mirrored.landmarks, film.shape[1]).reshape(68, 2)
    distance = np.linalg.norm(back - pred.landmarks.reshape(68, 2), axis=1)
    assert distance.mean() <= pred.image_uncertainty, (distance.mean(), pred.image_uncertainty)
    cell = 2 * film.shape[0] / 680
    assert (distance <= pred.uncertainty + mirrored.uncertainty + cell + 1.0).all(), distance.max()


def test_shipped_model_predicts_the_recorded_landmarks_on_the_bundled_samples():
    """The same points, within 1e-3 px, as recorded before the recipes replaced the training options."""
    reference = json.loads(REFERENCE.read_text())
    predictor = Predictor(SHIPPED_MODEL, device="cpu")
    assert predictor.version == reference["model_version"]
    for name, points in reference["landmarks"].items():
        predicted = predictor.predict(SAMPLE_STUDIES / name).landmarks.reshape(68, 2)
        np.testing.assert_allclose(predicted, np.array(points), atol=1e-3, rtol=0, err_msg=name)
