"""The spine locator measured on films it was not trained on: the 30 annotated full-length films by folds, and
tight films of one AASCE split when trained on another.

For each fold of the full-length films, a locator is trained (training/spine_locator.py, the settings of --recipe)
on the labelled films of --train-split and the annotated full-length films of the other folds, and scored on the
fold's films against the annotated rows; with --test-split, also on those labelled films against their labels.
Misses are in levels (the T1-L5 span / 17); a film is placed when T1's top and L5's bottom both lie within a level,
and within half a level for the level count. An experiment: the shipped locator is trained by `spinecascade train`.

Run: python benchmarks/spine_locator_folds.py ../shared/aasce ../shared/fullspine [--folds 3] [--epochs N]
     [--train-split all] [--test-split consistent-test] [--save-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch

from spinecascade.io.dataset import AasceDataset
from spinecascade.method.spine_locator import SpineLocator
from spinecascade.training.label_cleaning import clean_samples
from spinecascade.training.recipes import configure
from spinecascade.training.spine_locator import (
    LocatorExample,
    annotated_examples,
    annotations_path,
    fit_spine_locator,
    labelled_examples,
)


def misses(locator: SpineLocator, examples: list[LocatorExample]) -> np.ndarray:
    """(n, 3): T1 top, L5 bottom and column misses in levels."""
    out = []
    for ex in examples:
        found = locator.locate(ex.film)
        level = (ex.l5_bottom - ex.t1_top) / 17
        out.append([(found.t1_top - ex.t1_top) / level, (found.l5_bottom - ex.l5_bottom) / level,
                    (found.x - ex.x) / level])
    return np.array(out)


def summary(label: str, miss: np.ndarray) -> str:
    rows = np.abs(miss[:, :2])
    return (f"{label}: median |miss| T1 {np.median(rows[:, 0]):.2f}, L5 {np.median(rows[:, 1]):.2f}, column "
            f"{np.median(np.abs(miss[:, 2])):.2f} levels; both within a level {int((rows < 1).all(1).sum())}, within "
            f"half a level {int((rows < 0.5).all(1).sum())} of {len(miss)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("aasce", type=Path)
    parser.add_argument("fullspine", type=Path)
    parser.add_argument("--recipe", default="shipped")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--only-fold", type=int, default=None, help="train and score this fold only")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="FIELD=VALUE",
                        help="change a setting of the recipe, e.g. train.spine_locator.annotated_repeats=16")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--train-split", default="all")
    parser.add_argument("--test-split", default=None)
    parser.add_argument("--save-dir", type=Path, default=None, help="write each fold's locator and its misses here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    recipe = configure(args.recipe, args.settings)
    settings = recipe.train.spine_locator
    if args.epochs:
        settings = type(settings)(**{**settings.__dict__, "epochs": args.epochs})
    dataset = AasceDataset(args.aasce)
    labelled = labelled_examples(clean_samples(dataset.split(args.train_split)).kept)
    tested = labelled_examples(dataset.split(args.test_split)) if args.test_split else []
    full = annotated_examples(args.fullspine)
    names = sorted(json.loads(annotations_path().read_text())["films"])
    fold_of = {name: i % args.folds for i, name in enumerate(names)}
    full_miss, tight_miss = np.zeros((len(full), 3)), []
    for fold in range(args.folds) if args.only_fold is None else [args.only_fold]:
        train_full = [ex for ex in full if fold_of[ex.name] != fold]
        test_idx = [i for i, ex in enumerate(full) if fold_of[ex.name] == fold]
        examples = labelled + train_full
        repeats = [1] * len(labelled) + [settings.annotated_repeats] * len(train_full)
        torch.manual_seed(fold)
        locator = SpineLocator(recipe.model.spine_locator)
        fit_spine_locator(locator, examples, settings, repeats, seed=fold)
        full_miss[test_idx] = misses(locator, [full[i] for i in test_idx])
        print(summary(f"fold {fold + 1}/{args.folds} full-length", full_miss[test_idx]), flush=True)
        if tested:
            tight_miss.append(misses(locator, tested))
            print(summary(f"fold {fold + 1}/{args.folds} {args.test_split}", tight_miss[-1]), flush=True)
        if args.save_dir:
            args.save_dir.mkdir(parents=True, exist_ok=True)
            torch.save(locator.state_dict(), args.save_dir / f"locator-fold{fold}.pt")
    scored = [i for i, ex in enumerate(full) if args.only_fold is None or fold_of[ex.name] == args.only_fold]
    print(summary("full-length, all folds", full_miss[scored]))
    for i in scored:
        t1, l5, x = full_miss[i]
        print(f"  {full[i].name:22s} T1 {t1:+5.2f} L5 {l5:+5.2f} column {x:+5.2f}")
    if tight_miss:
        print(summary(f"{args.test_split}, mean of the folds' locators", np.mean(tight_miss, axis=0)))
    if args.save_dir:
        np.save(args.save_dir / "full_misses.npy", full_miss)


if __name__ == "__main__":
    main()
