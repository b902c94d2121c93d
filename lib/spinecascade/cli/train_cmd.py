"""`spinecascade train`: train the cascade on an AASCE-layout dataset (resumable; torchrun for several workers)."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path

from spinecascade.cli.options import SPLIT_CHOICES, dataset_split
from spinecascade.errors import SpineCascadeError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the two-step cascade on an AASCE-layout dataset",
                       description="Train the cascade. Killed and started again with the same arguments, it "
                       "resumes from its last checkpoint (OUT.checkpoint). Under `torchrun --nproc_per_node=N` "
                       "it trains data-parallel.")
    p.add_argument("--data", type=Path, required=True, help="AASCE-layout folder (data/<folder>, labels/<folder>)")
    p.add_argument("--folder", default="training", help="sub-folder of data/ and labels/ (default: training)")
    p.add_argument("--split", choices=SPLIT_CHOICES, default="consistent",
                   help="consistent: the first 431 images; all: every image; consistent-fit: the first 381, "
                   "leaving images 382-431 (consistent-val) to validate choices (default: consistent)")
    p.add_argument("--out", type=Path, required=True, help="model file to write (.safetensors)")
    p.add_argument("--epochs", type=int, default=8, help="epochs per stage (paper: 8)")
    p.add_argument("--corner-epochs", type=int, default=None, help="epochs per step-2 stage (default: --epochs)")
    p.add_argument("--batch-images", type=int, default=8, help="images per batch (default: 8)")
    p.add_argument("--learning-rate", type=float, default=5e-4)
    p.add_argument("--lr-decay", type=_decay_factor, default=0.5,
                   help="learning-rate factor after every epoch (paper: 0.5; the shipped model: 0.9)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", choices=("paper", "small"), default="paper",
                   help="paper: the published cascade (default); small: a tiny one for demos and tests")
    p.add_argument("--augment", action="store_true",
                   help="also warp the films beyond the paper's mirrors: shift, tilt, scale, bend and gamma for "
                   "step 1, gamma only for step 2 (see --corner-warp-strength)")
    p.add_argument("--corner-warp-strength", type=_strength, default=0.0,
                   help="with --augment: scale of step 2's geometric warps against step 1's (default 0: step 2 "
                   "sees gamma changes only)")
    p.add_argument("--film-framing", type=_frame_pixels, default=0.0, metavar="PX",
                   help="with --augment: when training the film start, move each film's top and bottom edges by "
                   "up to PX pixels of the 680-px image, independently, so that it finds the spine on films cut "
                   "tighter or looser than its training films (default 0)")
    p.add_argument("--no-pca", action="store_true",
                   help="regress raw offsets (the ablation without shape constraint); with --step1-from, in step 2")
    p.add_argument("--no-film-start", action="store_true",
                   help="with --augment: start step 1 from the mean shape, as the paper does (and as training "
                   "without --augment does), instead of from the whole-film regression")
    p.add_argument("--level-finder", action="store_true",
                   help="end step 1 with the level finder, a strip along the spine that places the vertebrae "
                   "vertically (README); with --step1-from, added to that model's step 1")
    p.add_argument("--level-epochs", type=_positive, default=None,
                   help="epochs of the level finder (default: 4 x --epochs)")
    p.add_argument("--corner-heatmaps", action="store_true",
                   help="start step 2 from corner heatmaps in a window around each centre instead of the mean "
                   "corner layout (README); with --step1-from, added to that model's step 2")
    p.add_argument("--heatmap-epochs", type=_positive, default=None,
                   help="epochs of the corner heatmaps (default: 1.5 x --epochs)")
    p.add_argument("--start-epochs", type=_positive, default=None,
                   help="epochs of the whole-film start (default: 5 x --epochs)")
    p.add_argument("--finetune", type=Path, default=None, help="start from this model instead of from scratch")
    p.add_argument("--step1-from", type=Path, default=None, metavar="MODEL",
                   help="take step 1 and the cascade's settings from MODEL and train only step 2, started "
                   "turned to the spine as today's default is (with --no-pca, step 2 regresses raw offsets)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present)")
    p.add_argument("--prediction-stages", type=int, nargs=2, metavar=("CENTRE", "CORNER"), default=None,
                   help="how many stages of step 1 and of step 2 a prediction runs, and so are trained (default: "
                   "all; 0 for step 1 runs the film start alone, 0 for step 2 the corner heatmaps alone)")
    p.add_argument("--keep-bad-labels", action="store_true",
                   help="train on labels the checker rejects instead of repairing or excluding them")


def _decay_factor(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number of at least 1")
    return value


def _strength(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 4:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 4]")
    return value


def _frame_pixels(text: str) -> float:
    from spinecascade.method.augmentation import framing_pixels

    try:
        return framing_pixels(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from spinecascade.method.cascade import Cascade
    from spinecascade.method.model_file import load_model, save_model
    from spinecascade.method.training import TrainConfig, init_distributed, train_cascade
    from spinecascade.method.workflow import (
        cascade_config,
        corner_heatmap_config,
        film_start_if_warped,
        level_config,
        load_training_images,
        small_config,
    )

    rank, world = init_distributed()
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    if args.film_framing and (not args.augment or args.no_film_start or args.step1_from):
        raise SpineCascadeError("--film-framing changes how the film start is trained: it needs --augment, and "
                                "no --no-film-start or --step1-from")
    if args.step1_from and (args.finetune or args.no_film_start):
        raise SpineCascadeError("--step1-from takes step 1 and its start from its model: it cannot be combined "
                                "with --finetune or --no-film-start")
    base = load_model(args.finetune)[0] if args.finetune else None
    if args.level_finder and base is not None and base.config.level_finder is None:
        raise SpineCascadeError(f"--level-finder: {args.finetune} has no level finder to fine-tune; add one with "
                                "--step1-from instead")
    if args.corner_heatmaps and base is not None and base.config.corner_heatmaps is None:
        raise SpineCascadeError(f"--corner-heatmaps: {args.finetune} has no corner heatmaps to fine-tune; add them "
                                "with --step1-from instead")
    step1, step1_info = load_model(args.step1_from) if args.step1_from else (None, {})
    if base is not None:
        config = base.config
    elif step1 is not None:  # the model's settings, with today's step-2 start
        config = replace(step1.config, align_corner_start=cascade_config().align_corner_start)
        if args.no_pca:
            config = replace(config, corner=replace(config.corner, n_components=None))
    else:
        config = small_config() if args.config == "small" else cascade_config(use_pca=not args.no_pca)
        config = film_start_if_warped(config, args.augment and not args.no_film_start)
    if args.level_finder and base is None and config.level_finder is None:
        config = replace(config, level_finder=level_config(config))
    if args.corner_heatmaps and base is None and config.corner_heatmaps is None:
        config = replace(config, corner_heatmaps=corner_heatmap_config(config))
    if args.prediction_stages:  # checked before the hours of training, not after
        try:
            Cascade(config).set_prediction_stages(*args.prediction_stages)
        except ValueError as exc:
            stages = " ".join(map(str, args.prediction_stages))
            raise SpineCascadeError(f"--prediction-stages {stages}: {exc}") from None
    samples = dataset_split(args.data, args.folder, args.split)
    images, cleaning = load_training_images(samples, config.preprocess, clean=not args.keep_bad_labels,
                                            progress=rank == 0)
    train = TrainConfig(epochs=args.epochs, corner_epochs=args.corner_epochs, learning_rate=args.learning_rate,
                        lr_decay=args.lr_decay, batch_images=args.batch_images, seed=args.seed, augment=args.augment,
                        corner_warp_strength=args.corner_warp_strength, film_framing=args.film_framing,
                        start_epochs=args.start_epochs,
                        level_epochs=args.level_epochs, heatmap_epochs=args.heatmap_epochs,
                        stages=tuple(args.prediction_stages) if args.prediction_stages else None)
    checkpoint = args.out.with_name(args.out.name + ".checkpoint")
    start = time.time()
    cascade, history = train_cascade(images, checkpoint, config, train, base=base, step1_from=step1,
                                     device=args.device)
    if step1 is not None:  # the records of step 1 and its start come with them
        history = [h for h in step1_info.get("history", []) if not h["stage"].startswith("corner")] + history
    if args.prediction_stages:
        cascade.set_prediction_stages(*args.prediction_stages)
    if rank == 0:
        info = {
            "name": args.out.stem,
            "trained": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "data": {"root": str(args.data), "folder": args.folder, "split": args.split,
                     "n_images": len(images) // 2, "flip_augmented": True,
                     "repaired": cleaning.repaired, "excluded": cleaning.excluded},
            "train": {**train.__dict__, "workers": world, "seconds": round(time.time() - start, 1),
                      "prediction_stages": cascade.prediction_stages.tolist(),
                      "finetuned_from": str(args.finetune) if args.finetune else None,
                      "step1_from": str(args.step1_from) if args.step1_from else None},
            "history": history,
        }
        save_model(args.out, cascade, info)
        checkpoint.unlink(missing_ok=True)
        print(f"wrote {args.out} ({len(images) // 2} images, {time.time() - start:.0f} s)")
    return 0
