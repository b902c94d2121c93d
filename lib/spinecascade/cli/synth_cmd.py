"""`spinecascade synth`: synthetic spine radiographs with exact labels, for demos and tests."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from spinecascade.synthetic import FULL_LENGTH_VARIANTS

    p = sub.add_parser("synth", help="write synthetic spine radiographs with exact landmarks",
                       description="Writes N PNG images and our JSON labels (IMAGE.landmarks.json) into OUT; with "
                       "--model also trains a small demo model on them.")
    p.add_argument("out", type=Path, metavar="OUT", help="folder to write into")
    p.add_argument("-n", "--count", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=None, help="default 256; with --full-length, from the anatomy")
    p.add_argument("--height", type=int, default=None, help="default 640; with --full-length, 500-7500 by seed")
    p.add_argument("--aasce-layout", action="store_true",
                   help="write OUT/data/training/*.jpg and OUT/labels/training/ (.mat, filenames/landmarks/angles.csv)")
    p.add_argument("--model", type=Path, default=None, help="also train a small model on synthetic spines here")
    p.add_argument("--full-length", action="store_true",
                   help="whole standing films (skull or neck to pelvis or femurs, borders, ruler, text, side marker): "
                   "OUT/NAME.png, NAME.png.truth.json (variant, levels in the film, rows, all 68 points with null "
                   "for levels outside it) and, for films showing all 17 levels in AP, NAME.png.landmarks.json")
    p.add_argument("--variant", default="standard", choices=FULL_LENGTH_VARIANTS,
                   help="with --full-length: the kind of film (cut-off ends in the thorax; blank, limb: no spine)")
    p.add_argument("--bit-depth", type=int, default=8, choices=(8, 16), help="with --full-length: 8 or 16-bit PNG")


def run(args: argparse.Namespace) -> int:
    from spinecascade.io.images import save_image
    from spinecascade.io.labels import LandmarkLabel, write_json_label
    from spinecascade.synthetic import make_spine, write_aasce_layout

    if not args.full_length:
        args.width = 256 if args.width is None else args.width
        args.height = 640 if args.height is None else args.height
    if args.full_length:
        _write_full_length(args)
    elif args.aasce_layout:
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
        from spinecascade.training.train import train_synthetic_model

        train_synthetic_model(args.model, seed=args.seed, progress=True)
        print(f"wrote {args.model}")
    return 0


def _write_full_length(args: argparse.Namespace) -> None:
    """Full-length films with their truth and, where all 17 levels show in AP, their landmark labels."""
    import json

    from spinecascade.errors import SpineCascadeError
    from spinecascade.io.atomic import atomic_write_text
    from spinecascade.io.images import save_image
    from spinecascade.io.labels import LandmarkLabel, write_json_label
    from spinecascade.landmarks import N_VERTEBRAE
    from spinecascade.synthetic import make_full_length

    args.out.mkdir(parents=True, exist_ok=True)
    for i in range(args.count):
        try:
            film = make_full_length(args.seed + i, args.height, args.width, args.variant, bit_depth=args.bit_depth)
        except ValueError as exc:
            raise SpineCascadeError(str(exc)) from None
        name = f"full-length-{args.variant}-{args.seed + i:05d}.png"
        save_image(args.out / name, film.image)
        atomic_write_text(args.out / f"{name}.truth.json", json.dumps(film.metadata(), indent=1) + "\n")
        if len(film.levels_in_film) == N_VERTEBRAE and film.anatomy is not None:
            write_json_label(args.out / f"{name}.landmarks.json",
                             LandmarkLabel(film.landmarks, film.width, film.height, name))
