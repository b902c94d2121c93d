"""Corner heatmaps: windows turned to the spine, and a trained network finding corners the mean layout misses."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import step_two_retrained
from safetensors.torch import load_file

from spinecascade.cli.main import main
from spinecascade.io.images import Radiograph
from spinecascade.measurement.metrics import normalised_mse
from spinecascade.method.cascade import normalise_pixels
from spinecascade.method.corner_heatmaps import soft_argmax
from spinecascade.method.crops import turned_windows
from spinecascade.method.model_file import load_model, save_model
from spinecascade.method.prediction import Predictor
from spinecascade.method.samples import pad_batch, prepare
from spinecascade.method.workflow import corner_heatmap_config
from spinecascade.synthetic import make_spine, write_aasce_layout


def test_windows_are_centred_and_turned_with_the_spine():
    yy, xx = torch.meshgrid(torch.arange(60.0), torch.arange(50.0), indexing="ij")
    images = torch.stack([xx, yy])[None]  # channel 0 holds x, channel 1 holds y
    centres = torch.tensor([[[20.0, 30.0], [25.0, 25.0]]])
    windows = turned_windows(images, centres, torch.tensor([[0.0, math.pi / 2]]), size=8, spacing=2)
    assert windows.shape == (2, 2, 4, 4)
    steps = torch.tensor([-3.0, -1.0, 1.0, 3.0])
    np.testing.assert_allclose(windows[0, 0].numpy(), (20 + steps).expand(4, 4).numpy(), atol=1e-4)
    np.testing.assert_allclose(windows[0, 1].numpy(), (30 + steps)[:, None].expand(4, 4).numpy(), atol=1e-4)
    # A spine running sideways (a quarter turn): the window's rows run along the image's x.
    np.testing.assert_allclose(windows[1, 0].numpy(), (25 + steps)[:, None].expand(4, 4).numpy(), atol=1e-4)
    np.testing.assert_allclose(windows[1, 1].numpy(), (25 - steps).expand(4, 4).numpy(), atol=1e-4)


def test_soft_argmax_finds_each_peak_in_cells():
    logits = torch.full((1, 2, 6, 8), -50.0)
    logits[0, 0, 1, 5] = 50.0
    logits[0, 1, 4, 2] = 50.0
    np.testing.assert_allclose(soft_argmax(logits)[0].numpy(), [[5.5, 1.5], [2.5, 4.5]], atol=1e-4)


@pytest.fixture(scope="module")
def with_heatmaps(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_model's step 1 with step 2 trained again, started from corner heatmaps."""
    return step_two_retrained(tiny_model, tmp_path_factory.mktemp("heatmaps"), 800, "--corner-heatmaps",
                              "--heatmap-epochs", "10", "--learning-rate", "2e-3")


def test_corner_heatmaps_find_corners_the_mean_layout_misses(with_heatmaps: Path):
    """On unseen spines, around centres moved by a few pixels, the heatmaps' corners lie nearer the truth than the
    mean layout turned to the spine at the same centres."""
    cascade, _ = load_model(with_heatmaps)
    films = [prepare(f"{i}", s.image, s.landmarks, cascade.config.preprocess)
             for i, s in enumerate(make_spine(93_000 + i, 96, 240) for i in range(8))]
    u8, _ = pad_batch([f.image for f in films])
    truth = torch.from_numpy(np.stack([f.landmarks for f in films])).float()
    moved = truth.mean(dim=2) + torch.randn(8, 17, 2, generator=torch.Generator().manual_seed(0)) * 1.5
    with torch.no_grad():
        found = cascade.initial_corners(moved, normalise_pixels(u8))
    layout = cascade.initial_corners(moved)

    def mse(corners: torch.Tensor) -> float:
        return float(np.mean([normalised_mse(c.numpy(), t.numpy(), *f.size)
                              for c, t, f in zip(corners, truth, films)]))

    assert mse(found) < 0.7 * mse(layout), (mse(found), mse(layout))


def test_a_model_with_corner_heatmaps_keeps_step_one_and_predicts(tiny_model: Path, with_heatmaps: Path,
                                                                  tmp_path: Path):
    cascade, info = load_model(with_heatmaps)
    assert cascade.config.corner_heatmaps == corner_heatmap_config(cascade.config)
    assert [h["stage"] for h in info["history"]].count("corner heatmaps") == 1
    a, b = load_file(str(tiny_model)), load_file(str(with_heatmaps))
    step1 = [k for k in a if k.startswith(("centre_stages.", "film_start.")) or k == "mean_centres"]
    assert step1 and all(torch.equal(a[k], b[k]) for k in step1)
    film = Radiograph(make_spine(94_000, 96, 240).image.astype(np.float32))
    with_stage = Predictor(with_heatmaps).predict(film)
    cascade.set_prediction_stages(cascade.prediction_stages[0].item(), 0)  # the heatmaps alone answer step 2
    alone = tmp_path / "alone.safetensors"
    save_model(alone, cascade, info)
    assert load_model(alone)[0].prediction_stages[1].item() == 0
    without_stage = Predictor(alone).predict(film)
    assert without_stage.landmarks.shape == (17, 4, 2)
    assert not np.allclose(with_stage.landmarks, without_stage.landmarks)


def test_no_step_two_stage_needs_corner_heatmaps(tiny_model: Path):
    cascade, _ = load_model(tiny_model)
    with pytest.raises(ValueError, match="needs corner heatmaps"):
        cascade.set_prediction_stages(1, 0)


def test_finetuning_refuses_to_add_corner_heatmaps(tiny_model: Path, tmp_path: Path, capsys):
    out = tmp_path / "m.safetensors"
    write_aasce_layout(tmp_path / "data", 2, seed=900, width=96, height=240)
    assert main(["train", "--data", str(tmp_path / "data"), "--split", "all", "--finetune", str(tiny_model),
                 "--corner-heatmaps", "--out", str(out)]) == 2
    assert "--step1-from" in capsys.readouterr().err and not out.exists()
