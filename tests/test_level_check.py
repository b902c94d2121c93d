"""The level check: windows along the chain, the regions they show, and the whole-level move those call for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import step_two_retrained
from safetensors.torch import load_file

from spinecascade.cli.main import main
from spinecascade.io.images import Radiograph
from spinecascade.method.cascade import CascadeConfig, normalise_pixels
from spinecascade.method.level_check import (
    LevelCheck,
    LevelCheckConfig,
    along_chain,
    chain_windows,
    region_of,
)
from spinecascade.method.model_file import load_model
from spinecascade.method.prediction import Predictor
from spinecascade.method.samples import pad_batch, prepare
from spinecascade.synthetic import make_spine


def test_chain_positions_interpolate_inside_and_extrapolate_past_the_ends():
    chain = torch.tensor([[[0.0, 10.0], [2.0, 20.0], [4.0, 40.0]]])
    got = along_chain(chain, torch.tensor([[-1.0, 0.0, 0.5, 1.5, 2.0, 3.0]]))
    np.testing.assert_allclose(got[0].numpy(), [[-2, 0], [0, 10], [1, 15], [3, 30], [4, 40], [6, 60]])


def test_regions_change_at_t1_l1_and_below_l5():
    index = torch.tensor([-3.0, -0.6, -0.4, 11.4, 11.6, 16.4, 16.6, 20.0])
    assert region_of(index).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_windows_are_centred_on_the_chain_and_sized_by_its_level_spacing():
    yy, xx = torch.meshgrid(torch.arange(300.0), torch.arange(200.0), indexing="ij")
    images = (xx + 1000 * yy)[None, None]
    chain = torch.stack([torch.full((17,), 100.0), 60 + 10 * torch.arange(17.0)], dim=-1)[None]
    config = LevelCheckConfig(patch=(70, 30))  # one sample per pixel: 7 x 3 levels of 10 px
    windows = chain_windows(images, chain, torch.tensor([[0.0, 4.0]]), config)
    assert windows.shape == (2, 1, 30, 70)
    for window, y in zip(windows[:, 0], (60.0, 100.0)):
        np.testing.assert_allclose(window[15, 35].item(), 100.5 + 1000 * (y + 0.5), atol=0.05)
        np.testing.assert_allclose((window[:, -1] - window[:, 0]).numpy(), 69, atol=0.05)  # 70 px across
        np.testing.assert_allclose((window[-1, :] - window[0, :]).numpy(), 29_000, atol=1)  # 30 px down


def test_the_move_the_regions_call_for_is_taken():
    check = LevelCheck(LevelCheckConfig()).eval()
    positions = check.positions(1, torch.device("cpu"))
    chain = torch.stack([torch.full((17,), 50.0), 100 + 20 * torch.arange(17.0)], dim=-1)[None]
    for truth in (-2, -1, 0, 1, 2):  # chain position p is vertebra p + truth
        logits = 5.0 * torch.nn.functional.one_hot(region_of(positions + truth), 4).float()
        assert check.shift_scores(logits).argmax().item() == truth + 2
        moved = check.moved(chain, logits)
        np.testing.assert_allclose(moved[0, :, 1].numpy(), (100 + 20 * (torch.arange(17.0) - truth)).numpy())


def test_the_config_round_trips_and_older_files_have_no_check():
    config = CascadeConfig(level_check=LevelCheckConfig(patch=(56, 24)))
    assert CascadeConfig.from_dict(config.as_dict()) == config
    older = {k: v for k, v in config.as_dict().items() if k != "level_check"}
    assert CascadeConfig.from_dict(older).level_check is None


@pytest.fixture(scope="module")
def with_check(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_model's step 1 with a level check added (and step 2 trained again after it)."""
    return step_two_retrained(tiny_model, tmp_path_factory.mktemp("check"), 800, "--level-check",
                              "--check-epochs", "15")


def test_the_check_puts_back_spines_moved_a_whole_level(with_check: Path):
    """On unseen spines (ribs on the thoracic twelve only), true chains moved a level up or down come back, and
    unmoved ones stay."""
    cascade, _ = load_model(with_check)
    films = [prepare(f"{i}", s.image, s.landmarks, cascade.config.preprocess)
             for i, s in enumerate(make_spine(93_000 + i, 96, 240) for i in range(8))]
    u8, _ = pad_batch([f.image for f in films])
    images = normalise_pixels(u8)
    truth = torch.from_numpy(np.stack([f.landmarks.mean(axis=1) for f in films])).float()
    level = (truth[:, -1, 1] - truth[:, 0, 1]) / 16
    right = 0
    with torch.no_grad():
        for move in (-1, 0, 1):
            moved = along_chain(truth, torch.arange(17.0)[None].expand(8, -1) + move)
            found = cascade.level_check(images, moved)  # the ends extrapolated twice: near, not on, the truth
            right += int(((found - truth).norm(dim=-1).mean(dim=-1) < 0.2 * level).sum())
    assert right >= 20, right  # of 24


def test_a_model_with_a_level_check_keeps_step_one_and_predicts(tiny_model: Path, with_check: Path):
    cascade, info = load_model(with_check)
    assert cascade.config.level_check is not None
    assert [h["stage"] for h in info["history"]].count("level check") == 1
    a, b = load_file(str(tiny_model)), load_file(str(with_check))
    step1 = [k for k in a if k.startswith(("centre_stages.", "film_start.", "level_finder.")) or k == "mean_centres"]
    assert step1 and all(torch.equal(a[k], b[k]) for k in step1)
    assert any(k.startswith("level_check.") for k in b) and not any(k.startswith("level_check.") for k in a)
    films = [Radiograph(make_spine(94_000 + i, 96, 240).image.astype(np.float32)) for i in range(2)]
    for p in Predictor(with_check).predict_batch(films):
        assert p.landmarks.shape == (17, 4, 2) and np.isfinite(p.uncertainty).all()


def test_a_level_check_cannot_be_fine_tuned_into_a_model_without_one(tiny_model: Path, tmp_path: Path, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["train", "--data", str(tmp_path), "--finetune", str(tiny_model), "--level-check",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--level-check" in err and "--step1-from" in err and not out.exists()
