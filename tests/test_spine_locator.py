"""The spine locator: its crop, its training views and targets, its place in prediction and training, and the shipped
locator on synthetic full-length films (levels known exactly) and on the annotated full-length films."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from spinecascade.io.dataset import Sample
from spinecascade.io.images import Radiograph, load_image, save_image
from spinecascade.landmarks import SpineExtent
from spinecascade.measurement.quality import LOCATOR_SPREAD_LIMIT, assess, spine_reasons
from spinecascade.method.cascade import Cascade
from spinecascade.method.model_file import load_model, read_metadata, shipped_model_path
from spinecascade.method.prediction import Predictor
from spinecascade.method.spine_locator import LocatorConfig, SpineLocator, framing_window
from spinecascade.synthetic import make_full_length, make_spine
from spinecascade.training.config import LocatorTraining
from spinecascade.training.recipes import configure
from spinecascade.training.spine_locator import (
    LocatorExample,
    annotations_path,
    draw_view,
    fit_spine_locator,
    gaussian_targets,
)
from spinecascade.training.train import train_model

FULLSPINE = Path(__file__).resolve().parents[1].parent / "shared" / "fullspine"
TINY = LocatorConfig(thumbnail=(32, 96), channels=(4, 8, 8, 8), dilations=(1, 2))


def test_the_crop_is_framed_like_the_training_films_and_stays_inside_the_film():
    config = LocatorConfig()
    spine = SpineExtent(t1_top=1000.0, l5_bottom=2700.0, x=900.0, t1_spread=0.2, l5_spread=0.2)
    x0, y0, x1, y1 = framing_window(spine, 2000, 4000, config)
    assert y0 == int(1000 - config.top_margin * 1700) and y1 == int(np.ceil(2700 + config.bottom_margin * 1700))
    assert abs((x1 - x0) / (y1 - y0) - config.aspect) < 0.01 and abs((x0 + x1) / 2 - 900) <= 1
    assert framing_window(replace(spine, x=50.0, t1_top=10.0), 2000, 4000, config)[:2] == (0, 0)
    assert framing_window(replace(spine, l5_bottom=1001.0), 2000, 4000, config) == (0, 0, 2000, 4000)
    whole = (0, 0, 2000, 4000)
    assert framing_window(replace(spine, t1_spread=2.5), 2000, 4000, config) == whole  # T1 unsure: no crop
    tight_top = replace(spine, t1_top=100.0, l5_bottom=2400.0)  # a film that starts at T1 and goes on below L5
    assert framing_window(tight_top, 2000, 4000, config)[3] == int(np.ceil(2400 + config.bottom_margin * 2300))
    assert framing_window(replace(tight_top, l5_spread=1.5), 2000, 4000, config) == whole  # L5 unsure: to the end


def test_each_view_changes_the_field_of_view_and_its_targets_follow_the_spine():
    film = np.zeros((1000, 400), np.uint8)
    film[200:800, 190:210] = 255  # a bright column from T1's top (row 200) to L5's bottom (row 800)
    example = LocatorExample("column", film, 200.0, 800.0, 200.0)
    rng = np.random.default_rng(0)
    tops = []
    for _ in range(40):
        thumb, target = draw_view(example, rng, (64, 192))
        assert thumb.shape == (192, 64) and thumb.dtype == np.float32
        rows = np.flatnonzero(thumb[:, int(target[2] * 64)] > 0.5)
        assert abs(rows.min() / 192 - target[0]) < 0.03 and abs((rows.max() + 1) / 192 - target[1]) < 0.03
        assert target[3] == pytest.approx((target[1] - target[0]) / 17)
        tops.append(target[0])
    assert np.ptp(tops) > 0.1  # the spine does not sit where the edges say
    assert draw_view(replace(example, tight=True), rng, (64, 192))[1][5] == 0.0


def test_gaussian_targets_are_distributions_about_the_true_row():
    targets = gaussian_targets(torch.tensor([0.26, 0.7]), torch.tensor([0.02, 0.05]), 96)
    assert torch.allclose(targets.sum(dim=-1), torch.ones(2))
    assert targets.argmax(dim=-1).tolist() == [24, 67]


def _synthetic_example(seed: int) -> LocatorExample:
    film = make_full_length(seed, height=900, variant="standard", rgb=False, bit_depth=8)
    lm = film.landmarks
    top, bottom = lm[0, :2].mean(axis=0), lm[-1, 2:].mean(axis=0)
    return LocatorExample(f"synthetic-{seed}", film.image, top[1], bottom[1], (top[0] + bottom[0]) / 2)


def test_a_locator_learns_where_a_synthetic_spine_begins_and_ends():
    examples = [_synthetic_example(seed) for seed in range(12)]
    torch.manual_seed(0)
    locator = SpineLocator(replace(TINY, channels=(8, 16, 16, 16), dilations=(1, 2, 4, 8)))
    history = fit_spine_locator(locator, examples, LocatorTraining(epochs=12, batch_images=8, learning_rate=5e-3),
                                progress=False)
    assert np.isfinite(history).all() and history[-1] < history[0] * 0.8
    found = locator.locate(examples[0].film)
    assert abs(found.t1_top - examples[0].t1_top) < 0.2 * examples[0].film.shape[0]


class _FixedLocator(SpineLocator):
    """A locator whose finding is given: the crop and the mapping back are under test, not the network."""

    def locate(self, film_u8: np.ndarray) -> SpineExtent:
        return SpineExtent(t1_top=60.0, l5_bottom=400.0, x=100.0, t1_spread=0.2, l5_spread=0.3)


def test_prediction_reads_the_crop_and_answers_in_the_films_pixels(tiny_model: Path):
    cascade, _ = load_model(tiny_model)
    with_locator = Cascade(replace(cascade.config, spine_locator=TINY))
    with_locator.load_state_dict(cascade.state_dict(), strict=False)
    with_locator.spine_locator = _FixedLocator(TINY)
    film = make_spine(8, 192, 480).image.astype(np.float32)
    x0, y0, x1, y1 = framing_window(_FixedLocator(TINY).locate(film), 192, 480, TINY)
    film[y0 : y0 + 12, x0:x1], film[y1 - 12 : y1, x0:x1] = 0, 255  # the same 8-bit window for film and crop
    located = Predictor(with_locator, device="cpu").predict(Radiograph(film))
    assert located.window == (x0, y0, x1, y1)
    assert located.spine is not None and (x1 - x0, y1 - y0) != (192, 480)
    direct = Predictor(cascade, device="cpu").predict(Radiograph(np.ascontiguousarray(film[y0:y1, x0:x1])))
    np.testing.assert_allclose(located.landmarks, direct.landmarks + [x0, y0], atol=1e-6)
    label = located.to_label().extra
    assert label["spine"]["crop"] == [x0, y0, x1, y1] and set(label["spine"]) >= {"t1_top", "l5_bottom", "x"}


def test_a_large_jpeg_is_read_at_a_reduced_size_and_answered_in_its_own_pixels(tmp_path: Path):
    """The predictor decodes a full-length JPEG at half its size (Predictor.decode_rows); the answer is in the
    file's pixels and where the film read whole puts it."""
    film = make_full_length(907, height=3000)
    path = tmp_path / "full-length.jpg"
    save_image(path, film.image)
    predictor = Predictor(device="cpu")
    reduced = predictor.predict(path)
    whole = predictor.predict(Radiograph(load_image(path).pixels))
    assert predictor.load(path).downscale == 2
    assert (reduced.width, reduced.height) == (whole.width, whole.height) == (film.image.shape[1], 3000)
    level = (film.l5_bottom_row - film.t1_top_row) / 17
    assert np.linalg.norm(reduced.landmarks - whole.landmarks, axis=-1).mean() < 0.1 * level
    assert abs(reduced.spine.t1_top - whole.spine.t1_top) < 0.1 * level
    assert np.abs(np.subtract(reduced.window, whole.window)).max() <= 4


