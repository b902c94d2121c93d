"""`spinecascade convert`: one landmark label between AASCE .mat, our .json and 3D Slicer .mrk.json (or from a
DICOM SR landmark report)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from spinecascade.io.dataset import image_size
from spinecascade.io.labels import is_mrk_path, read_label, write_label

NAME = "convert"
log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="convert between landmark label formats",
        description=(
            "Convert one landmark label between AASCE .mat, spinecascade .json and 3D Slicer .mrk.json, or read "
            "a DICOM SR landmark report (.dcm, from `spinecascade predict --sr` or the server's PACS mode); "
            "the format is taken from each file's suffix. Slicer positions are origin + pixel * spacing "
            "(mm, LPS, z = 0), so a .mrk.json file must be read back with the --spacing and --origin it was "
            "written with."
        ),
    )
    parser.add_argument("input", type=Path, metavar="INPUT", help="label to read")
    parser.add_argument("output", type=Path, metavar="OUTPUT", help="label to write (replaced atomically)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--image", type=Path, help="the label's image, for its width and height (header only)")
    size.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), help="the image width and height")
    parser.add_argument(
        "--spacing", type=float, nargs=2, metavar=("SX", "SY"), help="pixel spacing in mm (default: 1 1)"
    )
    parser.add_argument(
        "--origin",
        type=float,
        nargs=2,
        metavar=("OX", "OY"),
        default=(0.0, 0.0),
        help="physical position in mm of pixel (0, 0) in a .mrk.json file (default: 0 0)",
    )


def run(args: argparse.Namespace) -> int:
    size = tuple(args.size) if args.size else image_size(args.image) if args.image else None
    spacing = tuple(args.spacing) if args.spacing else None
    origin = tuple(args.origin)
    label = read_label(args.input, size, spacing=spacing, origin=origin)
    if args.image is not None and label.image_name is None:
        label.image_name = args.image.name
    if spacing is not None:
        label.spacing_mm = spacing
    if args.output.suffix.lower() == ".json" and not is_mrk_path(args.output) and label.width is None:
        log.warning("image size unknown: width and height left null in %s (see --image, --size)", args.output)
    write_label(args.output, label, spacing=spacing or (1.0, 1.0), origin=origin)
    print(f"wrote {args.output}")
    return 0
