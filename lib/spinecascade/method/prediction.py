"""Prediction with a loaded cascade: 68 corners, centres, Cobb angles, a mirror-based uncertainty and the review
flag (measurement/quality.py).

Where the model has a spine locator (method/spine_locator.py), it finds T1's top, L5's bottom and the spine's
column on the whole film first, and the cascade reads a crop framed like its training films around them; the
answer is mapped back to the film's pixels.

Each image is predicted together with its mirror (one batch); the mirror's answer is mapped back and the two are
averaged. Their disagreement, in original pixels, is the uncertainty: large where the network is unsure, e.g.
where ribs or low contrast hide an endplate. The active-learning strategy ranks images by it.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from spinecascade.io.images import Radiograph, load_image
from spinecascade.io.labels import LandmarkLabel
from spinecascade.landmarks import (
    N_POINTS,
    VERTEBRAE,
    SpineExtent,
    as_landmarks,
    centres,
    flip_horizontal,
    on_larger_grid,
)
from spinecascade.measurement.cobb import CobbResult, cobb_angles
from spinecascade.measurement.quality import Quality, assess
from spinecascade.method.cascade import Cascade, normalise_pixels
from spinecascade.method.encoder import fold_batchnorm
from spinecascade.method.model_file import default_model_path, load_model, read_metadata
from spinecascade.method.preprocessing import Resized, preprocess
from spinecascade.method.samples import pad_batch
from spinecascade.method.spine_locator import framing_window

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "bfloat16")

def encoder_dtype(precision: str, device: torch.device) -> torch.dtype:
    """bfloat16 encoders are faster on CPUs with native bfloat16 (AVX-512 BF16, AMX) but move the landmarks by a
    few pixels (docs/experiments.md has the figures), so float32 stays the default."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "bfloat16" and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        log.warning("this CPU has no native bfloat16: bfloat16 encoders will be emulated and slower than float32")
    return getattr(torch, precision)


@dataclass
class Prediction:
    landmarks: np.ndarray  # (17, 4, 2) original pixels
    centres: np.ndarray  # (17, 2)
    cobb: CobbResult
    uncertainty: np.ndarray  # (68,) pixels
    quality: Quality  # the review flag
    width: int
    height: int
    spine: SpineExtent | None = None  # what the spine locator found, where the model has one
    window: tuple[int, int, int, int] | None = None  # the crop (x0, y0, x1, y1) the cascade read
    source: str = ""
    model: dict = field(default_factory=dict)
    timings_ms: dict = field(default_factory=dict)

    @property
    def image_uncertainty(self) -> float:
        return float(self.uncertainty.mean())

    def to_label(self, image_name: str | None = None, spacing_mm: tuple[float, float] | None = None) -> LandmarkLabel:
        """Our JSON label, with centres, angles, uncertainty, model and timings as extra keys."""
        extra = {
            "centres": [{"vertebra": v, "x": float(x), "y": float(y)}
                        for v, (x, y) in zip(VERTEBRAE, self.centres)],
            "cobb": self.cobb.as_dict(),
            "uncertainty": {"unit": "pixel", "per_landmark": [float(u) for u in self.uncertainty],
                            "image": self.image_uncertainty},
            "quality": self.quality.as_dict(),
            **({"spine": {**self.spine.as_dict(), "crop": list(self.window)}} if self.spine is not None else {}),
            "model": self.model,
            "timings_ms": self.timings_ms,
        }
        return LandmarkLabel(self.landmarks, self.width, self.height, image_name or self.source or None,
                             spacing_mm, extra)


