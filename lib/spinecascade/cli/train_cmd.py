"""`spinecascade train`: train a named recipe on an AASCE-layout dataset (resumable; torchrun for several workers)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from spinecascade.cli.options import SPLIT_CHOICES, dataset_split


def register(sub: argparse._SubParsersAction) -> None:
    from spinecascade.training.recipes import RECIPES

    recipes = "; ".join(f"{r.name}: {r.summary}" for r in RECIPES.values())
    p = sub.add_parser("train", help="train a named recipe on an AASCE-layout dataset",
                       description="Train a model by a named recipe. Killed and started again with the same "
                       "arguments, it resumes from its last checkpoint (OUT.checkpoint). Under `torchrun "
                       f"--nproc_per_node=N` it trains data-parallel. Recipes: {recipes}.")
    p.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                   help="what to train (default: shipped; with --finetune, the recipe of that model)")
    p.add_argument("--data", type=Path, default=None, help="AASCE-layout folder (data/<folder>, labels/<folder>)")
    p.add_argument("--folder", default="training", help="sub-folder of data/ and labels/ (default: training)")
    p.add_argument("--split", choices=SPLIT_CHOICES, default="consistent",
                   help="consistent: the first 431 images; all: every image; consistent-fit: the first 381, "
                   "leaving images 382-431 (consistent-val) to validate choices (default: consistent)")
    p.add_argument("--out", type=Path, default=None, help="model file to write (.safetensors)")
    p.add_argument("--epochs", type=int, default=None, help="train every part for this many epochs")
    p.add_argument("--batch", type=int, default=None, help="images per batch for every part")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present)")
    p.add_argument("--finetune", type=Path, default=None, metavar="MODEL",
                   help="start from this model and train it by its recipe's fine-tuning settings")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="FIELD=VALUE",
                   help="change one setting of the recipe, e.g. --set train.film_start.framing=80 or --set "
                   "model.n_stages=2 (repeatable; --show lists them all)")
    p.add_argument("--full-length", type=Path, default=None, metavar="DIR",
                   help="folder of full-length films with the rows of T1's top and L5's bottom annotated: the "
                   "spine locator learns L5 from them (without, the model has no locator). Rows come from "
                   "DIR/fullspine_annotations.json, else from ours for the AASCE test release's 30 films "
                   "(../shared/fullspine)")
    p.add_argument("--show", action="store_true", help="print the recipe's settings as JSON and exit")


def run(args: argparse.Namespace) -> int:
    from spinecascade.errors import SpineCascadeError
    from spinecascade.method.model_file import load_model
    from spinecascade.training.loop import init_distributed
    from spinecascade.training.recipes import configure
    from spinecascade.training.train import train_model

    name = args.recipe
    if args.finetune is not None and name is None:
        name = load_model(args.finetune)[1].get("recipe")
        if name is None:
            raise SpineCascadeError(f"{args.finetune}: the model file names no recipe; give --recipe")
    recipe = configure(name or "shipped", args.settings, epochs=args.epochs, batch=args.batch, seed=args.seed,
                       finetune=args.finetune is not None)
    if args.show:
        print(json.dumps(recipe.as_dict(), indent=1))
        return 0
    missing = [option for option, value in (("--data", args.data), ("--out", args.out)) if value is None]
    if missing:
        raise SpineCascadeError(f"train needs {' and '.join(missing)}")
    rank, _ = init_distributed()
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    samples = dataset_split(args.data, args.folder, args.split)
    data = {"root": str(args.data), "folder": args.folder, "split": args.split}
    result = train_model(recipe, samples, args.out, base=args.finetune, device=args.device, data=data,
                         progress=rank == 0, full_length=args.full_length)
    if result.written:
        seconds = result.info["train"]["seconds"]
        print(f"wrote {args.out} ({result.info['data']['n_images']} images, recipe {recipe.name}, {seconds:.0f} s)")
    return 0
