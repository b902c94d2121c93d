"""`spinecascade synth`: synthetic spine radiographs with exact labels, for demos and tests."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write synthetic spine radiographs with exact landmarks",
                       description="Writes N PNG images and our JSON labels (IMAGE.landmarks.json) into OUT; with "
                       "--model also trains a small demo model on them.")
    p.add_argument("out", type=Path, metavar="OUT", help="folder to write into")
    p.add_argument("-n", "--count", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--height", type=int, default=640)
    p.add_argument("--aasce-layout", action="store_true",
                   help="write OUT/data/training/*.jpg and OUT/labels/training/ (.mat, filenames/landmarks/angles.csv)")
    p.add_argument("--model", type=Path, default=None, help="also train a small model on synthetic spines here")


def run(args: argparse.Namespace) -> int:
    from spinecascade.io.images import save_image
    from spinecascade.io.labels import LandmarkLabel, write_json_label
    from spinecascade.synthetic import make_spine, write_aasce_layout

    if args.aasce_layout:
        write_aasce_layout(args.out, args.count, args.seed, args.width, args.height)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        for i in range(args.count):
            spine = make_spine(args.seed + i, args.width, args.height)
            name = f"synthetic-{args.seed + i:05d}.png"
            save_image(args.out / name, spine.image)
            write_json_label(args.out / f"{name}.landmarks.json",
                             LandmarkLabel(spine.landmarks, args.width, args.height, name))
    print(f"wrote {args.count} images and labels to {args.out}")
    if args.model is not None:
        from spinecascade.method.workflow import train_synthetic_model

        train_synthetic_model(args.model, seed=args.seed, progress=True)
        print(f"wrote {args.model}")
    return 0
