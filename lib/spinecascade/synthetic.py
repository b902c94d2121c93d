"""Synthetic spine radiographs with exact landmarks, for tests and demos without patient data.

The geometry follows the landmark model: 17 vertebrae whose size grows from T1 to L5, stacked along a
midline bent into a C or S curve of a chosen Cobb angle, each vertebra tilted with the local midline. Rendering
adds what makes real films hard: soft-tissue haze, rib-like arcs over the thoracic spine, contrast changes and
noise. Everything is drawn from one seed, so an image and its landmarks are reproducible bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from spinecascade.landmarks import N_VERTEBRAE

_SUBPIXEL_BITS = 4


@dataclass(frozen=True)
class SyntheticSpine:
    image: np.ndarray  # uint8 (height, width)
    landmarks: np.ndarray  # (17, 4, 2) pixel (x, y)
    curve: str
    target_cobb: float


def _midline(t: np.ndarray, curve: str, amplitude: float, phase_sign: float) -> tuple[np.ndarray, np.ndarray]:
    """Lateral offset and its derivative along the spine for t in [0, 1]."""
    if curve == "S":
        return phase_sign * amplitude * np.sin(2 * np.pi * t), phase_sign * amplitude * 2 * np.pi * np.cos(
            2 * np.pi * t
        )
    return phase_sign * amplitude * np.sin(np.pi * t), phase_sign * amplitude * np.pi * np.cos(np.pi * t)


def spine_geometry(
    rng: np.random.Generator, width: int, height: int, curve: str, cobb_degrees: float, size_scale: float
) -> np.ndarray:
    """The 68 corners of a spine whose midline bends by about `cobb_degrees` between its end vertebrae."""
    top = height * rng.uniform(0.08, 0.14)
    bottom = height * rng.uniform(0.84, 0.9)
    length = bottom - top
    # Vertebral body height grows about 1.6x from T1 to L5; discs take a share of each level.
    growth = np.linspace(1.0, 1.6, N_VERTEBRAE) * rng.uniform(0.95, 1.05, N_VERTEBRAE)
    level = length * growth / growth.sum()
    body_h = level * rng.uniform(0.68, 0.78) * size_scale
    body_w = body_h * rng.uniform(1.35, 1.6) * np.linspace(1.0, 1.15, N_VERTEBRAE)
    t = (np.cumsum(level) - level / 2) / length
    half_angle = np.radians(cobb_degrees) / 2
    amplitude = length * np.tan(half_angle) / (2 * np.pi if curve == "S" else np.pi)
    offset, slope = _midline(t, curve, amplitude, rng.choice([-1.0, 1.0]))
    centre_x = width / 2 + rng.uniform(-0.04, 0.04) * width + offset
    centre_y = top + t * length
    tilt = -np.arctan(slope / length) + rng.normal(0, np.radians(1.0), N_VERTEBRAE)
    wedge = rng.normal(0, 0.04, N_VERTEBRAE)
    corners_local = np.stack(
        [
            np.stack([-body_w / 2, -body_h / 2 * (1 - wedge)], -1),
            np.stack([body_w / 2, -body_h / 2 * (1 + wedge)], -1),
            np.stack([-body_w / 2, body_h / 2 * (1 - wedge)], -1),
            np.stack([body_w / 2, body_h / 2 * (1 + wedge)], -1),
        ],
        axis=1,
    )
    cos, sin = np.cos(tilt)[:, None], np.sin(tilt)[:, None]
    x = corners_local[..., 0] * cos - corners_local[..., 1] * sin
    y = corners_local[..., 0] * sin + corners_local[..., 1] * cos
    return np.stack([x + centre_x[:, None], y + centre_y[:, None]], axis=-1)


def _fill(canvas: np.ndarray, polygon: np.ndarray, value: float) -> None:
    pts = np.round(polygon * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(canvas, [pts], value, lineType=cv2.LINE_AA, shift=_SUBPIXEL_BITS)


def render(rng: np.random.Generator, landmarks: np.ndarray, width: int, height: int, contrast: float,
           noise: float, haze: float, ribs: bool) -> np.ndarray:
    """Draw an X-ray-like picture of the spine: bright bone on a darker, hazy body."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    body = np.exp(-(((xx - width / 2) / (0.45 * width)) ** 2))
    img = 0.15 + haze * 0.35 * body * (0.8 + 0.2 * np.sin(yy / height * np.pi))
    bone = np.zeros((height, width), np.float32)
    for corners in landmarks:
        outline = corners[[0, 1, 3, 2]]
        _fill(bone, outline, 0.75)
        centre = outline.mean(axis=0)
        _fill(bone, centre + (outline - centre) * 0.8, 0.55)
        pedicle = max(2.0, 0.12 * np.linalg.norm(corners[1] - corners[0]))
        for side in (0, 1):
            c = corners[side] * 0.7 + corners[side + 2] * 0.3
            c = c + (centre - c) * 0.25
            cv2.circle(bone, tuple(np.round(c * 16).astype(int)), int(pedicle * 16), 0.9, -1, cv2.LINE_AA, 4)
    if ribs:
        for corners in landmarks[:12]:
            y0 = float(corners[:, 1].mean())
            for side in (-1, 1):
                xs = np.linspace(0, 0.42 * width, 40)
                start = corners[1 if side > 0 else 0]
                pts = np.stack([start[0] + side * xs, y0 - 0.15 * width + 0.9 * (xs - 0.25 * width) ** 2 / width], 1)
                thick = max(1, int(0.012 * height))
                cv2.polylines(bone, [np.round(pts * 16).astype(np.int32)], False, 0.35, thick, cv2.LINE_AA, 4)
    img = img + contrast * bone
    sigma = max(0.6, 0.002 * height)
    img = cv2.GaussianBlur(img, (0, 0), sigma)
    img = img + rng.normal(0, noise, img.shape).astype(np.float32)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def make_spine(
    seed: int,
    width: int = 256,
    height: int = 640,
    curve: str | None = None,
    cobb_degrees: float | None = None,
    size_scale: float | None = None,
    contrast: float | None = None,
    noise: float | None = None,
    haze: float | None = None,
    ribs: bool = True,
) -> SyntheticSpine:
    """One synthetic radiograph; any parameter left None is drawn from the seed."""
    rng = np.random.default_rng(seed)
    curve = curve or str(rng.choice(["C", "S", "straight"], p=[0.45, 0.45, 0.1]))
    if curve not in ("C", "S", "straight"):
        raise ValueError(f"curve must be 'C', 'S' or 'straight', got {curve!r}")
    if cobb_degrees is None:
        cobb_degrees = 0.0 if curve == "straight" else float(rng.uniform(8, 45))
    landmarks = spine_geometry(
        rng, width, height, "C" if curve == "straight" else curve,
        0.0 if curve == "straight" else cobb_degrees,
        size_scale if size_scale is not None else float(rng.uniform(0.9, 1.1)),
    )
    image = render(
        rng, landmarks, width, height,
        contrast if contrast is not None else float(rng.uniform(0.35, 0.7)),
        noise if noise is not None else float(rng.uniform(0.01, 0.05)),
        haze if haze is not None else float(rng.uniform(0.3, 1.0)),
        ribs,
    )
    return SyntheticSpine(image, landmarks, curve, float(cobb_degrees))


def write_aasce_layout(root: Path, count: int, seed: int = 0, width: int = 256, height: int = 640) -> list[str]:
    """A synthetic dataset in the AASCE layout, so that train/evaluate run on it exactly as on the real one."""
    from spinecascade.io.images import save_image
    from spinecascade.io.labels import write_angles_csv, write_landmarks_csv, write_mat
    from spinecascade.landmarks import normalise
    from spinecascade.measurement.cobb import cobb_angles

    images, labels = root / "data" / "training", root / "labels" / "training"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    names, normalised, angles = [], {}, []
    for i in range(count):
        spine = make_spine(seed + i, width, height)
        name = f"synthetic-{seed + i:05d}.jpg"
        save_image(images / name, spine.image)
        write_mat(labels / f"{name}.mat", spine.landmarks)
        names.append(name)
        normalised[name] = normalise(spine.landmarks, width, height)
        angles.append(cobb_angles(spine.landmarks, height).as_array())
    write_landmarks_csv(labels / "landmarks.csv", labels / "filenames.csv", normalised)
    write_angles_csv(labels / "angles.csv", np.array(angles))
    return names
