"""The AASCE-layout reader: row order, the consistent split, the CSV fallback, errors naming what is gone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spinecascade.io.dataset import SPLITS, AasceDataset, DatasetError, image_size
from spinecascade.io.labels import (
    read_landmarks_csv_normalised,
    write_angles_csv,
    write_landmarks_csv,
    write_mat,
)
from spinecascade.landmarks import SHAPE, normalise

AASCE = Path(__file__).resolve().parents[1].parent / "shared" / "aasce"
needs_aasce = pytest.mark.skipif(not AASCE.exists(), reason="AASCE data not at ../shared/aasce")


def make_dataset(root: Path, count: int, size: tuple[int, int] = (40, 100)) -> dict[str, np.ndarray]:
    """A tiny AASCE-layout folder: `count` JPEGs, .mat labels, filenames/landmarks/angles.csv."""
    images, labels = root / "data" / "training", root / "labels" / "training"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    rng = np.random.default_rng(count)
    items = {}
    for k in range(count):
        name = f"img {k:03d}.jpg"
        Image.new("L", size, 128).save(images / name)
        items[name] = rng.uniform(0, 1, size=SHAPE) * size
        write_mat(labels / f"{name}.mat", items[name])
    write_landmarks_csv(
        labels / "landmarks.csv", labels / "filenames.csv", {n: normalise(a, *size) for n, a in items.items()}
    )
    write_angles_csv(labels / "angles.csv", np.arange(count * 3, dtype=float).reshape(count, 3))
    return items


def test_reads_rows_in_filenames_order(tmp_path: Path) -> None:
    items = make_dataset(tmp_path, 3)
    dataset = AasceDataset(tmp_path)
    assert len(dataset) == 3 and dataset.names == list(items)
    sample = dataset["img 001.jpg"]
    assert sample is dataset[1]
    assert (sample.width, sample.height) == (40, 100)
    assert sample.image_path == tmp_path / "data" / "training" / "img 001.jpg"
    assert sample.label_path == tmp_path / "labels" / "training" / "img 001.jpg.mat"
    np.testing.assert_array_equal(sample.landmarks, items["img 001.jpg"])
    np.testing.assert_array_equal(sample.angles, [3, 4, 5])
    assert [s.name for s in dataset] == list(items)


def test_falls_back_on_landmarks_csv_without_mat(tmp_path: Path) -> None:
    items = make_dataset(tmp_path, 2)
    (tmp_path / "labels" / "training" / "img 000.jpg.mat").unlink()
    (tmp_path / "labels" / "training" / "angles.csv").unlink()
    sample = AasceDataset(tmp_path)[0]
    assert sample.label_path is None and sample.angles is None
    np.testing.assert_allclose(sample.landmarks, items["img 000.jpg"], rtol=0, atol=1e-9)


def test_consistent_split_keeps_last_50_for_test(tmp_path: Path) -> None:
    make_dataset(tmp_path, 53, size=(16, 16))
    dataset = AasceDataset(tmp_path)
    train, test = dataset.split("consistent-train"), dataset.split("consistent-test")
    assert [s.name for s in train + test] == dataset.names == [s.name for s in dataset.split("all")]
    assert (len(train), len(test)) == (3, 50)
    assert SPLITS == ("consistent-train", "consistent-test", "all", "consistent-fit", "consistent-val", "period-2016",
                      "period-2017")
    with pytest.raises(DatasetError, match="unknown split 'val'"):
        dataset.split("val")
    with pytest.raises(DatasetError, match="consistent-fit needs more than 100 images"):
        dataset.split("consistent-fit")


def test_validation_split_inside_the_consistent_training_part(tmp_path: Path) -> None:
    make_dataset(tmp_path, 103, size=(16, 16))
    dataset = AasceDataset(tmp_path)
    fit, val = dataset.split("consistent-fit"), dataset.split("consistent-val")
    assert (len(fit), len(val)) == (3, 50)
    assert [s.name for s in fit + val] == [s.name for s in dataset.split("consistent-train")]


def test_period_split_goes_by_the_year_in_the_name(tmp_path: Path) -> None:
    make_dataset(tmp_path, 3, size=(16, 16))
    labels = tmp_path / "labels" / "training"
    names = ["sunhl-1th-02-Jan-2017-162 A AP.jpg", "sunhl-1th-20-Jul-2016-coronal1.jpg",
             "sunhl-1th-07-Dec-2016-110 B AP.jpg"]
    for k, name in enumerate(names):
        (tmp_path / "data" / "training" / f"img {k:03d}.jpg").rename(tmp_path / "data" / "training" / name)
        (labels / f"img {k:03d}.jpg.mat").rename(labels / f"{name}.mat")
    (labels / "filenames.csv").write_text("".join(f"{n}\n" for n in names))
    dataset = AasceDataset(tmp_path)
    assert [s.name for s in dataset.split("period-2016")] == names[1:]
    assert [s.name for s in dataset.split("period-2017")] == names[:1]
    (labels / "filenames.csv").write_text("".join(f"{n}\n" for n in [*names, "img 003.jpg"]))
    Image.new("L", (16, 16), 128).save(tmp_path / "data" / "training" / "img 003.jpg")
    write_mat(labels / "img 003.jpg.mat", np.ones(SHAPE))
    (labels / "angles.csv").unlink()
    with pytest.raises(DatasetError, match="'img 003.jpg' has none"):
        AasceDataset(tmp_path).split("period-2016")


def test_consistent_split_needs_more_than_50_images(tmp_path: Path) -> None:
    make_dataset(tmp_path, 2)
    with pytest.raises(DatasetError, match="needs more than 50 images"):
        AasceDataset(tmp_path).split("consistent-train")


def test_not_an_aasce_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"not an AASCE-layout dataset: missing .*data/training"):
        AasceDataset(tmp_path)
    make_dataset(tmp_path / "x", 1)
    (tmp_path / "x" / "labels" / "training" / "filenames.csv").unlink()
    with pytest.raises(DatasetError, match="missing .*filenames.csv"):
        AasceDataset(tmp_path / "x")


def test_missing_image_and_missing_label(tmp_path: Path) -> None:
    make_dataset(tmp_path, 2)
    (tmp_path / "data" / "training" / "img 001.jpg").unlink()
    with pytest.raises(DatasetError, match="img 001.jpg: image listed in filenames.csv is missing"):
        AasceDataset(tmp_path)
    make_dataset(tmp_path / "x", 1)
    (tmp_path / "x" / "labels" / "training" / "img 000.jpg.mat").unlink()
    (tmp_path / "x" / "labels" / "training" / "landmarks.csv").unlink()
    with pytest.raises(DatasetError, match="no img 000.jpg.mat label and no landmarks.csv"):
        AasceDataset(tmp_path / "x")


def test_image_size_reads_the_header(tmp_path: Path) -> None:
    Image.new("L", (31, 57)).save(tmp_path / "a.png")
    assert image_size(tmp_path / "a.png") == (31, 57)


@needs_aasce
def test_real_dataset() -> None:
    dataset = AasceDataset(AASCE)
    assert len(dataset) == 481
    train, test = dataset.split("consistent-train"), dataset.split("consistent-test")
    assert (len(train), len(test)) == (431, 50)
    assert train[0].name == "sunhl-1th-02-Jan-2017-162 A AP.jpg"
    assert test[-1].name == "sunhl-1th-30-Dec-2016-161 A AP.jpg"
    assert all(s.label_path is not None and s.angles is not None for s in dataset)
    first = dataset[0]
    assert (first.width, first.height) == (755, 2125)
    np.testing.assert_allclose(first.angles, [41.139, 14.63, 40.147])
    folder = AASCE / "labels" / "training"
    csv = read_landmarks_csv_normalised(folder / "landmarks.csv", folder / "filenames.csv")
    # landmarks.csv keeps 5 significant digits; one point lies below its image, at y / height = 1.0245.
    for sample in dataset:
        np.testing.assert_allclose(
            csv[sample.name], normalise(sample.landmarks, sample.width, sample.height), rtol=1e-5, atol=1e-5
        )
