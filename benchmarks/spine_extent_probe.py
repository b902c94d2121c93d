"""A probe for issue 28: can a small network find the top of T1 and the bottom of L5 on a whole film?

Trained on the consistent split's training films (tight crops, rows from their labels) together with synthetic
full-length films (spinecascade.synthetic.make_full_length: skull, neck, ribs, pelvis, femurs, with exact rows),
each film resized to --size (default 96 x 256 px); the network gives, for each row of its output (a quarter of the
input's rows), a logit for "T1 top here" and one for "L5 bottom here", and each row is a soft-argmax. Scored on
the 50 consistent-test films and on the 30 full-length films against the rows annotated by eye
(fullspine_annotations.json), in levels (the T1-L5 span / 17). An experiment, not part of the product.

Run: python benchmarks/spine_extent_probe.py ../shared/aasce ../shared/fullspine [--synthetic 400] [--epochs 15]
     [--size 96 256]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from spinecascade.io.dataset import AasceDataset
from spinecascade.io.images import load_image
from spinecascade.synthetic import make_full_length

ANNOTATIONS = Path(__file__).with_name("fullspine_annotations.json")


def thumbnail(film: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    small = cv2.resize(film, size, interpolation=cv2.INTER_AREA)
    return cv2.createCLAHE(2.0, (4, 4)).apply(small).astype(np.float32) / 255.0


class ExtentNet(nn.Module):
    """Convolutions that keep the rows (64 at the end), the columns pooled, then dilated 1-D layers along the rows."""

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: tuple[int, int]) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True))

        self.features = nn.Sequential(block(1, 16, (2, 2)), block(16, 32, (2, 2)), block(32, 48, (1, 2)),
                                      block(48, 64, (1, 2)), block(64, 64, (1, 1)))
        self.along = nn.Sequential(*(nn.Sequential(nn.Conv1d(64, 64, 3, 1, d, d), nn.ReLU(inplace=True))
                                     for d in (1, 2, 4, 8, 16)))
        self.logits = nn.Conv1d(64, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rows (B, 2) of T1's top and L5's bottom as fractions of the film's height."""
        features = self.features(x).mean(dim=3)
        logits = self.logits(self.along(features))
        rows = torch.softmax(logits, dim=2)
        centres = (torch.arange(logits.shape[2], dtype=x.dtype) + 0.5) / logits.shape[2]
        return (rows * centres).sum(dim=2)


def aasce(root: Path, split: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    films, rows = [], []
    for sample in tqdm(AasceDataset(root).split(split), desc=split, unit="film"):
        films.append(thumbnail(load_image(sample.image_path).to_uint8(), size))
        lm = sample.landmarks.reshape(17, 4, 2)
        rows.append([lm[0, :2, 1].mean() / sample.height, lm[16, 2:, 1].mean() / sample.height])
    return np.stack(films), np.array(rows)


def synthetic(n: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    films, rows = [], []
    for seed in tqdm(range(n), desc="synthetic", unit="film"):
        film = make_full_length(10_000 + seed, height=int(np.random.default_rng(seed).integers(700, 1400)))
        films.append(thumbnail(film.image, size))
        rows.append([film.t1_top_row / film.height, film.l5_bottom_row / film.height])
    return np.stack(films), np.array(rows)


def fullspine(folder: Path, size: tuple[int, int]) -> tuple[list[str], np.ndarray, np.ndarray]:
    names, films, rows = [], [], []
    for name, truth in sorted(json.loads(ANNOTATIONS.read_text())["films"].items()):
        film = load_image(folder / name).to_uint8()
        names.append(name)
        films.append(thumbnail(film, size))
        rows.append([truth["t1_top"]["row"] / film.shape[0], truth["l5_bottom"]["row"] / film.shape[0]])
    return names, np.stack(films), np.array(rows)


def predict(model: ExtentNet, films: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(films)[:, None]).numpy()


def misses_in_levels(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    level = (truth[:, 1] - truth[:, 0]) / 17
    return (found - truth) / level[:, None]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("aasce", type=Path)
    parser.add_argument("fullspine", type=Path)
    parser.add_argument("--synthetic", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--size", type=int, nargs=2, default=(96, 256), metavar=("WIDTH", "HEIGHT"))
    args = parser.parse_args()
    size = tuple(args.size)
    logging.basicConfig(level=logging.INFO)
    torch.manual_seed(0)
    train_x, train_y = aasce(args.aasce, "consistent-train", size)
    synth_x, synth_y = synthetic(args.synthetic, size)
    test_x, test_y = aasce(args.aasce, "consistent-test", size)
    names, full_x, full_y = fullspine(args.fullspine, size)
    x = torch.from_numpy(np.concatenate([train_x, train_x[:, :, ::-1], synth_x]).copy())[:, None]
    y = torch.from_numpy(np.concatenate([train_y, train_y, synth_y])).float()
    model = ExtentNet()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = args.epochs * -(-len(x) // 16)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=steps)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x))
        total = 0.0
        for first in range(0, len(x), 16):
            idx = order[first : first + 16]
            gain = torch.exp(torch.randn(len(idx), 1, 1, 1) * 0.2)  # contrast
            loss = F.smooth_l1_loss(model((x[idx] * gain).clamp(0, 1)), y[idx], beta=0.01)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
        logging.info("epoch %d: loss %.5f", epoch + 1, total / len(x))
    for label, films, truth in (("consistent test", test_x, test_y), ("full-length", full_x, full_y)):
        miss = misses_in_levels(predict(model, films), truth)
        placed = int((np.abs(miss) < 1).all(axis=1).sum())
        print(f"{label}: median |miss| T1 {np.median(np.abs(miss[:, 0])):.2f}, L5 {np.median(np.abs(miss[:, 1])):.2f} "
              f"levels; both within a level on {placed} of {len(films)}")
    for name, (t1, l5) in zip(names, misses_in_levels(predict(model, full_x), full_y)):
        print(f"  {name:22s} T1 {t1:+5.1f} L5 {l5:+5.1f}")


if __name__ == "__main__":
    main()
