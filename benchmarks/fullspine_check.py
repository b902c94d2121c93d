"""A model on the unlabelled full-length films against the rows annotated by eye (fullspine_annotations.json).

For each film: how far the predicted top of T1 and bottom of L5 lie from the annotated rows, in levels (the
annotated T1-top to L5-bottom span / 17), and whether the answer carries the review flag. A film counts as
placed when both lie within a level. The annotations are one person's reading of the films, not expert labels
(fullspine_annotations.md).

With --crop-from-annotations the model reads a crop framed as the AASCE training films are (the median margins
above T1 and below L5 of the 481 labels, 3.4 % and 7.8 % of the T1-L5 span, and their median aspect ratio, 0.372)
around the annotated rows: what a prediction would give after a perfect localisation of the spine.

Run: python benchmarks/fullspine_check.py ../shared/fullspine [--model M] [--crop-from-annotations]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from spinecascade.io.images import Radiograph, load_image
from spinecascade.method.prediction import Prediction, Predictor

ANNOTATIONS = Path(__file__).with_name("fullspine_annotations.json")
TOP_MARGIN, BOTTOM_MARGIN, ASPECT = 0.034, 0.078, 0.372  # of the AASCE labels' T1-L5 span; width / height


def predict_in_crop(predictor: Predictor, path: Path, truth: dict) -> tuple[Prediction, np.ndarray]:
    """The prediction on a crop framed like the training films around the annotated spine, and its landmarks
    in the film's pixels."""
    film = load_image(path).to_uint8()
    top, bottom = truth["t1_top"]["row"], truth["l5_bottom"]["row"]
    span = bottom - top
    y0, y1 = int(max(0, top - TOP_MARGIN * span)), int(min(film.shape[0], bottom + BOTTOM_MARGIN * span))
    middle, half = (truth["t1_top"]["x"] + truth["l5_bottom"]["x"]) / 2, ASPECT * (y1 - y0) / 2
    x0, x1 = int(max(0, middle - half)), int(min(film.shape[1], middle + half))
    prediction = predictor.predict(Radiograph(film[y0:y1, x0:x1].astype(np.float32)))
    return prediction, prediction.landmarks + np.array([x0, y0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("films", type=Path)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--crop-from-annotations", action="store_true",
                        help="predict on a crop framed like the training films around the annotated spine")
    args = parser.parse_args()
    films = json.loads(ANNOTATIONS.read_text())["films"]
    predictor = Predictor(args.model, device="cpu")
    placed = flagged = 0
    for name, truth in sorted(films.items()):
        if args.crop_from_annotations:
            prediction, landmarks = predict_in_crop(predictor, args.films / name, truth)
        else:
            prediction = predictor.predict(args.films / name)
            landmarks = prediction.landmarks
        top = landmarks[0, :2, 1].mean()
        bottom = landmarks[16, 2:, 1].mean()
        level = (truth["l5_bottom"]["row"] - truth["t1_top"]["row"]) / 17
        t1 = (top - truth["t1_top"]["row"]) / level
        l5 = (bottom - truth["l5_bottom"]["row"]) / level
        placed += abs(t1) < 1 and abs(l5) < 1
        flagged += prediction.quality.review_needed
        review = "yes" if prediction.quality.review_needed else "no"
        print(f"{name:22s} T1 {t1:+5.1f}  L5 {l5:+5.1f} levels  review {review}")
    print(f"placed (T1 top and L5 bottom within a level of the annotation): {placed} of {len(films)}; "
          f"flagged for review: {flagged} of {len(films)}")


if __name__ == "__main__":
    main()
