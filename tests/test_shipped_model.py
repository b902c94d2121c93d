"""Regression guard for the shipped model on 20 AASCE training images: catches a broken pipeline, not a
slightly worse model (the figures of record come from `spinecascade evaluate`)."""

from __future__ import annotations

import pytest
from conftest import AASCE, needs_aasce

from spinecascade.io.dataset import AasceDataset
from spinecascade.method.evaluation import evaluate_predictor
from spinecascade.method.model_file import read_metadata
from spinecascade.method.prediction import SHIPPED_MODEL, Predictor


def test_shipped_model_is_small_and_describes_its_training():
    assert SHIPPED_MODEL.stat().st_size <= 25 * 1024 * 1024
    import json

    info = json.loads(read_metadata(SHIPPED_MODEL)["info"])
    assert info["data"]["split"] == "all"
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
    study = SHIPPED_MODEL.parents[1] / "sample_studies" / name
    pred = Predictor(SHIPPED_MODEL, device="cpu").predict(study)
    assert pred.cobb.pt.degrees > 20  # reference PT 40.7 deg: a clear curve, not a straight default shape
    assert pred.image_uncertainty < 50
