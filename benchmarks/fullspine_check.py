"""A model on the unlabelled full-length films against the rows annotated by eye
(spinecascade/training/fullspine_annotations.json, how: docs/fullspine-annotations.md).

For each film: how far the predicted top of T1 and bottom of L5 lie from the annotated rows, in levels (the
annotated T1-top to L5-bottom span / 17), the locator's spreads, and whether the answer carries the review flag and
why. A film counts as placed when both lie within a level (and is counted again within half a level). The
annotations are one person's reading of the films, not expert labels.

--fold-locators DIR: the model's spine locator is replaced, film by film, by the one of
benchmarks/spine_locator_folds.py --save-dir DIR whose fold left that film out: the figures of films the locator was
not trained on. --crop-from-annotations: the model reads the crop that the locator's framing (framing_window) gives
around the annotated rows (what a perfect localisation would give). --overlays DIR: one PNG per film.

Run: python benchmarks/fullspine_check.py ../shared/fullspine [--model M] [--fold-locators DIR]
     [--crop-from-annotations] [--overlays DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from spinecascade.io.images import Radiograph, load_image
from spinecascade.io.overlay import write_overlay
from spinecascade.landmarks import SpineExtent
from spinecascade.measurement.cobb import cobb_angles
from spinecascade.method.model_file import default_model_path, load_model
from spinecascade.method.prediction import Prediction, Predictor
from spinecascade.method.spine_locator import LocatorConfig, SpineLocator, framing_window
from spinecascade.training.spine_locator import annotations_path


def predict_in_crop(predictor: Predictor, path: Path, truth: dict) -> tuple[Prediction, np.ndarray]:
    """The prediction on the crop the locator's framing (framing_window) gives around the annotated spine, and its
    landmarks in the film's pixels."""
    film = load_image(path).to_uint8()
    top, bottom = truth["t1_top"], truth["l5_bottom"]
    annotated = SpineExtent(top["row"], bottom["row"], (top["x"] + bottom["x"]) / 2, 0.0, 0.0)
    x0, y0, x1, y1 = framing_window(annotated, film.shape[1], film.shape[0], LocatorConfig())
    prediction = predictor.predict(Radiograph(film[y0:y1, x0:x1].astype(np.float32)))
    return prediction, prediction.landmarks + np.array([x0, y0])


def fold_predictors(model: Path, folder: Path, names: list[str]) -> dict[str, Predictor]:
    """For each film, a predictor whose locator is the saved one of the fold that left the film out (films are
    dealt to the folds in name order, as spine_locator_folds.py does)."""
    cascade, _ = load_model(model)
    saved = sorted(folder.glob("locator-fold*.pt"))
    predictors = []
    for path in saved:
        cascade.spine_locator = SpineLocator(cascade.config.spine_locator or LocatorConfig())
        cascade.spine_locator.load_state_dict(torch.load(path))
        predictors.append(Predictor(cascade, device="cpu"))
    return {name: predictors[i % len(saved)] for i, name in enumerate(names)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("films", type=Path)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--fold-locators", type=Path, default=None, metavar="DIR")
    parser.add_argument("--crop-from-annotations", action="store_true",
                        help="predict on a crop framed like the training films around the annotated spine")
    parser.add_argument("--overlays", type=Path, default=None, metavar="DIR")
    args = parser.parse_args()
    films = json.loads(annotations_path().read_text())["films"]
    names = sorted(films)
    if args.fold_locators:
        predictors = fold_predictors(args.model or default_model_path(), args.fold_locators, names)
    else:
        predictors = dict.fromkeys(names, Predictor(args.model, device="cpu"))
    placed = placed_half = flagged = flagged_misplaced = 0
    for name in names:
        truth, predictor = films[name], predictors[name]
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
        good = abs(t1) < 1 and abs(l5) < 1
        placed += good
        placed_half += abs(t1) < 0.5 and abs(l5) < 0.5
        review = prediction.quality.review_needed
        flagged += review
        flagged_misplaced += review and not good
        spine = prediction.spine
        spreads = f"spreads {spine.t1_spread:.2f} {spine.l5_spread:.2f}" if spine else ""
        reasons = "; ".join(prediction.quality.reasons) if review else "no"
        print(f"{name:22s} T1 {t1:+5.2f}  L5 {l5:+5.2f} levels  {spreads}  review {reasons}")
        if args.overlays:
            args.overlays.mkdir(parents=True, exist_ok=True)
            film = load_image(args.films / name).to_uint8()
            write_overlay(args.overlays / f"{Path(name).stem}.png", film, landmarks,
                          cobb_angles(landmarks, film.shape[0]), crop=prediction.window,
                          review=prediction.quality.reasons if review else None)
    n = len(names)
    print(f"placed (T1 top and L5 bottom within a level of the annotation): {placed} of {n}, within half a level: "
          f"{placed_half} of {n}; flagged for review: {flagged} of {n} ({flagged_misplaced} of the {n - placed} not "
          f"placed, {flagged - flagged_misplaced} of the {placed} placed)")


if __name__ == "__main__":
    main()
