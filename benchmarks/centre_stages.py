"""Step-1 centre MSE after each stage, for one or more models: the paper's Fig. 7a (PCA or raw offsets).

The centre MSE is Eq. 13 over the 17 vertebra centres (the means of the ground-truth corners), one view, no mirror
averaging, so that models differing only in their step 1 compare on the same footing. Its stage 0 is step 1's
start: the film start where the model has one, else the mean shape. With --corners, also the corner MSE (Eq. 13
over the 68 corners, one view) at step 2's start (the mean corner layout at the centres after the step-1 stages a
prediction runs, turned to the spine where the model does that) and after each of its stages.

Run: python benchmarks/centre_stages.py ../shared/aasce MODEL [MODEL ...] [--split consistent-test] [--corners]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from spinecascade.io.dataset import SPLITS, AasceDataset
from spinecascade.measurement.metrics import normalised_mse
from spinecascade.method.cascade import normalise_pixels
from spinecascade.method.model_file import load_model
from spinecascade.method.samples import load_prepared, pad_batch


def mse_per_stage(model: Path, data: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Centre and corner MSE, each (n_images, n_stages + 1): stage 0 is the step's start."""
    cascade, _ = load_model(model)
    cascade.eval()
    centre_rows, corner_rows = [], []
    stages = range(cascade.config.n_stages + 1)
    with torch.inference_mode():
        for sample in tqdm(AasceDataset(data).split(split), desc=model.name, unit="image"):
            image = load_prepared(sample.name, sample.image_path, sample.landmarks, cascade.config.preprocess)
            u8, sizes = pad_batch([image.image])
            pixels = normalise_pixels(u8)
            centres = [cascade.run_centres(pixels, sizes, n) for n in stages]
            centre_rows.append([normalised_mse(c[0].numpy(), image.landmarks.mean(axis=1), *image.size)
                                for c in centres])
            used = centres[cascade.prediction_stages[0]]  # the centres a prediction hands to step 2
            corner_rows.append([normalised_mse(cascade.run_corners(pixels, used, n)[0].numpy(),
                                               image.landmarks, *image.size) for n in stages])
    return np.array(centre_rows), np.array(corner_rows)


def _line(name: str, what: str, mse: np.ndarray) -> str:
    stages = "  ".join(f"stage {k}: {m:.3e}" for k, m in enumerate(mse.mean(axis=0)))
    return f"{name}: {what} MSE over {len(mse)} images  {stages}  (last stage median {np.median(mse[:, -1]):.3e})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--split", choices=SPLITS, default="consistent-test")
    parser.add_argument("--corners", action="store_true", help="also step 2, from its start through its stages")
    args = parser.parse_args()
    for model in args.models:
        centres, corners = mse_per_stage(model, args.data, args.split)
        print(_line(model.name, "centre", centres))
        if args.corners:
            print(_line(model.name, "corner", corners))


if __name__ == "__main__":
    main()