def test_the_locators_doubts_flag_the_answer():
    spine = make_spine(5, 400, 2000)
    lm = spine.landmarks
    top, bottom = lm[0, :2, 1].mean(), lm[16, 2:, 1].mean()
    level = (bottom - top) / 17
    ok = SpineExtent(t1_top=top, l5_bottom=bottom, x=200.0, t1_spread=0.3, l5_spread=0.4)
    assert spine_reasons(ok, lm, 2000, 1900) == []
    assert spine_reasons(replace(ok, l5_bottom=2300.0), lm, 2000, 2000) == [
        "levels uncertain: the spine runs out of the film at the bottom, L5 and the sacrum are not in it"]
    outside = spine_reasons(replace(ok, t1_top=-2 * level), lm, 2000, 2000)
    assert any("at the top, T1" in r for r in outside)
    assert spine_reasons(replace(ok, l5_bottom=top + 50), lm, 2000, 2000) == [
        "no spine found: the locator found no stretch from T1 to L5 in the film"]
    unsure = replace(ok, l5_spread=LOCATOR_SPREAD_LIMIT + 0.5)
    assert "cannot tell where L5 ends" in spine_reasons(unsure, lm, 2000, 1900)[0]
    # Read to the film's end, the answer does not rest on where the locator put L5.
    assert spine_reasons(unsure, lm, 2000, 2000) == []
    assert "cannot tell where T1 begins" in spine_reasons(replace(ok, t1_spread=1.5), lm, 2000, 2000)[0]
    # The answer's T1 a level below the locator's: one of the two names the levels wrong.
    assert spine_reasons(replace(ok, t1_top=top - 0.4 * level), lm, 2000, 2000) == []
    assert spine_reasons(replace(ok, t1_top=top - level), lm, 2000, 2000) == [
        "levels uncertain: the spine locator puts T1's top 1.0 levels from this answer's"]
    assert assess(lm, None, 400, 2000, replace(ok, l5_bottom=2300.0), (0, 2000)).review_needed


