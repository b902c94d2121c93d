"""Step-1 centre MSE after each stage, for one or more models: the paper's Fig. 7a (PCA or raw offsets).

The centre MSE is Eq. 13 over the 17 vertebra centres (the means of the ground-truth corners), one view, no mirror
averaging, so that models differing only in their step 1 compare on the same footing.

Run: python benchmarks/centre_stages.py ../shared/aasce MODEL [MODEL ...] [--split consistent-test]
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


def centre_mse_per_stage(model: Path, data: Path, split: str) -> np.ndarray:
    """(n_images, n_stages + 1): stage 0 is the mean-shape start."""
    cascade, _ = load_model(model)
    cascade.eval()
    rows = []
    with torch.inference_mode():
        for sample in tqdm(AasceDataset(data).split(split), desc=model.name, unit="image"):
            image = load_prepared(sample.name, sample.image_path, sample.landmarks, cascade.config.preprocess)
            u8, sizes = pad_batch([image.image])
            pixels = normalise_pixels(u8)
            truth = image.landmarks.mean(axis=1)
            rows.append([normalised_mse(cascade.run_centres(pixels, sizes, stages)[0].numpy(), truth, *image.size)
                         for stages in range(cascade.config.n_stages + 1)])
    return np.array(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--split", choices=SPLITS, default="consistent-test")
    args = parser.parse_args()
    for model in args.models:
        mse = centre_mse_per_stage(model, args.data, args.split)
        stages = "  ".join(f"stage {k}: {m:.3e}" for k, m in enumerate(mse.mean(axis=0)))
        median = np.median(mse[:, -1])
        print(f"{model.name}: centre MSE over {len(mse)} images  {stages}  (last stage median {median:.3e})")


if __name__ == "__main__":
    main()
