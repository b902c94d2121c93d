import numpy as np
import pytest

from spinecascade.io.dataset import AasceDataset
from spinecascade.landmarks import validate
from spinecascade.measurement.cobb import cobb_angles
from spinecascade.measurement.label_check import check_landmarks
from spinecascade.synthetic import make_spine, write_aasce_layout


def test_same_seed_same_image_and_landmarks():
    a, b = make_spine(7), make_spine(7)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.landmarks, b.landmarks)
    assert not np.array_equal(make_spine(8).image, a.image)


@pytest.mark.parametrize(("curve", "cobb"), [("C", 20.0), ("C", 40.0), ("S", 30.0)])
def test_chosen_curve_gives_about_the_chosen_cobb_angle(curve, cobb):
    spine = make_spine(3, curve=curve, cobb_degrees=cobb)
    result = cobb_angles(spine.landmarks, spine.image.shape[0])
    assert result.pt.degrees == pytest.approx(cobb, abs=6)
    assert result.s_shaped == (curve == "S")


def test_landmarks_are_valid_and_pass_the_label_checker():
    for seed in range(20):
        spine = make_spine(seed)
        h, w = spine.image.shape
        validate(spine.landmarks, w, h)
        assert check_landmarks(spine.landmarks, w, h) == [], seed


def test_appearance_varies_with_the_parameters():
    plain = make_spine(1, contrast=0.3, noise=0.0, haze=0.0, ribs=False).image.astype(float)
    busy = make_spine(1, contrast=0.7, noise=0.05, haze=1.0, ribs=True).image.astype(float)
    assert busy.std() > plain.std()
    with pytest.raises(ValueError, match="curve"):
        make_spine(1, curve="Z")


def test_aasce_layout_reads_back_as_a_dataset(tmp_path):
    names = write_aasce_layout(tmp_path, 4, seed=10, width=96, height=240)
    data = AasceDataset(tmp_path)
    assert data.names == names
    np.testing.assert_allclose(data[0].landmarks, make_spine(10, 96, 240).landmarks)
    np.testing.assert_allclose(data[1].angles, cobb_angles(data[1].landmarks, 240).as_array(), atol=1e-9)
