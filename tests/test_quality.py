"""The review flag: what it reads off an answer, and that the shipped model's answers on films it cannot read
carry it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinecascade.cli.main import main
from spinecascade.io.dataset import Sample
from spinecascade.io.images import Radiograph, save_image
from spinecascade.landmarks import SpineExtent
from spinecascade.measurement.cobb import cobb_angles
from spinecascade.measurement.quality import (
    FILM_UNCERTAINTY_LIMIT,
    POINT_UNCERTAINTY_LIMIT,
    REASON_KINDS,
    SPINE_HIGH_LIMIT,
    assess,
    median_vertebra_height,
    reason_kind,
)
from spinecascade.method.evaluation import review_flag_summary
from spinecascade.method.prediction import Prediction, Predictor
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


def test_every_reason_the_flag_gives_is_of_exactly_one_kind():
    """Evaluations count what each kind of reason catches; each text the flag can give names its kind."""
    lm = SPINE.landmarks.reshape(17, 4, 2)
    t1_top, l5_bottom = lm[0, :2, 1].mean(), lm[-1, 2:, 1].mean()
    level = (l5_bottom - t1_top) / 17
    found = SpineExtent(t1_top, l5_bottom, 200.0, 0.2, 0.2)
    height = median_vertebra_height(SPINE.landmarks)
    uncertain_points = np.full(68, 0.1 * height)
    uncertain_points[7] = height
    answers = [
        assess(SPINE.landmarks, None, 400, 1000, spine=SpineExtent(500.0, 510.0, 200.0, 0.2, 0.2)),
        assess(SPINE.landmarks, None, 400, 1000, spine=SpineExtent(t1_top - 3 * level, l5_bottom, 200.0, 0.2, 0.2)),
        assess(SPINE.landmarks, None, 400, 1000, spine=SpineExtent(-level, l5_bottom, 200.0, 0.2, 0.2)),
        assess(SPINE.landmarks, None, 400, 1000, spine=SpineExtent(t1_top, 1000 + level, 200.0, 0.2, 0.2)),
        assess(SPINE.landmarks, None, 400, 1000, spine=SpineExtent(t1_top, l5_bottom, 200.0, 1.5, 1.5),
               rows_read=(0, 990)),
        assess(SPINE.landmarks, None, 400, 1000, spine=found, rows_read=(t1_top, l5_bottom + 3 * level)),
        assess(SPINE.landmarks[::-1], None, 400, 1000),
        assess(SPINE.landmarks, np.full(68, height), 400, 1000),
        assess(SPINE.landmarks, uncertain_points, 400, 1000),
    ]
    kinds = [reason_kind(reason) for answer in answers for reason in answer.reasons]
    assert set(kinds) == set(REASON_KINDS), kinds
    with pytest.raises(ValueError, match="not one of the review flag's reasons"):
        reason_kind("vertebrae renamed by hand")


def test_an_evaluation_counts_what_each_kind_of_reason_catches():
    """Four answers against the same labels: right and sure; right with one uncertain point; a level too high and
    sitting high in its rows; the same with its mirror disagreeing as well."""
    lm = SPINE.landmarks.reshape(17, 4, 2)
    level = (lm[-1, 2:, 1].mean() - lm[0, :2, 1].mean()) / 17
    height = median_vertebra_height(SPINE.landmarks)
    sure, one_point = np.full(68, 0.1 * height), np.full(68, 0.1 * height)
    one_point[7] = height
    high = SPINE.landmarks - np.array([0.0, level])
    rows = (lm[0, :2, 1].mean() - 0.3 * level, lm[-1, 2:, 1].mean() + 2 * level)
    answers = [(SPINE.landmarks, sure, None), (SPINE.landmarks, one_point, None), (high, sure, rows),
               (high, np.full(68, height), rows)]
    preds = [Prediction(landmarks, landmarks.mean(axis=1), cobb_angles(landmarks, 1000), uncertainty,
                        assess(landmarks, uncertainty, 400, 1000, rows_read=read), 400, 1000)
             for landmarks, uncertainty, read in answers]
    truth = Sample("spine", Path("spine.jpg"), None, SPINE.landmarks, None, 400, 1000)
    assert review_flag_summary(preds, [truth] * 4) == {
        "level_misses": 2,
        "review_flag": {"flagged": 3, "level_misses_flagged": 2, "other_films_flagged": 1, "by_reason": {
            "film_uncertain": {"level_misses": 1, "level_misses_alone": 0, "others": 0, "others_alone": 0},
            "points_uncertain": {"level_misses": 0, "level_misses_alone": 0, "others": 1, "others_alone": 1},
            "sits_high": {"level_misses": 2, "level_misses_alone": 1, "others": 0, "others_alone": 0}}}}


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
