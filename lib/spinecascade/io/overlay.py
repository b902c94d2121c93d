"""A PNG of the X-ray with the 68 corners, the end-vertebra endplates and the three angles drawn on it, and where
given the crop the cascade read and the review flag's reasons."""

from __future__ import annotations

import textwrap
from pathlib import Path

import cv2
import numpy as np

from spinecascade.io.atomic import atomic_write_bytes
from spinecascade.landmarks import as_landmarks
from spinecascade.measurement.cobb import CobbResult

_COLOURS = {"PT": (255, 170, 0), "MT": (0, 200, 255), "TL": (80, 255, 80)}  # BGR


def render_overlay(image_u8: np.ndarray, landmarks: np.ndarray, cobb: CobbResult, max_height: int = 1200,
                   crop: tuple[int, int, int, int] | None = None, review: list[str] | None = None) -> np.ndarray:
    """BGR picture, scaled down to at most `max_height` rows so that the file stays small; `crop` (x0, y0, x1, y1)
    is drawn as a grey frame, `review` (the flag's reasons) as red lines at the bottom."""
    scale = min(1.0, max_height / image_u8.shape[0])
    small = cv2.resize(image_u8, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image_u8
    canvas = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
    pts = as_landmarks(landmarks) * scale
    thick = max(1, round(canvas.shape[0] / 500))
    if crop is not None and tuple(crop) != (0, 0, image_u8.shape[1], image_u8.shape[0]):
        x0, y0, x1, y1 = (round(v * scale) for v in crop)
        cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), (200, 200, 200), thick, cv2.LINE_AA)
    for name, angle in zip(("PT", "MT", "TL"), cobb.angles):
        colour = _COLOURS[name]
        upper, lower = pts[angle.upper], pts[angle.lower]
        for a, b in ((upper[0], upper[1]), (lower[2], lower[3])):
            direction = (b - a) / max(np.linalg.norm(b - a), 1e-9)
            p, q = a - direction * 40 * scale * 3, b + direction * 40 * scale * 3
            cv2.line(canvas, tuple(np.round(p).astype(int)), tuple(np.round(q).astype(int)), colour, thick, cv2.LINE_AA)
    for x, y in pts.reshape(-1, 2):
        cv2.circle(canvas, (round(x), round(y)), thick + 1, (0, 0, 255), -1, cv2.LINE_AA)
    font = max(0.4, canvas.shape[0] / 1600)
    for row, angle in enumerate(cobb.angles):
        upper, lower = angle.end_vertebrae
        text = f"{angle.name} {angle.degrees:5.1f} deg  {upper}-{lower}"
        org = (8, int(24 * font * 1.6 * (row + 1)))
        cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, font, _COLOURS[angle.name], thick, cv2.LINE_AA)
    small_font = 0.6 * font
    per_line = max(20, canvas.shape[1] // cv2.getTextSize("x", cv2.FONT_HERSHEY_SIMPLEX, small_font, thick)[0][0] - 2)
    lines = ["REVIEW NEEDED", *(part for reason in review or [] for part in textwrap.wrap(reason, per_line))]
    lines = lines if review else []
    for row, text in enumerate(reversed(lines)):
        org = (8, int(canvas.shape[0] - 8 - 24 * small_font * 1.5 * row))
        cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, small_font, (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, small_font, (60, 60, 255), thick, cv2.LINE_AA)
    return canvas


def write_overlay(path: str | Path, image_u8: np.ndarray, landmarks: np.ndarray, cobb: CobbResult,
                  crop: tuple[int, int, int, int] | None = None, review: list[str] | None = None) -> None:
    ok, data = cv2.imencode(".png", render_overlay(image_u8, landmarks, cobb, crop=crop, review=review))
    if not ok:
        raise OSError(f"{path}: could not encode the overlay")
    atomic_write_bytes(path, data.tobytes())
