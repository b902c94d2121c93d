"""Reader for datasets in the AASCE layout, with the literature's "consistent" train/test split.

    ROOT/data/<folder>/<name>.jpg
    ROOT/labels/<folder>/<name>.jpg.mat
    ROOT/labels/<folder>/{filenames,landmarks,angles}.csv

filenames.csv fixes the row order, and with it the split, so results stay comparable with published ones.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from spinecascade.errors import ImageError, LabelError
from spinecascade.io.images import load_image
from spinecascade.io.labels import (
    read_angles_csv,
    read_filenames_csv,
    read_landmarks_csv_normalised,
    read_mat,
)
from spinecascade.landmarks import denormalise

log = logging.getLogger(__name__)

SPLITS = ("consistent-train", "consistent-test", "all", "consistent-fit", "consistent-val", "period-2016",
          "period-2017")
# The consistent split: the last 50 rows of filenames.csv are the test set, the rest (431 in AASCE) train.
# Choices are made without the test set: the last 50 training rows validate ("consistent-val") what is trained
# on the rows before them ("consistent-fit", 381 in AASCE).
CONSISTENT_TEST_SIZE = 50
# The acquisition-period split: AASCE names carry the date of the film ("sunhl-1th-02-Jan-2017-162 A AP.jpg");
# the 248 films of 2016 and the 233 of 2017 each validate what is trained on the other.
_FILM_YEAR = re.compile(r"-[A-Z][a-z]{2}-(\d{4})-")


class DatasetError(LabelError):
    """A folder is not in the AASCE layout, or its files disagree with each other."""


@dataclass
class Sample:
    """One image of the dataset with its pixel landmarks and, when known, the official Cobb angles."""

    name: str
    image_path: Path
    label_path: Path | None
    landmarks: np.ndarray
    angles: np.ndarray | None
    width: int
    height: int


class AasceDataset:
    """All samples of one folder ("training", ...), loaded eagerly: 481 labels take well under a second."""

    def __init__(self, root: str | Path, folder: str = "training") -> None:
        self.root = Path(root)
        self.folder = folder
        self.image_dir = self.root / "data" / folder
        self.label_dir = self.root / "labels" / folder
        filenames = self.label_dir / "filenames.csv"
        missing = [str(p) for p in (self.image_dir, self.label_dir, filenames) if not p.exists()]
        if missing:
            raise DatasetError(f"{self.root} is not an AASCE-layout dataset: missing {', '.join(missing)}")
        names = read_filenames_csv(filenames)
        if not names:
            raise DatasetError(f"{filenames}: lists no images")
        angles = self._angles(len(names))
        csv_landmarks: dict[str, np.ndarray] | None = None
        self.samples: list[Sample] = []
        for row, name in enumerate(names):
            image_path = self.image_dir / name
            if not image_path.is_file():
                raise DatasetError(f"{image_path}: image listed in filenames.csv is missing")
            width, height = image_size(image_path)
            label_path: Path | None = self.label_dir / f"{name}.mat"
            if label_path.exists():
                landmarks = read_mat(label_path)
            else:
                if csv_landmarks is None:
                    csv_landmarks = self._csv_landmarks(name)
                log.debug("%s: no .mat label, using landmarks.csv", name)
                landmarks = denormalise(csv_landmarks[name], width, height)
                label_path = None
            official = None if angles is None else angles[row]
            self.samples.append(Sample(name, image_path, label_path, landmarks, official, width, height))
        self._index = {s.name: i for i, s in enumerate(self.samples)}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | str) -> Sample:
        if isinstance(key, str):
            if key not in self._index:
                raise KeyError(f"{key!r} is not in {self.label_dir / 'filenames.csv'}")
            return self.samples[self._index[key]]
        return self.samples[key]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.samples]

    def split(self, name: str) -> list[Sample]:
        """Samples of a split in SPLITS; the consistent split cuts filenames.csv after all but 50 rows, and its
        training part again after all but 50 rows for consistent-fit / consistent-val."""
        if name == "all":
            return list(self.samples)
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        if name.startswith("period-"):
            return self._period(name.removeprefix("period-"))
        if len(self.samples) <= CONSISTENT_TEST_SIZE:
            raise DatasetError(
                f"{self.label_dir}: the consistent split needs more than {CONSISTENT_TEST_SIZE} images, "
                f"this folder has {len(self.samples)}"
            )
        cut = len(self.samples) - CONSISTENT_TEST_SIZE
        if name == "consistent-test":
            return list(self.samples[cut:])
        train = self.samples[:cut]
        if name == "consistent-train":
            return list(train)
        if len(train) <= CONSISTENT_TEST_SIZE:
            raise DatasetError(f"{self.label_dir}: {name} needs more than {2 * CONSISTENT_TEST_SIZE} images, "
                               f"this folder has {len(self.samples)}")
        fit_cut = len(train) - CONSISTENT_TEST_SIZE
        return list(train[:fit_cut] if name == "consistent-fit" else train[fit_cut:])

    def _period(self, year: str) -> list[Sample]:
        dated = [(s, _FILM_YEAR.search(s.name)) for s in self.samples]
        undated = [s.name for s, match in dated if match is None]
        if undated:
            raise DatasetError(f"{self.label_dir}: the period split needs the year in each name "
                               f"('...-02-Jan-2017-162 A AP.jpg'); {undated[0]!r} has none")
        return [s for s, match in dated if match.group(1) == year]

    def _angles(self, rows: int) -> np.ndarray | None:
        path = self.label_dir / "angles.csv"
        if not path.exists():
            return None
        angles = read_angles_csv(path)
        if len(angles) != rows:
            raise DatasetError(f"{path}: {len(angles)} rows, but filenames.csv names {rows} images")
        return angles

    def _csv_landmarks(self, name: str) -> dict[str, np.ndarray]:
        path = self.label_dir / "landmarks.csv"
        if not path.exists():
            raise DatasetError(f"{self.label_dir}: no {name}.mat label and no landmarks.csv to fall back on")
        return read_landmarks_csv_normalised(path, self.label_dir / "filenames.csv")


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file, from the header alone for the formats Pillow knows (JPEG, PNG, ...).

    Other formats (DICOM, NRRD, NIfTI) are decoded in full by spinecascade.io.images.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            return int(width), int(height)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        radiograph = load_image(path)
        return radiograph.width, radiograph.height
    except OSError as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from exc
