"""Training the spine locator (method/spine_locator.py) on films whose T1 top, L5 bottom and spine column are known.

Two kinds of film teach it: the labelled tight crops (rows from their landmarks; T1's top and the column only)
and full-length films with the rows annotated by eye (`fullspine_annotations.json`: the 30 films of the AASCE
test release, read by one person). Synthetic full-length films (spinecascade.synthetic) added nothing on the
real ones (docs/experiments.md) and are left out. Every view changes the field of view the way clinics' films
differ from the crops: its top edge lies anywhere from well above the film (black or smeared padding) to just
above T1, its bottom edge anywhere from just below L5 to well below the film, its sides likewise, so the edges
say nothing of where the levels are; with gamma changes and mirrors. The targets are Gaussians half a level (the
T1-L5 span / 17) wide, so that tight and full-length films weigh alike.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from spinecascade.io.dataset import Sample
from spinecascade.io.images import load_image
from spinecascade.landmarks import N_VERTEBRAE
from spinecascade.method.spine_locator import SpineLocator, locator_input
from spinecascade.training.config import LocatorTraining

log = logging.getLogger(__name__)

STORED_ROWS = 1024  # films are kept at most this tall: a thumbnail has 384 rows


def annotations_path() -> Path:
    """The rows annotated by eye on the 30 full-length films of the AASCE test release
    (docs/fullspine-annotations.md)."""
    return Path(str(resources.files("spinecascade.training") / "fullspine_annotations.json"))


@dataclass
class LocatorExample:
    """A film (8-bit, at most STORED_ROWS tall) and its spine: T1's top row, L5's bottom row, the spine's column.

    A tight crop's bottom edge lies a fixed margin below L5 in every such film, so it would teach the locator to
    read L5's bottom off the edge: it teaches T1's top and the column only.
    """

    name: str
    film: np.ndarray
    t1_top: float
    l5_bottom: float
    x: float
    tight: bool = False


def _stored(name: str, film: np.ndarray, t1_top: float, l5_bottom: float, x: float,
            tight: bool = False) -> LocatorExample:
    scale = min(1.0, STORED_ROWS / film.shape[0])
    if scale < 1.0:
        size = (max(1, round(film.shape[1] * scale)), round(film.shape[0] * scale))
        film = cv2.resize(film, size, interpolation=cv2.INTER_AREA)
    return LocatorExample(name, film, t1_top * scale, l5_bottom * scale, x * scale, tight)


def labelled_examples(samples: list[Sample], progress: bool = True) -> list[LocatorExample]:
    """The tight crops with landmarks: T1's top is the mean row of its top corners, L5's bottom of its bottom ones
    (films where these are no spine in the film are left out)."""
    out = []
    for s in tqdm(samples, desc="locator: labelled films", unit="film", disable=not progress):
        lm = s.landmarks.reshape(N_VERTEBRAE, 4, 2)
        top, bottom = lm[0, :2].mean(axis=0), lm[-1, 2:].mean(axis=0)
        if not 0 <= top[1] < bottom[1] <= s.height:
            log.warning("%s: T1's top (row %.0f) and L5's bottom (row %.0f) are not a spine in the film; left out",
                        s.name, top[1], bottom[1])
            continue
        out.append(_stored(s.name, load_image(s.image_path).to_uint8(), top[1], bottom[1], (top[0] + bottom[0]) / 2,
                           tight=True))
    return out


def annotated_examples(folder: Path, annotations: Path | None = None, names: set[str] | None = None,
                       progress: bool = True) -> list[LocatorExample]:
    """The full-length films in `folder` that `annotations` has rows for (default: the folder's own
    `fullspine_annotations.json` where it has one, else ours), or only `names`."""
    own = folder / "fullspine_annotations.json"
    films = json.loads((annotations or (own if own.exists() else annotations_path())).read_text())["films"]
    out = []
    for name, truth in tqdm(sorted(films.items()), desc="locator: annotated films", unit="film",
                            disable=not progress):
        if names is not None and name not in names:
            continue
        path = folder / name
        if not path.exists():
            log.warning("%s: annotated but not in %s; left out", name, folder)
            continue
        top, bottom = truth["t1_top"], truth["l5_bottom"]
        out.append(_stored(name, load_image(path).to_uint8(), top["row"], bottom["row"], (top["x"] + bottom["x"]) / 2))
    return out


def draw_view(example: LocatorExample, rng: np.random.Generator, size: tuple[int, int],
              reframe: float = 0.85) -> tuple[np.ndarray, np.ndarray]:
    """A thumbnail of `example` with its field of view changed (with probability `reframe`), and its targets:
    T1's top row, L5's bottom row and the spine's column as fractions of the thumbnail, then the level (the span
    / 17) as a fraction of the thumbnail's height and of its width, and whether L5's row is to be learnt."""
    film = example.film
    height, width = film.shape
    t1, l5, x = example.t1_top, example.l5_bottom, example.x
    span = l5 - t1
    y0, y1, x0, x1 = 0.0, float(height), 0.0, float(width)
    if rng.random() < reframe:
        y0 = rng.uniform(min(-0.4 * span, t1 - 0.02 * span), t1 - 0.02 * span)
        y1 = rng.uniform(l5 + 0.02 * span, max(height + 0.4 * span, l5 + 0.02 * span))
        x0 = rng.uniform(min(-0.15 * span, x - 0.2 * span), x - 0.2 * span)
        x1 = rng.uniform(x + 0.2 * span, max(width + 0.15 * span, x + 0.2 * span))
    window = _window(film, int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1)), rng)
    gamma = float(np.exp(rng.normal(0.0, 0.25)))
    window = cv2.LUT(window, (255.0 * (np.arange(256) / 255.0) ** gamma).astype(np.uint8))
    x0, y0 = np.floor(x0), np.floor(y0)
    win_h, win_w = window.shape
    target = np.array([(t1 + 0.5 - y0) / win_h, (l5 + 0.5 - y0) / win_h, (x + 0.5 - x0) / win_w,
                       span / N_VERTEBRAE / win_h, span / N_VERTEBRAE / win_w, float(not example.tight)])
    if rng.random() < 0.5:
        window = np.ascontiguousarray(window[:, ::-1])
        target[2] = 1.0 - target[2]
    return locator_input(window, size), target


def _window(film: np.ndarray, x0: int, y0: int, x1: int, y1: int, rng: np.random.Generator) -> np.ndarray:
    """film[y0:y1, x0:x1], where the window leaves the film padded black or with the edge smeared."""
    height, width = film.shape
    inside = film[max(0, y0) : min(height, y1), max(0, x0) : min(width, x1)]
    pads = (max(0, -y0), max(0, y1 - height), max(0, -x0), max(0, x1 - width))
    if not any(pads):
        return np.ascontiguousarray(inside)
    border = cv2.BORDER_CONSTANT if rng.random() < 0.7 else cv2.BORDER_REPLICATE
    return cv2.copyMakeBorder(inside, *pads, border, value=0)


def gaussian_targets(centres: torch.Tensor, sigmas: torch.Tensor, n: int) -> torch.Tensor:
    """Distributions over `n` cells, Gaussian about `centres` (fractions) with `sigmas` (fractions), (..., n)."""
    cells = (torch.arange(n, dtype=centres.dtype, device=centres.device) + 0.5) / n
    weights = torch.exp(-0.5 * ((cells - centres[..., None]) / sigmas[..., None]) ** 2)
    return weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def locator_loss(locator: SpineLocator, thumbnails: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the row and column distributions against Gaussians half a level wide (at least a cell)
    about the true T1 top, L5 bottom (not on tight crops) and column."""
    rows, columns = locator(thumbnails)
    n_rows, n_columns = rows.shape[2], columns.shape[1]
    row_sigma = torch.maximum(0.5 * targets[:, 3], torch.full_like(targets[:, 3], 1.0 / n_rows))
    column_sigma = torch.maximum(0.5 * targets[:, 4], torch.full_like(targets[:, 4], 1.0 / n_columns))
    row_targets = gaussian_targets(targets[:, :2], row_sigma[:, None].expand(-1, 2), n_rows)
    column_targets = gaussian_targets(targets[:, 2], column_sigma, n_columns)
    row_losses = -(row_targets * rows.clamp_min(1e-12).log()).sum(dim=2)
    row_loss = row_losses[:, 0].mean() + (row_losses[:, 1] * targets[:, 5]).sum() / targets[:, 5].sum().clamp_min(1)
    column_loss = -(column_targets * columns.clamp_min(1e-12).log()).sum(dim=1).mean()
    return row_loss + column_loss


