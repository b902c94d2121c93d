"""Arguments several subcommands share."""

from __future__ import annotations

import argparse
from pathlib import Path

from spinecascade.io.dataset import AasceDataset, Sample

SPLIT_CHOICES = ("consistent", "consistent-test", "all", "consistent-fit", "consistent-val", "period-2016",
                 "period-2017")
_SPLITS = {"consistent": "consistent-train", "consistent-test": "consistent-test", "all": "all",
           "consistent-fit": "consistent-fit", "consistent-val": "consistent-val", "period-2016": "period-2016",
           "period-2017": "period-2017"}


def dataset_split(root: Path, folder: str, split: str) -> list[Sample]:
    """The samples of one split of an AASCE-layout folder."""
    return AasceDataset(root, folder).split(_SPLITS[split])


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                        help="number format of the encoders (default float32; bfloat16 is faster on CPUs with native "
                        "bfloat16, AVX-512 BF16 or AMX, and moves the landmarks by a few pixels)")
