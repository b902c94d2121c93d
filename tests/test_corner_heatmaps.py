"""Corner heatmaps: windows turned to the spine, and a trained network finding corners the mean layout misses."""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from spinecascade.io.images import Radiograph
from spinecascade.measurement.metrics import normalised_mse
from spinecascade.method.cascade import normalise_pixels
from spinecascade.method.corner_heatmaps import soft_argmax
from spinecascade.method.crops import turned_windows
from spinecascade.method.model_file import load_model
from spinecascade.method.prediction import Predictor
from spinecascade.method.samples import pad_batch, prepare
from spinecascade.synthetic import make_spine
from spinecascade.training.recipes import configure


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


def test_corner_heatmaps_find_corners_the_mean_layout_misses(tiny_model: Path):
    """On unseen spines, around centres moved by a few pixels, the heatmaps' corners lie nearer the truth than the
    mean layout turned to the spine at the same centres."""
    cascade, _ = load_model(tiny_model)
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


def test_corner_heatmaps_start_step_two_in_a_prediction(tiny_model: Path):
    cascade, info = load_model(tiny_model)
    assert cascade.config.corner_heatmaps == configure("small").model.corner_heatmaps
    assert [h["stage"] for h in info["history"]].count("corner heatmaps") == 1
    without = copy.deepcopy(cascade)
    without.corner_heatmaps = None  # step 2 then starts from the mean layout
    film = Radiograph(make_spine(94_000, 96, 240).image.astype(np.float32))
    found, layout = (Predictor(m).predict(film) for m in (cascade, without))
    assert found.landmarks.shape == (17, 4, 2)
    assert not np.allclose(found.landmarks, layout.landmarks)


def test_no_step_two_stage_needs_corner_heatmaps():
    with pytest.raises(ValueError, match="needs corner heatmaps"):
        replace(configure("small").model, n_stages=0, corner_heatmaps=None).check()