def fit_spine_locator(locator: SpineLocator, examples: list[LocatorExample], settings: LocatorTraining,
                      repeats: list[int] | None = None, seed: int = 0, progress: bool = True) -> list[float]:
    """Train `locator` in place (on its device); each example is drawn `repeats[i]` times an epoch (default once).
    Returns the mean loss of each epoch."""
    device = next(locator.parameters()).device
    size = locator.config.thumbnail
    counts = np.asarray(repeats if repeats is not None else [1] * len(examples))
    pool = np.repeat(np.arange(len(examples)), counts)
    batches = -(-len(pool) // settings.batch_images)
    optimizer = torch.optim.AdamW(locator.parameters(), lr=settings.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.learning_rate,
                                                   total_steps=max(settings.epochs * batches, 3), pct_start=0.1)
    history = []
    for epoch in range(settings.epochs):
        locator.train()
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(pool)
        total = 0.0
        bar = tqdm(range(batches), desc=f"spine locator epoch {epoch + 1}/{settings.epochs}", leave=False,
                   unit="batch", disable=not progress)
        for b in bar:
            views = [draw_view(examples[i], rng, size) for i in order[b * settings.batch_images :
                                                                         (b + 1) * settings.batch_images]]
            thumbs = torch.from_numpy(np.stack([v[0] for v in views]))[:, None].to(device)
            targets = torch.from_numpy(np.stack([v[1] for v in views])).float().to(device)
            loss = locator_loss(locator, (thumbs - 0.5) / 0.25, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(views)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        history.append(total / len(pool))
        log.info("spine locator epoch %d/%d: loss %.4f", epoch + 1, settings.epochs, history[-1])
    locator.eval()
    return history
