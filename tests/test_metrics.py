import numpy as np
import pytest

from spinecascade.measurement.metrics import (
    circular_abs_error,
    evaluate,
    normalised_mse,
    point_errors,
    smape,
    vertical_miss_levels,
)
from spinecascade.synthetic import make_spine


def test_normalised_mse_is_eq_13():
    truth = make_spine(1).landmarks
    pred = truth.copy()
    pred[..., 0] += 2.56  # 1 % of the width
    pred[..., 1] += 12.8  # 2 % of the height
    assert normalised_mse(pred, truth, 256, 640) == pytest.approx(0.01**2 + 0.02**2)
    # The same measure over the 17 centres scores step 1 alone.
    assert normalised_mse(pred.mean(axis=1), truth.mean(axis=1), 256, 640) == pytest.approx(0.01**2 + 0.02**2)
    with pytest.raises(ValueError, match="68 and 17"):
        normalised_mse(pred, truth.mean(axis=1), 256, 640)


def test_point_errors_in_pixels_and_mm():
    truth = make_spine(1).landmarks
    pred = truth + [3.0, 4.0]
    np.testing.assert_allclose(point_errors(pred, truth), 5.0)
    np.testing.assert_allclose(point_errors(pred, truth, (0.1, 0.2)), np.hypot(0.3, 0.8))


def test_vertical_miss_counts_levels():
    truth = make_spine(1).landmarks
    assert vertical_miss_levels(truth, truth) == 0.0
    level = (truth[-1].mean(axis=0)[1] - truth[0].mean(axis=0)[1]) / 16
    below = truth + [0.0, level]  # every vertebra where the next one down is, about
    assert vertical_miss_levels(below, truth) == pytest.approx(1.0)
    assert vertical_miss_levels(truth - [0.0, level / 2], truth) == pytest.approx(-0.5)


def test_smape_as_the_challenge_defines_it():
    a = np.array([[10.0, 20.0, 30.0], [0.0, 0.0, 0.0]])
    b = np.array([[12.0, 18.0, 30.0], [0.0, 0.0, 0.0]])
    assert smape(a, b) == pytest.approx(100 * (4 / 120 + 0) / 2)


def test_circular_error_wraps_at_180_degrees():
    np.testing.assert_allclose(circular_abs_error([179.0, 10.0], [1.0, 30.0]), [2.0, 20.0])


def test_evaluate_returns_every_metric():
    spines = [make_spine(i) for i in range(3)]
    truths = [s.landmarks for s in spines]
    preds = [t + 1.0 for t in truths]
    angles = np.array([[10.0, 5.0, 3.0]] * 3)
    result = evaluate(preds, truths, [(256, 640)] * 3, angles + 1, angles, spacings=[(0.1, 0.1)] * 3)
    d = result.as_dict()
    assert d["n_images"] == 3
    assert d["mean_px_error"] == pytest.approx(np.sqrt(2))
    assert d["mean_mm_error"] == pytest.approx(0.1 * np.sqrt(2))
    assert d["cobb_mae"] == {"PT": 1.0, "MT": 1.0, "TL": 1.0}
    assert d["smape"] == pytest.approx(100 * 3 / 39)


def test_evaluate_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="equal"):
        evaluate([], [], [])
