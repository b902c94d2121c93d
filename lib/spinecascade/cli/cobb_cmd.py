"""`spinecascade cobb`: the official AASCE Cobb angles of one landmark file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from spinecascade.errors import SpineCascadeError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cobb", help="Cobb angles (PT, MT, TL) and end vertebrae from a landmark file",
                       description="Cobb angles by the official AASCE algorithm. The S-curve rule needs the image "
                       "height: give --image or --height unless the label records it (our .json does).")
    p.add_argument("label", type=Path, metavar="LABEL_FILE", help=".mat, .json or .mrk.json")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--image", type=Path, help="the X-ray the label belongs to (only its height is read)")
    size.add_argument("--height", type=float, help="image height in pixels")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from spinecascade.io.dataset import image_size
    from spinecascade.io.labels import read_label
    from spinecascade.measurement.cobb import cobb_angles

    label = read_label(args.label)
    if args.height is not None:
        height = args.height
    elif args.image is not None:
        height = image_size(args.image)[1]
    elif label.height is not None:
        height = label.height
    else:
        raise SpineCascadeError(f"{args.label}: the label does not record the image height; give --image or --height")
    if height <= 0:
        raise SpineCascadeError(f"image height must be positive, got {height:g}")
    result = cobb_angles(label.landmarks, height)
    if args.json:
        print(json.dumps({"file": str(args.label), "image_height": height, **result.as_dict()}, indent=1))
        return 0
    for angle in result.angles:
        upper, lower = angle.end_vertebrae
        print(f"{angle.name}  {angle.degrees:8.4f} deg   {upper}-{lower}")
    print(f"curve {'S' if result.s_shaped else 'C'}")
    for note in result.degenerate:
        print(f"note: {note}")
    return 0
