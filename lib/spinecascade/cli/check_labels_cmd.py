"""`spinecascade check-labels`: the labels of a dataset, or one label file, that break the expected structure.

Finding broken labels is the result, not a failure, so the exit status is 0 whatever is found.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from spinecascade.errors import LabelError
from spinecascade.io.dataset import AasceDataset, image_size
from spinecascade.io.labels import read_label
from spinecascade.measurement.label_check import RULES, Finding, check_landmarks, repair_landmarks

NAME = "check-labels"


def register(subparsers: argparse._SubParsersAction) -> None:
    rules = "; ".join(f"{rule}: {text}" for rule, text in RULES.items())
    parser = subparsers.add_parser(
        NAME,
        help="list labels that break the expected landmark structure",
        description=(
            "Check every label of an AASCE-layout dataset, or one label file (.mat, .json, .mrk.json), "
            f"against these rules. {rules}."
        ),
    )
    parser.add_argument("path", metavar="DATASET_DIR", help="AASCE-layout dataset folder, or one label file")
    parser.add_argument("--folder", default="training", help="dataset sub-folder (default: training)")
    parser.add_argument("--json", action="store_true", help="print the findings as one JSON document")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--image", type=Path, help="for one label file: its image (for the size; header only)")
    size.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), help="for one label file: image size")


def run(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.is_dir():
        if args.image is not None or args.size is not None:
            raise LabelError("--image and --size apply to a single label file, not to a dataset folder")
        dataset = AasceDataset(path, args.folder)
        items = [(s.name, s.landmarks, s.width, s.height) for s in dataset]
    else:
        size = tuple(args.size) if args.size else image_size(args.image) if args.image else None
        label = read_label(path, size)
        items = [(path.name, label.landmarks, label.width, label.height)]
    results = {}
    for name, landmarks, width, height in items:
        findings = check_landmarks(landmarks, width, height)
        if findings:
            results[name] = (findings, repair_landmarks(landmarks, width, height) is not None)
    if args.json:
        print(json.dumps(_as_json(results, len(items)), indent=2))
    else:
        for name, (findings, _) in results.items():
            print(f"{name}: " + "; ".join(str(f) for f in findings))
        print(f"{len(results)} of {len(items)} images break the expected structure")
    return 0


def _as_json(results: dict[str, tuple[list[Finding], bool]], checked: int) -> dict:
    return {
        "checked": checked,
        "flagged": len(results),
        "images": {
            name: {
                "repairable": repairable,
                "findings": [
                    {"rule": f.rule, "vertebra": f.vertebra, "message": f.message} for f in findings
                ],
            }
            for name, (findings, repairable) in results.items()
        },
    }
