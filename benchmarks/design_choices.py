"""Measurements behind the choices the paper leaves open, on the 431 consistent-split training images only.

1. Centred or uncentred covariance (Eq. 2), and Q for step 2: how much of the ground-truth offsets of the first
   stage of each step the first Q components reconstruct (residual RMS in resized pixels).
2. Crop orientation of step 1: "80x192 resized to 48x80" read as width x height or height x width. One stage
   is trained briefly on the first 381 images (mirrors included) and scored on images 382-431.
3. The shape constraint itself: the same short step-1 stage regressing Q = 8 PCA coefficients or the 34 raw
   coordinate offsets (the paper's ablation, Fig. 7a, at a much smaller training budget).
4. The learning-rate schedule: the step-1 stage with the training warps, its learning rate halved after every
   epoch (the paper) or multiplied by 0.9 (run with --epochs 8, the paper's epochs per stage).
5. The strength of the training warps: the same step-1 stage (lr x0.9 per epoch) with the warps' geometric
   ranges multiplied by each of --warp-strengths.
6. How much a step-1 crop sees: the same step-1 stage (warps, lr x0.9) with taller crops, each [crop, patch]
   (width, height) of --context (compare with the x1 row of 5).

Run: python benchmarks/design_choices.py ../shared/aasce [--epochs 2]
     [--only pca|crop|geometry|schedule|warps|context] [--context '[[192,160],[80,96]]']
     [--lr-decays 0.5 0.9] [--warp-strengths 1 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from spinecascade.io.dataset import AasceDataset
from spinecascade.method.cascade import Cascade, CascadeConfig, StepConfig
from spinecascade.method.samples import load_prepared, with_flips
from spinecascade.training.config import StageTraining, TrainConfig
from spinecascade.training.data import TrainingSet
from spinecascade.training.loop import TrainingLoop
from spinecascade.training.phases import StagePhase, fit_mean_shapes, mean_shape_centres


def pca_residuals(offsets: np.ndarray, max_q: int) -> dict:
    x = offsets.reshape(len(offsets), -1)
    out = {}
    for centred in (False, True):
        mean = x.mean(axis=0) if centred else 0.0
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        for q in range(1, max_q + 1):
            w = vt[:q]
            rec = (x - mean) @ w.T @ w + mean
            out[f"{'centred' if centred else 'uncentred'} Q={q}"] = float(np.sqrt(np.mean((x - rec) ** 2)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--only", choices=("geometry", "crop", "pca", "schedule", "warps", "context"),
                        default=None)
    parser.add_argument("--lr-decays", type=float, nargs="+", default=[0.5, 0.9],
                        help="learning-rate factors per epoch to compare (schedule)")
    parser.add_argument("--warp-strengths", type=float, nargs="+", default=[1.0, 2.0],
                        help="multipliers of the warps' geometric ranges to compare (warps)")
    parser.add_argument("--context", type=json.loads, nargs="+", default=[[[192, 160], [80, 96]]],
                        help="step-1 [crop, patch] sizes (width, height) as JSON to compare (context)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    torch.manual_seed(0)
    samples = AasceDataset(args.data).split("consistent-train")
    config = CascadeConfig()
    images = [load_prepared(s.name, s.image_path, s.landmarks, config.preprocess) for s in tqdm(samples, "load")]
    train_imgs, val_imgs = with_flips(images[:381]), images[381:]

    cpu = torch.device("cpu")
    train_set, val_set = TrainingSet(train_imgs, cpu), TrainingSet(val_imgs, cpu)
    cascade = Cascade(config)
    fit_mean_shapes(cascade, train_set)
    lm = train_set.corners
    s0 = mean_shape_centres(cascade, train_set)[:, 0]
    centres = lm.mean(axis=2)
    corner_offsets = lm - (centres[:, :, None] + cascade.mean_corner_offsets.numpy()[None])
    report = {
        "step1_offsets_rms_px": float(np.sqrt(np.mean((centres - s0) ** 2))),
        "step1_pca_residual_rms_px": pca_residuals(centres - s0, 10),
        "step2_offsets_rms_px": float(np.sqrt(np.mean(corner_offsets**2))),
        "step2_pca_residual_rms_px": pca_residuals(corner_offsets.reshape(-1, 8), 8),
    }
    if args.only in (None, "geometry"):
        print(json.dumps(report, indent=1))

    val_lm = val_set.centres[:, 0]
    paper = TrainConfig(stages=StageTraining(epochs=args.epochs, batch_images=4))

    def stages(**changes) -> StageTraining:
        return replace(paper.stages, **changes)

    variants = []
    if args.only in (None, "crop"):
        variants += [("width x height", (192, 80), (80, 48), 8, paper),
                     ("height x width", (80, 192), (48, 80), 8, paper)]
    if args.only in (None, "pca"):
        variants += [("no PCA, raw offsets", (192, 80), (80, 48), None, paper)]
        if args.only == "pca":
            variants.insert(0, ("PCA Q=8", (192, 80), (80, 48), 8, paper))
    if args.only in (None, "schedule"):
        variants += [(f"warps, lr x{decay} per epoch", (192, 80), (80, 48), 8,
                      replace(paper, augment=True, stages=stages(lr_decay=decay))) for decay in args.lr_decays]
    if args.only in (None, "warps"):
        variants += [(f"warps x{strength}, lr x0.9 per epoch", (192, 80), (80, 48), 8,
                      replace(paper, augment=True, stages=stages(lr_decay=0.9, warp_strength=strength)))
                     for strength in args.warp_strengths]
    if args.only == "context":
        variants += [("warps, lr x0.9 per epoch, taller crops", crop, patch, 8,
                      replace(paper, augment=True, stages=stages(lr_decay=0.9))) for crop, patch in args.context]
    vs = np.array([i.size for i in val_imgs], float)[:, None]
    for label, crop, patch, q, train in variants:
        torch.manual_seed(0)
        cas = Cascade(CascadeConfig(centre=StepConfig(crop, patch, q, 2), n_stages=1))
        fit_mean_shapes(cas, train_set)
        stage = StagePhase(cas, train_set, train, "centre", 0, fit_shape_model=True)
        with tempfile.TemporaryDirectory() as scratch:
            TrainingLoop(cas, train_set, train, Path(scratch) / "checkpoint", "", phases=[stage]).run()
        vstart = mean_shape_centres(cas, val_set)
        vpred = StagePhase(cas, val_set, train, "centre", 0, fit_shape_model=False).run(vstart)
        before = float(np.mean(np.sum(((vstart[:, 0] - val_lm) / vs) ** 2, axis=-1)))
        after = float(np.mean(np.sum(((vpred[:, 0] - val_lm) / vs) ** 2, axis=-1)))
        print(f"{label}: crop {crop} -> patch {patch}, Q={q}: held-out centre MSE {before:.3e} -> {after:.3e}")


if __name__ == "__main__":
    main()
