"""The label checker: a clean spine passes, each corruption trips its own rule, repairs are safe; the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spinecascade.cli.main import main
from spinecascade.errors import LabelError
from spinecascade.io.dataset import AasceDataset
from spinecascade.io.labels import write_landmarks_csv, write_mat
from spinecascade.landmarks import N_VERTEBRAE, normalise
from spinecascade.measurement.label_check import RULES, check_dataset, check_landmarks, repair_landmarks

AASCE = Path(__file__).resolve().parents[1].parent / "shared" / "aasce"
needs_aasce = pytest.mark.skipif(not AASCE.exists(), reason="AASCE data not at ../shared/aasce")
WIDTH, HEIGHT = 600, 2000


def clean_spine() -> np.ndarray:
    """17 upright rectangles stacked down a gentle curve, growing from T1 to L5 like real vertebrae."""
    heights = np.linspace(50, 80, N_VERTEBRAE)
    widths = np.linspace(90, 140, N_VERTEBRAE)
    tops = 100 + np.concatenate([[0], np.cumsum(heights + 20)[:-1]])
    centres_x = 300 + 40 * np.sin(np.pi * np.arange(N_VERTEBRAE) / 16)
    spine = np.empty((N_VERTEBRAE, 4, 2))
    for i, (cx, top, w, h) in enumerate(zip(centres_x, tops, widths, heights, strict=True)):
        spine[i] = [[cx - w / 2, top], [cx + w / 2, top], [cx - w / 2, top + h], [cx + w / 2, top + h]]
    return spine


def rules(spine: np.ndarray, width: float | None = WIDTH, height: float | None = HEIGHT) -> set[str]:
    return {f.rule for f in check_landmarks(spine, width, height)}


def test_clean_spine_passes_and_needs_no_repair() -> None:
    spine = clean_spine()
    assert check_landmarks(spine, WIDTH, HEIGHT) == []
    np.testing.assert_array_equal(repair_landmarks(spine, WIDTH, HEIGHT), spine)


def _swap_left_right(s: np.ndarray) -> None:
    s[4] = s[4][[1, 0, 3, 2]]


def _swap_top_bottom(s: np.ndarray) -> None:
    s[4] = s[4][[2, 3, 0, 1]]


def _swap_vertebrae(s: np.ndarray) -> None:
    s[[2, 3]] = s[[3, 2]]


def _first_stored_last(s: np.ndarray) -> None:
    s[:] = np.roll(s, -1, axis=0)


@pytest.mark.parametrize(
    ("corrupt", "rule"),
    [
        (_swap_left_right, "left-right"),
        (_swap_top_bottom, "top-bottom"),
        (_swap_vertebrae, "vertebra-order"),
        (_first_stored_last, "vertebra-order"),
    ],
)
def test_repairable_corruptions(corrupt, rule: str) -> None:
    spine = clean_spine()
    corrupt(spine)
    assert rules(spine) == {rule}
    np.testing.assert_array_equal(repair_landmarks(spine, WIDTH, HEIGHT), clean_spine())


def _move_l5_to_top(s: np.ndarray) -> None:
    s[16] += [0, 10 - s[16, 0, 1]]


def _duplicate(s: np.ndarray) -> None:
    s[16] = s[15] + 2


def _collapse(s: np.ndarray) -> None:
    s[7, :2, 1] = s[7, 2:, 1] - 2


def _shrink_width(s: np.ndarray) -> None:
    s[7, :, 0] = s[7, :, 0].mean() + (s[7, :, 0] - s[7, :, 0].mean()) * 0.3


def _grow(s: np.ndarray) -> None:
    s[0, :2, 1] -= 140


def _overlap(s: np.ndarray) -> None:
    s[9, :, 1] -= 45


def _one_corner_misplaced(s: np.ndarray) -> None:
    s[15, 3] = s[15, 2] + [-3, 1]


def _outside(s: np.ndarray) -> None:
    s[0, 0] = [-100, s[0, 0, 1]]


@pytest.mark.parametrize(
    ("corrupt", "rule", "vertebra"),
    [
        (_move_l5_to_top, "vertebra-order", "L5"),
        (_duplicate, "duplicate", "L5"),
        (_collapse, "size", "T8"),
        (_shrink_width, "size", "T8"),
        (_grow, "size", "T1"),
        (_overlap, "overlap", "T10"),
        (_one_corner_misplaced, "left-right", "L4"),
        (_outside, "outside", "T1"),
    ],
)
def test_each_rule_is_triggered_by_its_corruption(corrupt, rule: str, vertebra: str) -> None:
    spine = clean_spine()
    corrupt(spine)
    findings = check_landmarks(spine, WIDTH, HEIGHT)
    assert {f.rule for f in findings} == {rule}
    assert {f.vertebra for f in findings} == {vertebra}
    assert all(f.rule in RULES and vertebra in f.message for f in findings)
    if rule not in ("vertebra-order", "outside"):
        assert repair_landmarks(spine, WIDTH, HEIGHT) is None


def test_outside_needs_the_image_size() -> None:
    spine = clean_spine()
    _outside(spine)
    assert rules(spine, None, None) == set()


def test_l5_message_says_where_it_is() -> None:
    spine = clean_spine()
    _first_stored_last(spine)
    (finding,) = check_landmarks(spine, WIDTH, HEIGHT)
    assert finding.vertebra == "L5" and "above T1" in finding.message


def test_non_finite_points_are_an_error() -> None:
    spine = clean_spine()
    spine[3, 1, 0] = np.nan
    with pytest.raises(LabelError, match="T4 top-right"):
        check_landmarks(spine, WIDTH, HEIGHT)


@needs_aasce
def test_real_labels_flag_a_few_dozen() -> None:
    dataset = AasceDataset(AASCE)
    flagged = check_dataset(dataset)
    assert 20 <= len(flagged) <= 40
    assert {f.rule for f in flagged["sunhl-1th-10-Jan-2017-237 B AP.jpg"]} == {"vertebra-order"}
    assert "sunhl-1th-02-Jan-2017-162 A AP.jpg" not in flagged
    for name in flagged:
        sample = dataset[name]
        repaired = repair_landmarks(sample.landmarks, sample.width, sample.height)
        assert repaired is None or check_landmarks(repaired, sample.width, sample.height) == []


# ---------------------------------------------------------------- CLI


def make_dataset(root: Path) -> Path:
    """AASCE layout with one clean label, one stored in rotated order (repairable) and one duplicate."""
    images, labels = root / "data" / "training", root / "labels" / "training"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    items = {"clean.jpg": clean_spine(), "rotated.jpg": clean_spine(), "dup.jpg": clean_spine()}
    _first_stored_last(items["rotated.jpg"])
    _duplicate(items["dup.jpg"])
    for name, spine in items.items():
        Image.new("L", (WIDTH, HEIGHT)).save(images / name)
        write_mat(labels / f"{name}.mat", spine)
    normalised = {n: normalise(s, WIDTH, HEIGHT) for n, s in items.items()}
    write_landmarks_csv(labels / "landmarks.csv", labels / "filenames.csv", normalised)
    return root


def test_cli_check_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_dataset(tmp_path)
    assert main(["check-labels", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "2 of 3 images break the expected structure"
    assert lines[0].startswith("rotated.jpg: vertebra-order: L5 is out of order")
    assert lines[1].startswith("dup.jpg: duplicate: L5 nearly coincides with L4")


def test_cli_check_dataset_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_dataset(tmp_path)
    assert main(["check-labels", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["checked"], report["flagged"]) == (3, 2)
    assert report["images"]["rotated.jpg"]["repairable"] is True
    assert report["images"]["dup.jpg"]["repairable"] is False
    assert report["images"]["dup.jpg"]["findings"][0]["rule"] == "duplicate"


def test_cli_check_one_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spine = clean_spine()
    _outside(spine)
    write_mat(tmp_path / "a.jpg.mat", spine)
    assert main(["check-labels", str(tmp_path / "a.jpg.mat")]) == 0
    assert capsys.readouterr().out == "0 of 1 images break the expected structure\n"
    assert main(["check-labels", str(tmp_path / "a.jpg.mat"), "--size", str(WIDTH), str(HEIGHT)]) == 0
    assert capsys.readouterr().out.startswith("a.jpg.mat: outside: T1 top-left at (-100, 100)")


def test_cli_check_not_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-labels", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("spinecascade check-labels: error: ")
    assert "not an AASCE-layout" in captured.err
