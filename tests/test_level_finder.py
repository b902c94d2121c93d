"""The level finder: strips along the spine, and a trained finder putting back levels its priors missed."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from spinecascade.io.images import Radiograph
from spinecascade.method.cascade import normalise_pixels
from spinecascade.method.crops import centreline, spine_strips
from spinecascade.method.level_finder import LevelConfig, LevelFinder, chain_rows
from spinecascade.method.model_file import load_model
from spinecascade.method.prediction import Predictor
from spinecascade.method.samples import pad_batch, prepare
from spinecascade.synthetic import make_spine
from spinecascade.training.recipes import configure

SMALL_LEVELS = configure("small").model.level_finder


def test_centreline_joins_the_centres_and_holds_their_x_past_the_ends():
    centres = torch.tensor([[[10.0, 20.0], [30.0, 40.0], [20.0, 60.0]]])
    rows = torch.tensor([[0.0, 20.0, 30.0, 40.0, 50.0, 60.0, 90.0]])
    np.testing.assert_allclose(centreline(centres, rows)[0].numpy(), [10, 10, 20, 30, 25, 20, 20])
    np.testing.assert_allclose(centreline(centres.flip(1), rows)[0].numpy(), [10, 10, 20, 30, 25, 20, 20])


def test_strips_follow_the_spine_down_the_whole_film():
    yy, xx = torch.meshgrid(torch.arange(80.0), torch.arange(60.0), indexing="ij")
    images = (xx + 1000 * yy)[None, None].repeat(2, 1, 1, 1)
    centres = torch.tensor([[[20.0, 10.0], [40.0, 70.0]], [[30.0, 10.0], [30.0, 70.0]]])
    strips = spine_strips(images, centres, width=8, step=2)
    assert strips.shape == (2, 1, 40, 4)
    rows = (torch.arange(40) + 0.5) * 2 - 0.5
    across = torch.tensor([-3.0, -1.0, 1.0, 3.0])
    for strip, line in zip(strips, centreline(centres, rows[None].expand(2, -1))):
        np.testing.assert_allclose(strip[0].numpy(), (line[:, None] + across + 1000 * rows[:, None]).numpy(),
                                   atol=0.1)
    # Training warps: row r of a strip samples image row scale * y_r + shift.
    warped = spine_strips(images, centres, 8, 2, torch.tensor([0.5, 1.0]), torch.tensor([10.0, -4.0]))
    np.testing.assert_allclose(warped[0, 0, :, 0].numpy() // 1000, (0.5 * rows + 10).numpy() // 1, atol=1)
    assert warped[1, 0, 0, 0] == 0  # row -4.5 lies above the film


def _peaks(rows: list[list[int]], n_rows: int = 200) -> torch.Tensor:
    """Row scores (1, 17, n_rows): each vertebra's listed rows score 5, 4, ... in that order, the rest 0."""
    scores = torch.zeros(1, len(rows), n_rows)
    for k, wanted in enumerate(rows):
        for rank, r in enumerate(wanted):
            scores[0, k, r] = 5.0 - rank
    return scores


def test_a_chain_takes_each_vertebra_at_its_best_row_when_those_rows_are_in_order():
    ys = torch.arange(200.0)
    truth = [10 * k + 15 for k in range(17)]
    rows = chain_rows(_peaks([[r] for r in truth]), ys, torch.full((1, 16), 10.0), sigma=0.07)
    assert rows[0].tolist() == truth


def test_a_chain_cannot_double_a_vertebra_or_skip_the_one_below():
    """Vertebra 8 scores best on vertebra 9's row and only second on its own: alone it doubles 9, the spine
    below it then a level off; the chain puts it back, and keeps the prior's gaps where the scores tie."""
    ys = torch.arange(200.0)
    truth = [10 * k + 15 for k in range(17)]
    wanted = [[r] for r in truth]
    wanted[8] = [truth[9], truth[8]]
    scores = _peaks(wanted)
    assert scores[0, 8].argmax() == scores[0, 9].argmax()
    assert chain_rows(scores, ys, torch.full((1, 16), 10.0), sigma=0.07)[0].tolist() == truth
    flat = torch.zeros(1, 17, 200)
    flat[0, 0, 40] = 5.0  # only the first vertebra is seen: the rest follow at the prior's gaps, below it
    gaps = torch.linspace(8, 12, 16)[None]
    rows = chain_rows(flat, ys, gaps, sigma=0.07)[0]
    assert rows[0] == 40 and (rows.diff() - gaps[0]).abs().max() <= 1


def test_the_chain_decodes_predictions_only():
    """Training sees each vertebra under its prior, as the finder was designed; evaluation decodes the chain."""
    torch.manual_seed(0)
    finder = LevelFinder(SMALL_LEVELS)
    plain = LevelFinder(LevelConfig(**{**SMALL_LEVELS.__dict__, "chain_sigma": None}))
    plain.load_state_dict(finder.state_dict())
    images = torch.rand(2, 1, 240, 96)
    centres = torch.stack([torch.full((2, 17), 48.0), torch.linspace(20, 220, 17).expand(2, -1)], dim=-1)
    finder.train(), plain.train()
    torch.testing.assert_close(finder(images, centres), plain(images, centres))
    finder.eval(), plain.eval()
    with torch.no_grad():
        chained, alone = finder(images, centres), plain(images, centres)
    assert chained.shape == alone.shape == (2, 17, 2) and torch.isfinite(chained).all()
    assert (chained[..., 1].diff(dim=1) > 0).all()


def test_the_level_settings_round_trip_with_or_without_the_chain():
    d = LevelConfig().__dict__ | {"dilations": list(LevelConfig().dilations)}
    assert LevelConfig.from_dict(d) == LevelConfig()
    assert LevelConfig.from_dict(d | {"chain_sigma": None}).chain_sigma is None


def test_the_level_finder_puts_back_levels_its_priors_missed(tiny_model: Path):
    """On unseen spines, centres moved up or down by most of a level come back near the truth."""
    cascade, _ = load_model(tiny_model)
    films = [prepare(f"{i}", s.image, s.landmarks, cascade.config.preprocess)
             for i, s in enumerate(make_spine(91_000 + i, 96, 240) for i in range(8))]
    u8, _ = pad_batch([f.image for f in films])
    truth = torch.from_numpy(np.stack([f.landmarks.mean(axis=1) for f in films])).float()
    level = float((truth[:, -1, 1] - truth[:, 0, 1]).mean() / 16)
    shift = torch.tensor([0.6, -0.6] * 4)[:, None] * level
    priors = torch.stack([truth[..., 0], truth[..., 1] + shift], dim=-1)
    with torch.no_grad():
        found = cascade.level_finder(normalise_pixels(u8), priors)
    before = (priors - truth)[..., 1].abs().mean()
    after = (found - truth)[..., 1].abs().mean()
    assert after < before / 2, (float(after), float(before))


def test_the_level_finder_ends_step_one_in_a_prediction(tiny_model: Path):
    cascade, info = load_model(tiny_model)
    assert [h["stage"] for h in info["history"]].count("level finder") == 1
    without = copy.deepcopy(cascade)
    without.level_finder = None
    films = [Radiograph(make_spine(92_000 + i, 96, 240).image.astype(np.float32)) for i in range(2)]
    levels, plain = (Predictor(m).predict_batch(films) for m in (cascade, without))
    for p, q in zip(plain, levels):
        assert q.landmarks.shape == (17, 4, 2) and np.isfinite(q.uncertainty).all()
        assert not np.allclose(p.centres, q.centres)
