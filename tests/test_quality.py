"""The review flag: what it reads off an answer, and that the shipped model's answers on films it cannot read
carry it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinecascade.cli.main import main
from spinecascade.io.images import Radiograph, save_image
from spinecascade.measurement.quality import (
    FILM_UNCERTAINTY_LIMIT,
    POINT_UNCERTAINTY_LIMIT,
    SPINE_HIGH_LIMIT,
    assess,
    median_vertebra_height,
)
from spinecascade.method.prediction import Predictor
from spinecascade.synthetic import make_full_length, make_spine

SPINE = make_spine(6, 400, 1000)  # a spine about as far from the top as from the bottom


def test_a_plausible_spine_the_model_is_sure_of_needs_no_review():
    quality = assess(SPINE.landmarks, np.full(68, 1.0), 400, 1000)
    assert (quality.review_needed, quality.reasons, quality.flagged_landmarks) == (False, [], [])


def test_uncertainty_above_a_share_of_a_vertebra_flags_the_film_and_its_points():
    height = median_vertebra_height(SPINE.landmarks)
    uncertainty = np.full(68, 0.1 * height)
    uncertainty[[3, 40]] = 1.01 * POINT_UNCERTAINTY_LIMIT * height
    quality = assess(SPINE.landmarks, uncertainty, 400, 1000)
    assert quality.review_needed and quality.flagged_landmarks == [3, 40]
    assert quality.reasons == ["2 of 68 landmarks uncertain (more than 0.5 of a vertebra's height)"]
    quality = assess(SPINE.landmarks, np.full(68, 1.01 * FILM_UNCERTAINTY_LIMIT * height), 400, 1000)
    assert quality.review_needed and quality.flagged_landmarks == []
    assert quality.reasons[0].startswith("landmark uncertainty") and "limit" in quality.reasons[0]


def test_landmarks_that_are_no_spine_are_flagged_with_the_rule_they_break():
    upside_down = SPINE.landmarks[::-1]
    quality = assess(upside_down, None, 400, 1000)
    assert quality.review_needed
    assert any("vertebra centres must run top to bottom" in r for r in quality.reasons), quality.reasons
    outside = SPINE.landmarks + np.array([0.0, 600.0])
    assert any("inside the image" in r for r in assess(outside, None, 400, 1000).reasons)


def test_a_spine_high_in_the_rows_read_has_uncertain_levels():
    """Much more film below L5 than above T1 (in the answer's levels): the answer is often a level too high."""
    lm = SPINE.landmarks.reshape(17, 4, 2)
    t1_top, l5_bottom = lm[0, :2, 1].mean(), lm[-1, 2:, 1].mean()
    level = (l5_bottom - t1_top) / 17
    centred = (t1_top - 0.6 * level, l5_bottom + 1.2 * level)
    assert assess(SPINE.landmarks, None, 400, 1000, rows_read=centred).reasons == []
    high = (t1_top - 0.3 * level, l5_bottom + (0.3 + SPINE_HIGH_LIMIT + 0.1) * level)
    quality = assess(SPINE.landmarks, None, 400, 1000, rows_read=high)
    assert quality.review_needed and quality.reasons == [
        "levels uncertain: the spine sits high in the film, 1.6 levels of film below L5 and 0.3 above T1; on such "
        "films the answer is often a level too high (L5 on L4)"]
    assert assess(SPINE.landmarks, None, 400, 1000, rows_read=(high[0], high[1] - 0.2 * level)).reasons == []
    upside_down = assess(SPINE.landmarks[::-1], None, 400, 1000, rows_read=high).reasons
    assert upside_down and not any("sits high" in r for r in upside_down)


@pytest.mark.parametrize("variant", ["blank", "limb", "cut-off", "lateral", "upside-down"])
def test_the_shipped_model_flags_films_it_cannot_read(variant: str):
    film = make_full_length(11, height=2400, variant=variant)
    prediction = Predictor(device="cpu").predict(Radiograph(film.image.astype(np.float32)))
    assert prediction.quality.review_needed, (variant, prediction.quality)
    assert prediction.to_label().extra["quality"]["review_needed"] is True


def test_predict_prints_the_flag_for_each_film(tmp_path: Path, capsys):
    blank = tmp_path / "blank.png"
    save_image(blank, make_full_length(3, height=1500, variant="blank").image)
    assert main(["predict", str(blank), "--out", str(tmp_path / "out")]) == 0
    assert "REVIEW NEEDED: " in capsys.readouterr().out