def test_fine_tuning_a_model_without_a_locator_adds_one_and_keeps_the_rest(tiny_model: Path, tmp_path: Path):
    samples = []
    for i in range(4):
        spine = make_spine(200 + i, 96, 240)
        path = tmp_path / f"s{i}.png"
        save_image(path, spine.image)
        samples.append(Sample(path.name, path, None, spine.landmarks, None, 96, 240))
    full_length = tmp_path / "full-length"
    full_length.mkdir()
    rows = {}
    for seed in (1, 2):
        example = _synthetic_example(seed)
        save_image(full_length / f"film-{seed}.png", example.film)
        rows[f"film-{seed}.png"] = {"t1_top": {"row": example.t1_top, "x": example.x},
                                    "l5_bottom": {"row": example.l5_bottom, "x": example.x}}
    (full_length / "fullspine_annotations.json").write_text(json.dumps({"films": rows}))
    settings = [f"train.{part}.{field}=0" for part, field in (("stages", "epochs"), ("stages", "corner_epochs"),
                ("film_start", "epochs"), ("level_finder", "epochs"), ("corner_heatmaps", "epochs"))]
    settings += ["train.spine_locator.epochs=1", "model.spine_locator.thumbnail=[32, 96]"]
    recipe = configure("shipped", settings, finetune=True)
    without = tmp_path / "without.safetensors"
    train_model(recipe, samples, without, base=tiny_model, progress=False)
    assert load_model(without)[0].spine_locator is None  # no full-length films: no locator
    out = tmp_path / "with-locator.safetensors"
    train_model(recipe, samples, out, base=tiny_model, progress=False, full_length=full_length)
    base, _ = load_model(tiny_model)
    added, info = load_model(out)
    assert added.spine_locator is not None and base.spine_locator is None
    for name, tensor in base.state_dict().items():
        assert torch.equal(tensor, added.state_dict()[name]), name
    assert info["history"][-1]["stage"] == "spine locator"
    assert read_metadata(out)["sha256"] != read_metadata(tiny_model)["sha256"]
    # Fine-tuning by the recipe's own settings keeps a locator as it is, full-length films or not.
    kept = tmp_path / "kept.safetensors"
    train_model(configure("shipped", settings[:5], finetune=True), samples, kept, base=out, progress=False)
    for name, tensor in added.spine_locator.state_dict().items():
        assert torch.equal(tensor, load_model(kept)[0].spine_locator.state_dict()[name]), name


