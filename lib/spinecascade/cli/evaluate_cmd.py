"""`spinecascade evaluate`: the foundation's metrics for a model on an AASCE-layout split."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from spinecascade.cli.options import SPLIT_CHOICES, add_precision_option, dataset_split


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a model on an AASCE-layout split",
                       description="Normalised MSE (Eq. 13 of the paper), mean point error, Cobb SMAPE and per-angle "
                       "errors against the official angles.")
    p.add_argument("--model", type=Path, default=None, help="model file (default: the shipped model)")
    p.add_argument("--data", type=Path, required=True, help="AASCE-layout folder")
    p.add_argument("--folder", default="training")
    p.add_argument("--split", choices=SPLIT_CHOICES, default="consistent-test",
                   help="consistent-test: the last 50 images (default); consistent: the first 431; all; "
                   "consistent-val: images 382-431, to validate a model trained on consistent-fit (1-381)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of the split")
    p.add_argument("--skip-bad-labels", action="store_true",
                   help="leave out images whose labels the checker flags (see check-labels): their truth is wrong")
    p.add_argument("--device", default=None)
    add_precision_option(p)
    p.add_argument("--per-image", type=Path, default=None, metavar="CSV",
                   help="also write one row per image (MSE, point error, vertical miss in levels, SMAPE, "
                   "uncertainty, the review flag and the kinds of its reasons, angles) to this CSV file")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from spinecascade.method.evaluation import (
        LEVEL_MISS,
        evaluate_predictions,
        per_image_table,
        predict_samples,
        review_flag_summary,
    )
    from spinecascade.method.prediction import Predictor

    samples = dataset_split(args.data, args.folder, args.split)[: args.limit]
    skipped = []
    if args.skip_bad_labels:
        from spinecascade.measurement.label_check import check_landmarks

        flagged = [bool(check_landmarks(s.landmarks, s.width, s.height)) for s in samples]
        skipped = [s.name for s, bad in zip(samples, flagged) if bad]
        samples = [s for s, bad in zip(samples, flagged) if not bad]
    predictor = Predictor(args.model, device=args.device, precision=args.precision)
    preds = predict_samples(predictor, samples, progress=not args.json)
    d = {**evaluate_predictions(preds, samples).as_dict(), **review_flag_summary(preds, samples)}
    if args.per_image:
        write_csv(args.per_image, per_image_table(preds, samples))
    if args.json:
        print(json.dumps({"split": args.split, "skipped_bad_labels": skipped, **d}, indent=1))
        return 0
    print(f"images           {d['n_images']}" + (f" ({len(skipped)} with flagged labels left out)" if skipped else ""))
    print(f"normalised MSE   {d['mse']:.3e}")
    print(f"mean point error {d['mean_px_error']:.2f} px")
    print(f"Cobb SMAPE       {d['smape']:.2f} %")
    for name in ("PT", "MT", "TL"):
        print(f"{name} MAE           {d['cobb_mae'][name]:.2f} deg (circular {d['cobb_circular_mae'][name]:.2f})")
    print(f"level misses     {d['level_misses']} images with the spine {LEVEL_MISS} level or more off")
    review = d["review_flag"]
    print(f"review flag      {review['flagged']} images: {review['level_misses_flagged']} of the {d['level_misses']} "
          f"level misses, {review['other_films_flagged']} of the {d['n_images'] - d['level_misses']} others")
    for kind, counts in review["by_reason"].items():
        print(f"  {kind:<17}{counts['level_misses']} level misses ({counts['level_misses_alone']} by it alone), "
              f"{counts['others']} others ({counts['others_alone']} alone)")
    if args.per_image:
        print(f"per image        {args.per_image}")
    return 0


def write_csv(path: Path, rows: list[dict]) -> None:
    from spinecascade.io.atomic import atomic_write_text
    from spinecascade.method.evaluation import PER_IMAGE_COLUMNS

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, PER_IMAGE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
