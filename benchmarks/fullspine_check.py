"""A model on the unlabelled full-length films against the rows annotated by eye (fullspine_annotations.json).

For each film: how far the predicted top of T1 and bottom of L5 lie from the annotated rows, in levels (the
annotated T1-top to L5-bottom span / 17), and whether the answer carries the review flag. A film counts as
placed when both lie within a level. The annotations are one person's reading of the films, not expert labels
(fullspine_annotations.md).

Run: python benchmarks/fullspine_check.py ../shared/fullspine [--model M]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from spinecascade.method.prediction import Predictor

ANNOTATIONS = Path(__file__).with_name("fullspine_annotations.json")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("films", type=Path)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    films = json.loads(ANNOTATIONS.read_text())["films"]
    predictor = Predictor(args.model, device="cpu")
    placed = flagged = 0
    for name, truth in sorted(films.items()):
        prediction = predictor.predict(args.films / name)
        top = prediction.landmarks[0, :2, 1].mean()
        bottom = prediction.landmarks[16, 2:, 1].mean()
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
