import numpy as np
import pytest

from spinecascade.errors import LabelError
from spinecascade.landmarks import (
    N_POINTS,
    as_landmarks,
    centres,
    denormalise,
    flip_horizontal,
    move_levels,
    normalise,
    point_index,
    point_names,
    validate,
)
from spinecascade.synthetic import make_spine


def spine() -> np.ndarray:
    return make_spine(3).landmarks


def test_names_follow_the_aasce_order():
    names = point_names()
    assert len(names) == N_POINTS
    assert names[:4] == ["T1 top-left", "T1 top-right", "T1 bottom-left", "T1 bottom-right"]
    assert names[-1] == "L5 bottom-right"
    assert point_index("L3 top-left") == names.index("L3 top-left") == (12 + 2) * 4


def test_unknown_name_is_a_label_error():
    with pytest.raises(LabelError, match="L6"):
        point_index("L6 top-left")


def test_shapes_are_coerced_and_centres_are_corner_means():
    lm = spine()
    assert as_landmarks(lm.reshape(68, 2)).shape == (17, 4, 2)
    np.testing.assert_allclose(centres(lm), lm.mean(axis=1))
    with pytest.raises(LabelError, match="expected 68 points"):
        as_landmarks(np.zeros((67, 2)))


def test_normalise_round_trip():
    lm = spine()
    np.testing.assert_allclose(denormalise(normalise(lm, 256, 640), 256, 640), lm, rtol=0, atol=1e-12)


def test_flip_mirrors_x_swaps_left_right_and_is_an_involution():
    lm = spine()
    flipped = flip_horizontal(lm, 256)
    np.testing.assert_allclose(flipped[:, 0, 0], 255 - lm[:, 1, 0])
    assert np.array_equal(flipped[:, 2, 1], lm[:, 3, 1])
    twice = flip_horizontal(flipped, 256)
    assert np.array_equal(twice[..., 1], lm[..., 1])
    # x: (w - 1) - ((w - 1) - x) is x up to the last bit of w in float64 (half a ulp of 255 is 2.8e-14).
    np.testing.assert_allclose(twice[..., 0], lm[..., 0], rtol=0, atol=1e-12)
    grid = np.arange(68 * 2, dtype=float).reshape(17, 4, 2)
    assert np.array_equal(flip_horizontal(flip_horizontal(grid, 256), 256), grid)


@pytest.mark.parametrize(
    ("index", "value", "match"),
    [(5, np.nan, "point 5 \\(T2 top-right\\) is not finite"), (67, 1e6, "point 67 \\(L5 bottom-right\\).*outside")],
)
def test_validation_names_the_bad_point(index, value, match):
    lm = spine().reshape(68, 2)
    lm[index, 0] = value
    with pytest.raises(LabelError, match=match):
        validate(lm, 256, 640, source="x.json")


def test_moving_levels_renames_the_chain_and_extends_its_open_end():
    truth = spine()
    mid = centres(truth)
    above_t1 = truth[0] + (mid[0] - mid[1])  # the vertebra above T1
    too_high = np.concatenate([above_t1[None], truth[:-1]])  # every name on the vertebra above its own
    moved, added = move_levels(too_high, 1)
    np.testing.assert_allclose(moved[:16], truth[:16])
    level = np.linalg.norm(mid[16] - mid[15])
    assert np.linalg.norm(centres(moved)[16] - mid[16]) < 0.2 * level
    assert added == list(range(64, 68))
    back, added_back = move_levels(moved, -1)
    np.testing.assert_allclose(back[1:], too_high[1:])
    np.testing.assert_allclose(back[0], above_t1)
    assert added_back == [0, 1, 2, 3]
    two_up, added_two = move_levels(truth, -2)
    np.testing.assert_allclose(two_up[2:], truth[:15])
    assert added_two == list(range(8))
    assert centres(two_up)[0, 1] < centres(two_up)[1, 1] < mid[0, 1]


@pytest.mark.parametrize("levels", [17, -17, 1.5])
def test_moving_levels_needs_a_whole_number_within_the_chain(levels):
    with pytest.raises(LabelError, match="whole number"):
        move_levels(spine(), levels)