def _shipped_has_locator() -> bool:
    return load_model(shipped_model_path())[0].spine_locator is not None


@pytest.mark.skipif(not _shipped_has_locator(), reason="the shipped model has no spine locator")
def test_on_synthetic_full_length_films_the_answer_is_placed_or_flagged():
    """The generator's films are schematic (the locator never saw one): T1 is found within a level on most, and
    an answer whose T1 or L5 is a level or more off carries the review flag."""
    predictor = Predictor(device="cpu")
    t1_found = 0
    for seed in range(900, 906):
        film = make_full_length(seed, height=3000)
        prediction = predictor.predict(Radiograph(film.image.astype(np.float32)))
        level = (film.l5_bottom_row - film.t1_top_row) / 17
        t1 = abs(prediction.landmarks[0, :2, 1].mean() - film.t1_top_row) / level
        l5 = abs(prediction.landmarks[16, 2:, 1].mean() - film.l5_bottom_row) / level
        t1_found += abs(prediction.spine.t1_top - film.t1_top_row) < level
        assert (t1 < 1 and l5 < 1) or prediction.quality.review_needed, (seed, t1, l5, prediction.quality)
        assert prediction.window[3] - prediction.window[1] < 0.8 * film.height  # read from a crop, not whole
    assert t1_found >= 5


@pytest.mark.skipif(not FULLSPINE.exists(), reason="full-length films not at ../shared/fullspine")
@pytest.mark.parametrize("name", ["01-July-2019-4.jpg", "01-July-2019-27.jpg", "01-July-2019-54.jpg",
                                  "01-July-2019-81.jpg"])
def test_on_full_length_films_the_spine_lies_between_thorax_and_pelvis(name: str):
    truth = json.loads(annotations_path().read_text())["films"][name]
    prediction = Predictor(device="cpu").predict(FULLSPINE / name)
    level = (truth["l5_bottom"]["row"] - truth["t1_top"]["row"]) / 17
    top, bottom = prediction.landmarks[0, :2, 1].mean(), prediction.landmarks[16, 2:, 1].mean()
    pelvis = truth["pelvis_bottom"] or truth["height"]
    assert truth["thorax_top"] - 2 * level <= top and bottom <= pelvis, (top, bottom)
    assert abs(top - truth["t1_top"]["row"]) < 1.5 * level and abs(bottom - truth["l5_bottom"]["row"]) < 1.5 * level


def test_the_overlay_draws_the_crop_and_the_flags_reasons():
    from spinecascade.io.overlay import render_overlay
    from spinecascade.measurement.cobb import cobb_angles

    spine = make_spine(5, 400, 1000)
    film = np.full((1000, 400), 40, np.uint8)
    cobb = cobb_angles(spine.landmarks, 1000)
    plain = render_overlay(film, spine.landmarks, cobb)
    drawn = render_overlay(film, spine.landmarks, cobb, crop=(50, 100, 350, 900), review=["levels uncertain: " * 6])
    grey = (drawn[99:102, 60:340] == 200).all(axis=-1).any(axis=0)  # the crop's top edge
    assert grey.mean() > 0.8 and not (plain[99:102, 60:340] == 200).all(axis=-1).any()
    red = (drawn[..., 2] > 200) & (drawn[..., 0] < 120)
    assert red[-120:].sum() > 100 and red[-120:].sum() > (plain[-120:, :, 2] > 200).sum()
    assert red[-200:, -6:].sum() == 0  # long reasons wrap instead of running off the picture
