"""Arguments several subcommands share."""

from __future__ import annotations

from pathlib import Path

from spinecascade.io.dataset import AasceDataset, Sample

SPLIT_CHOICES = ("consistent", "consistent-test", "all")
_SPLITS = {"consistent": "consistent-train", "consistent-test": "consistent-test", "all": "all"}


def dataset_split(root: Path, folder: str, split: str) -> list[Sample]:
    """The samples of one split of an AASCE-layout folder."""
    return AasceDataset(root, folder).split(_SPLITS[split])