class Predictor:
    """Loads a model once; predicts single images or batches on the CPU or a GPU."""

    def __init__(self, model: str | Path | Cascade | None = None, device: str | None = None,
                 mirror: bool = True, precision: str = "float32") -> None:
        if isinstance(model, Cascade):  # folding batch norm below must not change the caller's model
            self.cascade, self.info, self.version = copy.deepcopy(model), {}, "in-memory"
        else:
            path = Path(model) if model else default_model_path()
            self.cascade, self.info = load_model(path)
            self.version = read_metadata(path)["sha256"][:12]
            log.info("loaded model %s (version %s)", path, self.version)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cascade = fold_batchnorm(self.cascade.eval()).to(self.device)
        dtype = encoder_dtype(precision, self.device)
        self.precision = precision
        for part in [*self.cascade.centre_stages, *self.cascade.corner_stages, self.cascade.film_start]:
            if part is not None:
                part.encoder.to(dtype)
        self.mirror = mirror
        self.images_per_pass = 16 if self.device.type == "cuda" else 2
        # A JPEG is decoded at the smallest scale that keeps this many rows: the crop the cascade reads is at least
        # half the film (0.52 on the 30 full-length films), so it keeps the rows the cascade resizes it to.
        self.decode_rows = 2 * self.cascade.config.preprocess.height

    @property
    def model_description(self) -> dict:
        return {"version": self.version, "precision": self.precision,
                **{k: v for k, v in self.info.items() if k in ("name", "trained", "data")}}

    def load(self, path: str | Path) -> Radiograph:
        """The film as this predictor reads it: a large JPEG decoded at a reduced size (`decode_rows`)."""
        return load_image(path, min_rows=self.decode_rows)

    def predict(self, image: Radiograph | str | Path) -> Prediction:
        return self.predict_batch([image])[0]

    def predict_batch(self, images: list[Radiograph | str | Path]) -> list[Prediction]:
        t0 = time.perf_counter()
        films, files = [], []
        for img in images:  # one film's float pixels at a time: a full-length film holds 50 MB of them
            radiograph = img if isinstance(img, Radiograph) else self.load(img)
            films.append(radiograph.to_uint8())
            files.append((radiograph.source, radiograph.downscale, radiograph.size_in_file))
            del radiograph
        t1 = time.perf_counter()
        located = [self._locate(film) for film in films]
        resized = [preprocess(film[y0:y1, x0:x1], self.cascade.config.preprocess)
                   for film, (_, (x0, y0, x1, y1)) in zip(films, located)]
        del films
        batch = []
        for r in resized:
            batch.append(r.image)
            if self.mirror:
                batch.append(np.ascontiguousarray(r.image[:, ::-1]))
        t2 = time.perf_counter()
        corners = self._run(batch)
        t3 = time.perf_counter()
        per = 2 if self.mirror else 1
        out = [self._finish(file, res, corners[k * per : (k + 1) * per], *found)
               for k, (file, res, found) in enumerate(zip(files, resized, located))]
        t4 = time.perf_counter()
        n = len(images)
        timings = {"decode": (t1 - t0) * 1e3 / n, "preprocess": (t2 - t1) * 1e3 / n,
                   "network": (t3 - t2) * 1e3 / n, "cobb": (t4 - t3) * 1e3 / n, "total": (t4 - t0) * 1e3 / n}
        for p in out:
            p.timings_ms = {k: round(v, 2) for k, v in timings.items()}
        return out

    def _locate(self, film: np.ndarray) -> tuple[SpineExtent | None, tuple[int, int, int, int]]:
        """The spine locator's finding and the crop the cascade reads (the whole film without a locator)."""
        height, width = film.shape
        locator = self.cascade.spine_locator
        if locator is None:
            return None, (0, 0, width, height)
        extent = locator.locate(film)
        return extent, framing_window(extent, width, height, locator.config)

    @torch.inference_mode()
    def _run(self, images: list[np.ndarray]) -> np.ndarray:
        # Bounded passes: a CPU gains nothing from bigger batches, and 68 crops an image add up in memory.
        out = []
        for start in range(0, len(images), self.images_per_pass):
            u8, sizes = pad_batch(images[start : start + self.images_per_pass])
            corners, _ = self.cascade(normalise_pixels(u8.to(self.device)), sizes.to(self.device))
            out.append(corners.double().cpu().numpy())
        return np.concatenate(out)

    def _finish(self, file: tuple[str, int, tuple[int, int]], resized: Resized, corners: np.ndarray,
                spine: SpineExtent | None, window: tuple[int, int, int, int]) -> Prediction:
        """The answer in the file's pixels, from the corners found in the crop `window` of a film decoded at
        1/`downscale` of the file's size."""
        source, downscale, (width, height) = file
        width_r = resized.image.shape[1]
        views = [resized.to_original(corners[0])]
        if self.mirror:
            views.append(resized.to_original(flip_horizontal(corners[1], width_r)))
        stacked = on_larger_grid(np.stack(views) + np.array(window[:2], float), downscale)
        if downscale > 1:
            window = (window[0] * downscale, window[1] * downscale, min(window[2] * downscale, width),
                      min(window[3] * downscale, height))
            spine = spine.scaled(downscale) if spine is not None else None
        landmarks = as_landmarks(stacked.mean(axis=0))
        if self.mirror:
            uncertainty = np.linalg.norm((stacked[0] - stacked[1]).reshape(N_POINTS, 2), axis=1)
        else:
            uncertainty = np.zeros(N_POINTS)
        return Prediction(
            landmarks=landmarks,
            centres=centres(landmarks),
            cobb=cobb_angles(landmarks, height),
            uncertainty=uncertainty,
            quality=assess(landmarks, uncertainty if self.mirror else None, width, height,
                           spine, (window[1], window[3])),
            width=width,
            height=height,
            spine=spine,
            window=window,
            source=source,
            model=self.model_description,
        )
