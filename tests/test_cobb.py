import json

import numpy as np
import pytest
from conftest import AASCE, needs_aasce

from spinecascade.cli.main import main
from spinecascade.measurement.cobb import cobb_angles


def stacked_spine(tilts_deg, width=40.0, height=30.0, gap=10.0, x0=200.0, y0=100.0) -> np.ndarray:
    """17 rectangles stacked down the image, vertebra v tilted by tilts_deg[v]."""
    out = []
    for v, tilt in enumerate(np.radians(tilts_deg)):
        c = np.array([x0, y0 + v * (height + gap)])
        local = np.array([[-width / 2, -height / 2], [width / 2, -height / 2], [-width / 2, height / 2],
                          [width / 2, height / 2]])
        rot = np.array([[np.cos(tilt), -np.sin(tilt)], [np.sin(tilt), np.cos(tilt)]])
        out.append(c + local @ rot.T)
    return np.array(out)


def test_straight_spine_has_no_angle():
    r = cobb_angles(stacked_spine(np.zeros(17)), 1000)
    assert r.as_array().tolist() == [0.0, 0.0, 0.0]


def test_rotated_straight_spine_has_no_angle():
    lm = stacked_spine(np.zeros(17))
    theta = np.radians(12)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    r = cobb_angles((lm - 500) @ rot.T + 500, 1000)
    np.testing.assert_allclose(r.as_array(), 0, atol=1e-5)
    assert r.degenerate == ()


def test_single_tilted_vertebra():
    tilts = np.zeros(17)
    tilts[8] = 15
    r = cobb_angles(stacked_spine(tilts), 1000)
    assert r.pt.degrees == pytest.approx(15)
    assert 8 in (r.pt.upper, r.pt.lower)


def test_symmetric_s_curve():
    tilts = 20 * np.sin(np.linspace(0, 2 * np.pi, 17))
    lm = stacked_spine(tilts)
    lm[:, :, 0] += (60 * np.sin(np.linspace(0, 2 * np.pi, 17)))[:, None]
    r = cobb_angles(lm, 1000)
    assert r.s_shaped
    expected = tilts.max() - tilts.min()
    assert r.pt.degrees == pytest.approx(expected)
    assert r.pt.end_vertebrae == ("T5", "L1")


def test_degenerate_input_is_reported_not_raised():
    lm = stacked_spine(np.zeros(17))
    lm[4] = lm[4, 0]  # every corner of T5 at one point
    r = cobb_angles(lm, 1000)
    assert any("T5" in note for note in r.degenerate)
    assert np.isfinite(r.as_array()).all()


def test_vertical_line_through_first_and_last_midpoint_is_reported():
    lm = stacked_spine(np.zeros(17))
    lm[8, :, 0] += 30  # first and last endplate midpoints stay vertically aligned
    r = cobb_angles(lm, 1000)
    assert any("vertically aligned" in note for note in r.degenerate)
    assert r.s_shaped


@needs_aasce
def test_reproduces_the_official_angles_of_all_481_training_labels():
    from spinecascade.io.dataset import AasceDataset

    data = AasceDataset(AASCE)
    assert len(data) == 481
    worst = max(np.abs(cobb_angles(s.landmarks, s.height).as_array() - s.angles).max() for s in data)
    assert worst < 0.01


@needs_aasce
def test_cli_prints_the_official_angles(capsys):
    from spinecascade.io.dataset import AasceDataset

    sample = AasceDataset(AASCE)[0]
    assert main(["cobb", str(sample.label_path), "--image", str(sample.image_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose([out[k]["degrees"] for k in ("PT", "MT", "TL")], sample.angles, atol=0.01)
    assert main(["cobb", str(sample.label_path), "--height", str(sample.height)]) == 0
    printed = [float(line.split()[1]) for line in capsys.readouterr().out.splitlines()[:3]]
    np.testing.assert_allclose(printed, sample.angles, atol=0.01)


def test_cli_needs_a_height_for_a_mat_file(tmp_path, capsys):
    from spinecascade.io.labels import write_mat

    write_mat(tmp_path / "a.mat", stacked_spine(np.zeros(17)))
    assert main(["cobb", str(tmp_path / "a.mat")]) == 2
    err = capsys.readouterr().err
    assert "a.mat" in err and "--height" in err and err.count("\n") == 1
