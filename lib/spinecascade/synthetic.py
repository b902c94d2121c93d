"""Synthetic spine radiographs with exact landmarks, for tests and demos without patient data.

The geometry follows the landmark model: 17 vertebrae whose size grows from T1 to L5, stacked along a
midline bent into a C or S curve of a chosen Cobb angle, each vertebra tilted with the local midline. Rendering
adds what makes real films hard: soft-tissue haze, rib-like arcs over the thoracic spine, contrast changes and
noise. Everything is drawn from one seed, so an image and its landmarks are reproducible bit for bit.

make_spine draws the tight T1-L5 crops of the AASCE set; make_full_length draws whole standing films as clinics take
them (skull or neck to pelvis or femurs, with ribs, clavicles, pelvis, femurs, black borders, a ruler, burnt-in text
and a lead side marker, 8 or 16 bit or RGB), and the films a reviewer must flag: cut off in the thorax, upside
down, lateral, or without a spine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from spinecascade.landmarks import N_VERTEBRAE, VERTEBRAE

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


# ---------------------------------------------------------------- full-length films
#
# Anatomy is laid out in body units: y runs from T1's top endplate (0) to L5's bottom endplate (1), x from the
# spine's axis; one unit is `unit_px` film pixels. Bones are painted at most _WORK_HEIGHT rows tall and the film is
# resized to its size, so a 7500-px film costs little more than a 1600-px one; the lead marker, the noise, the
# borders, the ruler and the burnt-in text are drawn at the film's own size.

FULL_LENGTH_VARIANTS: tuple[str, ...] = ("standard", "cut-off", "upside-down", "lateral", "blank", "limb")
NO_SPINE_VARIANTS: tuple[str, ...] = ("blank", "limb")
CERVICAL: tuple[str, ...] = tuple(f"C{i}" for i in range(1, 8))
FILM_HEIGHT_RANGE = (256, 10000)
_WORK_HEIGHT = 1600


@dataclass(frozen=True)
class FilmAnatomy:
    """Where the bones around the 17 levels lie in a full-length AP film, in film pixels (x, y).

    Pairs are (patient's right, patient's left): image left, then image right on an upright AP film. Bones the film
    does not show (below a cut-off film, a skull above a film that starts at the neck) lie outside the image.
    """

    start: str  # where the film begins: "skull" or "neck"
    end: str  # where it ends: "pelvis", "femurs" or "thorax" (cut off)
    skull_top: float  # row of the vertex
    chin: float  # row of the chin
    cervical: np.ndarray  # (7, 4, 2) C1..C7 body corners, in the landmark corner order
    clavicles: np.ndarray  # (2, 2, 2) side x (medial end, lateral end)
    rib_heads: np.ndarray  # (12, 2, 2) ribs 1..12 x side: where each rib leaves its thoracic vertebra
    rib_tips: np.ndarray  # (12, 2, 2) the lateral-most point of each rib
    sacrum: np.ndarray  # (3, 2) S1 endplate's left and right corner, then the sacrum's tip
    iliac_crests: np.ndarray  # (2, 2) the highest point of each iliac wing
    femoral_heads: np.ndarray  # (2, 3) centre x, y and radius
    lung_apex: float  # row of the top of the lungs
    pelvis_bottom: float  # row of the lowest point of the ischia


@dataclass(frozen=True)
class FullLengthFilm:
    """A synthetic full-length film and what is true about it.

    `landmarks` holds the 68 corners in the project's order in film pixels; the rows of a level that does not lie
    wholly inside the exposed field (below a cut-off, no spine at all) are NaN. On an upside-down film the points
    keep their anatomical names, so T1 lies near the bottom and each "top-left" corner below and right of its
    "bottom-right" one. On a lateral film they are the corners of the vertebral bodies as the side view shows them
    (left and right in the image: front and back of the body). Rows are film rows, before any cut: on a cut-off
    film `l5_bottom_row` lies below the image; on an upside-down one `t1_top_row` > `l5_bottom_row`.
    """

    image: np.ndarray  # (height, width) uint8 or uint16, or (height, width, 3) uint8 for a screen capture
    landmarks: np.ndarray  # (17, 4, 2) float64 film pixels (x, y); NaN for levels outside the film
    variant: str  # one of FULL_LENGTH_VARIANTS
    levels_in_film: tuple[str, ...]  # the levels whose 4 corners lie inside the exposed field, T1 first
    t1_top_row: float  # mean row of T1's top corners; NaN without a spine
    l5_bottom_row: float  # mean row of L5's bottom corners; NaN without a spine
    spine_box: tuple[float, float, float, float]  # (x0, y0, x1, y1) around the corners of the levels in the film
    thorax_to_pelvis: tuple[float, float]  # rows (first, last) from the lung apices to the ischia; NaN for no AP spine
    field: tuple[int, int, int, int]  # exposed area inside the black borders: x0, y0, x1, y1 (exclusive)
    anatomy: FilmAnatomy | None  # AP films only (standard, cut-off, upside-down)
    curve: str  # "C", "S", "straight"; "none" for lateral and no-spine films
    target_cobb: float  # the Cobb angle the coronal curve was drawn with; NaN for lateral and no-spine films
    bit_depth: int  # 8 or 16
    stored_bits: int  # 8, or 12, 14 or 16 of the 16: the brightest value is 2**stored_bits - 1
    spacing_mm: float  # mm per pixel that the ruler's ticks are drawn with
    side_marker: str  # "L", "R" or "" (no lead letter)
    text: tuple[str, ...]  # the burnt-in lines of text

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    def metadata(self) -> dict:
        """Everything but the pixels and the anatomy, as JSON-ready values (NaN as None)."""

        def clean(v: float) -> float | None:
            return float(v) if np.isfinite(v) else None

        return {
            "variant": self.variant, "width": self.width, "height": self.height,
            "rgb": self.image.ndim == 3, "bit_depth": self.bit_depth, "stored_bits": self.stored_bits,
            "levels_in_film": list(self.levels_in_film), "t1_top_row": clean(self.t1_top_row),
            "l5_bottom_row": clean(self.l5_bottom_row), "spine_box": [clean(v) for v in self.spine_box],
            "thorax_to_pelvis": [clean(v) for v in self.thorax_to_pelvis], "field": list(self.field),
            "curve": self.curve, "target_cobb": clean(self.target_cobb), "spacing_mm": self.spacing_mm,
            "side_marker": self.side_marker, "text": list(self.text),
            "landmarks": [[clean(v) for v in p] for p in self.landmarks.reshape(-1, 2)],
        }


def _bezier(control: np.ndarray, n: int = 24) -> np.ndarray:
    """n points along the Bezier curve of the given control points."""
    control = np.asarray(control, dtype=np.float64)
    k = len(control) - 1
    t = np.linspace(0.0, 1.0, n)[:, None]
    coeff = [float(np.prod(range(k - i + 1, k + 1)) / np.prod(range(1, i + 1))) for i in range(k + 1)]
    return sum(c * t**i * (1 - t) ** (k - i) * p for i, (c, p) in enumerate(zip(coeff, control)))


def _ellipse(centre: np.ndarray, axes: tuple[float, float], a0: float = 0.0, a1: float = 2 * np.pi,
             n: int = 48, angle: float = 0.0) -> np.ndarray:
    """Points on an ellipse (angles in radians, 0 = +x, increasing towards +y), rotated by `angle`."""
    t = np.linspace(a0, a1, n)
    x, y = axes[0] * np.cos(t), axes[1] * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([x * c - y * s, x * s + y * c], axis=1) + np.asarray(centre, dtype=np.float64)


class _Painter:
    """Paints shapes given in body units onto float layers at the working scale of one film."""

    def __init__(self, height: int, width: int, unit_px: float, origin: tuple[float, float]) -> None:
        scale = min(1.0, _WORK_HEIGHT / height)
        self.shape = (max(8, round(height * scale)), max(8, round(width * scale)))
        self.height, self.width = height, width
        self.sx, self.sy = self.shape[1] / width, self.shape[0] / height
        self.unit_px, self.origin = unit_px, np.asarray(origin, dtype=np.float64)

    def film(self, pts: np.ndarray) -> np.ndarray:
        return np.asarray(pts, dtype=np.float64) * self.unit_px + self.origin

    def _work(self, pts: np.ndarray) -> np.ndarray:
        f = self.film(pts)
        return np.stack([(f[..., 0] + 0.5) * self.sx - 0.5, (f[..., 1] + 0.5) * self.sy - 0.5], axis=-1)

    def _fixed(self, pts: np.ndarray) -> np.ndarray:
        return np.round(self._work(pts) * (1 << _SUBPIXEL_BITS)).astype(np.int32)

    def px(self, units: float) -> float:
        """A length in body units as working pixels."""
        return units * self.unit_px * self.sy

    def layer(self) -> np.ndarray:
        return np.zeros(self.shape, np.float32)

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Body-unit x of every working column and y of every working row."""
        cols = ((np.arange(self.shape[1]) + 0.5) / self.sx - 0.5 - self.origin[0]) / self.unit_px
        rows = ((np.arange(self.shape[0]) + 0.5) / self.sy - 0.5 - self.origin[1]) / self.unit_px
        return cols.astype(np.float32), rows.astype(np.float32)

    def poly(self, layer: np.ndarray, pts: np.ndarray, value: float) -> None:
        cv2.fillPoly(layer, [self._fixed(pts)], value, cv2.LINE_AA, _SUBPIXEL_BITS)

    def line(self, layer: np.ndarray, pts: np.ndarray, width: float, value: float) -> None:
        thickness = max(1, round(self.px(width)))
        cv2.polylines(layer, [self._fixed(pts)], False, value, thickness, cv2.LINE_AA, _SUBPIXEL_BITS)

    def disc(self, layer: np.ndarray, centre: np.ndarray, radius: float, value: float) -> None:
        c = self._fixed(np.asarray(centre, dtype=np.float64))
        r = max(1, round(self.px(radius) * (1 << _SUBPIXEL_BITS)))
        cv2.circle(layer, (int(c[0]), int(c[1])), r, value, -1, cv2.LINE_AA, _SUBPIXEL_BITS)

    def bone(self, layer: np.ndarray, pts: np.ndarray, value: float, core: float = 0.82) -> None:
        """A filled bone outline with a brighter cortex: the inner part, shrunk to `core`, is dimmer."""
        pts = np.asarray(pts, dtype=np.float64)
        centre = pts.mean(axis=0)
        self.poly(layer, pts, value)
        self.poly(layer, centre + (pts - centre) * core, value * 0.72)

    def long_bone(self, layer: np.ndarray, pts: np.ndarray, width: float, value: float) -> None:
        """A shaft along `pts`: bright cortex on both sides of a dimmer medulla."""
        self.line(layer, pts, width, value)
        self.line(layer, pts, width * 0.5, value * 0.7)


def _profile(cols: np.ndarray, rows: np.ndarray, centre: np.ndarray, half_width: np.ndarray,
             depth: np.ndarray) -> np.ndarray:
    """Soft-tissue thickness of a body part whose cross-section in each row is an ellipse."""
    d = (cols[None, :] - centre[:, None]) / np.maximum(half_width[:, None], 1e-4)
    return np.sqrt(np.clip(1.0 - d * d, 0.0, None)) * (depth * (half_width > 0))[:, None]


def _spine_units(rng: np.random.Generator, curve: str, cobb: float) -> np.ndarray:
    """The 17 levels of spine_geometry in body units: T1's top endplate at y 0, L5's bottom one at y 1."""
    corners = spine_geometry(rng, 1000, 1000, "C" if curve == "straight" else curve,
                             0.0 if curve == "straight" else cobb, float(rng.uniform(0.9, 1.1)))
    top, bottom = corners[0, :2].mean(axis=0), corners[-1, 2:].mean(axis=0)
    return (corners - np.array([(top[0] + bottom[0]) / 2, top[1]])) / (bottom[1] - top[1])


def _box(top_centre: np.ndarray, up: np.ndarray, height: float, width: float) -> np.ndarray:
    """The 4 corners (landmark order) of a body whose top endplate is centred on `top_centre`."""
    right = np.array([-up[1], up[0]])
    bottom_centre = top_centre - up * height
    return np.stack([top_centre - right * width / 2, top_centre + right * width / 2,
                     bottom_centre - right * width / 2, bottom_centre + right * width / 2])


def _cervical_units(rng: np.random.Generator, spine: np.ndarray, sagittal: float = 0.0) -> np.ndarray:
    """C1..C7 stacked on T1; the neck turns from T1's axis to upright (or, with `sagittal`, into a lordosis)."""
    t1 = spine[0]
    up0 = t1[:2].mean(axis=0) - t1[2:].mean(axis=0)
    angle0 = np.arctan2(up0[0], -up0[1])
    h1, w1 = np.linalg.norm(up0), np.linalg.norm(t1[1] - t1[0])
    heights = h1 * np.array([0.5, 1.3, 0.72, 0.74, 0.76, 0.8, 0.85])
    widths = w1 * np.array([1.55, 0.8, 0.72, 0.74, 0.78, 0.84, 0.92]) * (0.75 if sagittal else 1.0)
    lean = rng.normal(0.0, 0.04)
    out = np.zeros((7, 4, 2))
    position = t1[:2].mean(axis=0)
    for i in range(6, -1, -1):
        frac = (7 - i) / 7
        angle = angle0 * (1 - frac) + lean * frac + sagittal * np.sin(np.pi * frac)
        up = np.array([np.sin(angle), -np.cos(angle)])
        bottom = position + up * h1 * 0.3
        out[i] = _box(bottom + up * heights[i], up, heights[i], widths[i])
        position = bottom + up * heights[i]
    return out


def _paint_vertebra(p: _Painter, layer: np.ndarray, corners: np.ndarray, transverse: float = 0.0) -> None:
    """One AP vertebra as render() draws it, with a spinous process and optional transverse processes."""
    outline = corners[[0, 1, 3, 2]]
    centre = outline.mean(axis=0)
    width = float(np.linalg.norm(corners[1] - corners[0]))
    p.poly(layer, outline, 0.75)
    p.poly(layer, centre + (outline - centre) * 0.8, 0.55)
    for side in (0, 1):
        c = corners[side] * 0.7 + corners[side + 2] * 0.3
        p.disc(layer, c + (centre - c) * 0.25, max(0.004, 0.12 * width), 0.9)
    down = (corners[2] + corners[3] - corners[0] - corners[1]) / 2
    p.line(layer, np.stack([centre, centre + down * 0.45]), 0.1 * width, 0.85)
    if transverse:
        for side in (0, 1):
            start = (corners[side] + corners[side + 2]) / 2
            out = (corners[side] - corners[1 - side]) / width
            p.line(layer, np.stack([start, start + out * transverse * width - down * 0.1]), 0.25 * width, 0.6)


def _body_outline(rng: np.random.Generator, head_x: float, head_y: float, skull_size: float) -> tuple[np.ndarray, ...]:
    """Control rows, half-widths, centres and thicknesses of the AP soft-tissue outline (head to hips); the head
    sits on C1's top (head_x, head_y) around a skull of `skull_size`."""
    build = rng.uniform(0.85, 1.15)
    ys = np.array([-0.02, 0.0, 0.03, 0.06, 0.12, 0.3, 0.5, 0.7, 0.85, 1.0, 1.15, 1.3, 1.42, 1.46])
    hw = np.array([0.16, 0.24, 0.33, 0.37, 0.37, 0.36, 0.35, 0.31, 0.30, 0.34, 0.41, 0.43, 0.42, 0.0]) * build
    # The head: an ellipse over the cranium, the jaw narrowing to the neck.
    head_ys = head_y + np.array([-0.262, -0.24, -0.19, -0.12, -0.04, 0.0, 0.04, 0.07, 0.1, 0.16]) * skull_size
    head_hw = np.array([0.0, 0.1, 0.16, 0.18, 0.175, 0.15, 0.12, 0.1, 0.095, 0.1]) * skull_size * rng.uniform(1.0, 1.06)
    rows = np.concatenate([head_ys, ys])
    widths = np.concatenate([head_hw, hw])
    centres = np.concatenate([np.full(len(head_ys), head_x), np.full(len(ys), rng.normal(0.0, 0.01))])
    depth = np.interp(rows, [-0.4, -0.15, 0.0, 0.1, 0.6, 1.0, 1.4], [0.9, 0.55, 0.6, 0.75, 0.9, 1.0, 1.05])
    return rows, widths, centres, depth


def _lungs(p: _Painter, rng: np.random.Generator, spine_x: Callable, chest: Callable) -> tuple[np.ndarray, float]:
    """Both lung fields as a blurred mask, and the row of their apices."""
    mask = p.layer()
    apex = rng.uniform(-0.05, -0.01)
    for s, base in ((-1, rng.uniform(0.5, 0.56)), (1, rng.uniform(0.54, 0.6))):
        ys = np.linspace(apex, base, 24)
        medial = spine_x(ys) + s * (0.045 + (0.11 * np.clip(np.sin(np.pi * (ys - 0.28) / 0.34), 0, 1) if s > 0 else 0))
        lateral = chest(ys)[1 if s > 0 else 0] - s * 0.04
        lateral = medial + (lateral - medial) * np.sqrt(np.clip((ys - apex) / 0.14, 0.0, 1.0))
        dome = _bezier(np.array([[lateral[-1], base + 0.06], [(lateral[-1] + medial[-1]) / 2, base - 0.07],
                                 [medial[-1], base - 0.01]]), 16)
        pts = np.concatenate([np.stack([medial, ys], 1), dome[::-1], np.stack([lateral, ys], 1)[::-1]])
        p.poly(mask, pts, 1.0)
    return cv2.GaussianBlur(mask, (0, 0), max(1.0, p.px(0.02))), float(apex)


def _paint_skull(p: _Painter, layer: np.ndarray, c1_top: np.ndarray, size: float) -> tuple[float, float]:
    """An AP skull over C1: cranium, petrous ridges, orbits, nose, sinuses, teeth, mandible. Returns the rows of the
    vertex and the chin."""
    hx, base = float(c1_top[0]), float(c1_top[1])
    centre = np.array([hx, base - 0.12 * size])
    p.bone(layer, _ellipse(centre, (0.165 * size, 0.13 * size)), 0.55, core=0.93)
    for s in (-1, 1):
        p.line(layer, np.array([[hx + s * 0.12, base - 0.03], [hx + s * 0.03, base - 0.075]]), 0.012, 0.5)
        p.line(layer, _ellipse(centre + np.array([s * 0.055, 0.03]) * size, (0.035 * size, 0.03 * size)), 0.006, 0.48)
        p.poly(layer, _ellipse([hx + s * 0.045 * size, base - 0.03], (0.025 * size, 0.022 * size)), 0.33)
        p.poly(layer, np.array([[hx + s * 0.11, base - 0.03], [hx + s * 0.125, base - 0.005],
                                [hx + s * 0.1, base + 0.005]]), 0.5)
    p.poly(layer, _ellipse([hx, base - 0.04], (0.016 * size, 0.03 * size)), 0.3)
    for i in np.linspace(-1, 1, 12):
        p.disc(layer, [hx + i * 0.045 * size, base + 0.008 * i * i], 0.006, 0.47)
    chin = base + 0.07 * size
    jaw = _bezier(np.array([[hx - 0.11 * size, base - 0.04], [hx - 0.11 * size, base + 0.05],
                            [hx, chin + 0.012], [hx + 0.11 * size, base + 0.05], [hx + 0.11 * size, base - 0.04]]), 40)
    p.long_bone(layer, jaw, 0.02 * size, 0.45)
    return float(centre[1] - 0.13 * size), float(chin + 0.01)


def _paint_pelvis(p: _Painter, rng: np.random.Generator, spine: np.ndarray,
                  layers: dict[str, np.ndarray]) -> dict[str, np.ndarray | float]:
    """Sacrum, coccyx, iliac wings, pubis, ischia, femoral heads and femurs below L5."""
    l5 = spine[-1]
    e = (l5[3] - l5[2]) / np.linalg.norm(l5[3] - l5[2])
    tilt = np.arctan2(e[1], e[0]) / 2
    e = np.array([np.cos(tilt), np.sin(tilt)])
    n = np.array([-e[1], e[0]])
    l5_height = float(np.linalg.norm(l5[2] - l5[0]))
    half = float(np.linalg.norm(l5[3] - l5[2])) / 2 * 1.02
    s1 = (l5[2] + l5[3]) / 2 + n * 0.3 * l5_height
    size = rng.uniform(0.92, 1.08)

    def local(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64) * size
        return s1 + a[..., :1] * e + a[..., 1:] * n

    sacrum = local(np.array([[-0.115, 0.012], [-half / size, 0.0], [half / size, 0.0], [0.115, 0.012],
                             [0.108, 0.06], [0.078, 0.12], [0.042, 0.17], [0.016, 0.205], [-0.016, 0.205],
                             [-0.042, 0.17], [-0.078, 0.12], [-0.108, 0.06]]))
    p.bone(layers["sacrum"], sacrum, 0.42, core=0.85)
    for i in range(4):
        for s in (-1, 1):
            p.disc(layers["sacrum"], local([s * (0.042 - 0.006 * i), 0.045 + 0.036 * i]), 0.011, 0.2)
    for i in range(3):
        p.poly(layers["sacrum"], local(np.array([[-0.013 + 0.003 * i, 0.212 + 0.018 * i], [0.013 - 0.003 * i,
               0.212 + 0.018 * i], [0.01 - 0.003 * i, 0.226 + 0.018 * i], [-0.01 + 0.003 * i, 0.226 + 0.018 * i]])),
               0.4)
    x0, y0 = float(s1[0]), float(s1[1])
    wing = np.array([[0.075, 0.005], [0.095, -0.06], [0.14, -0.1], [0.21, -0.105], [0.265, -0.075], [0.29, -0.03],
                     [0.285, 0.015], [0.255, 0.07], [0.235, 0.14], [0.2, 0.165], [0.165, 0.16], [0.13, 0.12],
                     [0.1, 0.09], [0.085, 0.05]]) * size
    crests, heads = np.zeros((2, 2)), np.zeros((2, 3))
    for k, s in enumerate((-1, 1)):
        mirror = np.array([s, 1.0])
        outline = wing * mirror + [x0, y0]
        p.poly(layers["pelvis"], outline, 0.14)
        p.line(layers["pelvis"], np.concatenate([outline, outline[:1]]), 0.014 * size, 0.3)
        crests[k] = wing[np.argmin(wing[:, 1])] * mirror + [x0, y0]
        ring = _ellipse([x0 + s * 0.1 * size, y0 + 0.3 * size], (0.058 * size, 0.045 * size), angle=s * 0.35)
        p.long_bone(layers["pelvis"], ring, 0.02 * size, 0.3)
        p.long_bone(layers["pelvis"], np.array([[x0 + s * 0.17, y0 + 0.225], [x0 + s * 0.02, y0 + 0.265]]),
                    0.035 * size, 0.45)
        p.line(layers["pelvis"], _ellipse([x0, y0 + 0.12 * size], (0.13 * size, 0.11 * size),
                                          np.pi / 2 - s * 0.2, np.pi / 2 - s * 1.5), 0.008, 0.35)
        head = np.array([x0 + s * 0.185 * size, y0 + 0.215 * size, 0.046 * size])
        heads[k] = head
        neck_end = head[:2] + np.array([s * 0.08, 0.055]) * size
        knee = np.array([x0 + s * rng.uniform(0.15, 0.19), y0 + 1.2 * size])
        femur = layers["femur"]
        p.long_bone(femur, np.stack([neck_end, knee]), 0.07 * size, 0.5)
        p.line(femur, np.stack([head[:2], neck_end]), 0.058 * size, 0.45)
        p.disc(femur, head[:2], head[2], 0.55)
        p.disc(femur, head[:2], head[2] * 0.8, 0.42)
        p.disc(femur, neck_end + np.array([s * 0.012, -0.02]) * size, 0.036 * size, 0.42)
        p.disc(femur, neck_end + np.array([-s * 0.045, 0.07]) * size, 0.017 * size, 0.45)
    p.long_bone(layers["pelvis"], np.array([[x0, y0 + 0.265 * size], [x0, y0 + 0.33 * size]]), 0.03 * size, 0.2)
    return {"sacrum": np.stack([sacrum[1], sacrum[2], local([0.0, 0.205])]), "iliac_crests": crests,
            "femoral_heads": heads, "pelvis_bottom": y0 + 0.355 * size}


def _paint_thorax(p: _Painter, rng: np.random.Generator, spine: np.ndarray, body_x: float, chest: Callable,
                  layers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """12 pairs of ribs on T1-T12, the clavicles, scapulae and shoulders."""
    level = 1.0 / N_VERTEBRAE
    reach = np.array([0.5, 0.74, 0.86, 0.93, 0.97, 0.99, 1.0, 1.0, 0.99, 0.95, 0.72, 0.48])
    drop = np.array([0.7, 1.1, 1.5, 1.8, 2.0, 2.2, 2.4, 2.5, 2.6, 2.6, 2.2, 1.6]) * rng.uniform(0.9, 1.1)
    heads, tips = np.zeros((12, 2, 2)), np.zeros((12, 2, 2))
    for k in range(12):
        corners = spine[k]
        width = float(np.linalg.norm(corners[1] - corners[0]))
        for j, s in enumerate((-1, 1)):
            side = (corners[0] + corners[2]) / 2 if s < 0 else (corners[1] + corners[3]) / 2
            head = side + np.array([s * 0.12 * width, 0.0])
            y_tip = head[1] + drop[k] * level
            wall = chest(np.array([y_tip]))[j][0] - s * 0.035
            tip = np.array([head[0] + (wall - head[0]) * reach[k], y_tip])
            dx = tip[0] - head[0]
            thick = 0.013 + 0.0007 * k
            posterior = _bezier(np.array([head, [head[0] + 0.55 * dx, head[1] - 0.45 * level * (k < 10)],
                                          [tip[0] - 0.02 * dx, tip[1] - 0.6 * level], tip]))
            p.long_bone(layers["ribs"], posterior, thick, 0.26)
            if k < 10:
                end = np.array([body_x + s * (0.1 + 0.012 * k), head[1] + (3.2 + 0.25 * k) * level])
                anterior = _bezier(np.array([tip, [tip[0] + 0.05 * dx, tip[1] + 1.2 * level],
                                             [end[0] + 0.4 * (tip[0] - end[0]), end[1] + 0.2 * level], end]))
                p.long_bone(layers["anterior"], anterior, thick, 0.09)
            heads[k, j], tips[k, j] = head, tip
    clavicles = np.zeros((2, 2, 2))
    t2 = spine[1].mean(axis=0)
    arms = rng.random() < 0.5
    for j, s in enumerate((-1, 1)):
        medial = np.array([t2[0] + s * 0.05, t2[1] + rng.uniform(-0.01, 0.02)])
        lateral = np.array([body_x + s * rng.uniform(0.3, 0.34), rng.uniform(-0.03, 0.01)])
        bone = _bezier(np.array([medial, [medial[0] + s * 0.1, medial[1] - 0.01], [lateral[0] - s * 0.1, lateral[1]
                                 + 0.03], lateral]))
        p.long_bone(layers["girdle"], bone, 0.024, 0.5)
        clavicles[j] = medial, lateral
        p.bone(layers["girdle"], np.array([[lateral[0] - s * 0.12, lateral[1] + 0.04], [lateral[0] - s * 0.01,
               lateral[1] + 0.04], [lateral[0] - s * 0.06, lateral[1] + 0.36], [lateral[0] - s * 0.14,
               lateral[1] + 0.2]]), 0.16, core=0.85)
        shoulder = lateral + np.array([s * 0.03, 0.06])
        p.disc(layers["girdle"], shoulder, 0.052, 0.4)
        if arms:
            p.long_bone(layers["girdle"], np.stack([shoulder, shoulder + [s * 0.03, 0.6]]), 0.055, 0.4)
    return {"rib_heads": heads, "rib_tips": tips, "clavicles": clavicles}


def _paint_ap(p: _Painter, rng: np.random.Generator, spine: np.ndarray, cervical: np.ndarray,
              skull_size: float) -> tuple[np.ndarray, dict]:
    """Density of an AP film from skull to femurs (before exposure), and where its bones lie in body units."""
    c1_top = cervical[0, :2].mean(axis=0)
    rows, widths, centres, depth = _body_outline(rng, float(c1_top[0]), float(c1_top[1]), skull_size)
    cols, yy = p.axes()
    tissue = _profile(cols, yy, np.interp(yy, rows, centres), np.interp(yy, rows, widths), np.interp(yy, rows, depth))
    body_x = float(centres[-1])
    for s in (-1, 1):
        leg_rows = np.array([1.2, 1.45, 2.4])
        legs = _profile(cols, yy, np.interp(yy, leg_rows, body_x + s * np.array([0.2, 0.2, 0.15])),
                        np.interp(yy, leg_rows, [0.0, 0.21, 0.14], left=0.0), np.full(len(yy), 0.8, np.float32))
        tissue = np.maximum(tissue, legs)
    centres_y = spine.mean(axis=1)

    def spine_x(y: np.ndarray) -> np.ndarray:
        return np.interp(y, centres_y[:, 1], centres_y[:, 0])

    def chest(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = np.interp(y, rows[10:], widths[10:])
        return body_x - w, body_x + w

    lungs, apex = _lungs(p, rng, spine_x, chest)
    gas = p.layer()
    for _ in range(int(rng.integers(5, 15))):
        centre = [body_x + rng.uniform(-0.25, 0.25), rng.uniform(0.62, 1.25)]
        p.poly(gas, _ellipse(centre, (rng.uniform(0.01, 0.045), rng.uniform(0.01, 0.03)), angle=rng.uniform(0, 3)),
               float(rng.uniform(0.4, 1.0)))
    gas = cv2.GaussianBlur(gas, (0, 0), max(0.8, p.px(0.006)))
    layers = {name: p.layer() for name in ("spine", "ribs", "anterior", "girdle", "sacrum", "pelvis", "femur")}
    for k, corners in enumerate(np.concatenate([cervical, spine])):
        _paint_vertebra(p, layers["spine"], corners, transverse=0.55 if k >= 19 else 0.15)
    skull = p.layer()
    skull_top, chin = _paint_skull(p, skull, c1_top, skull_size)
    skull = cv2.GaussianBlur(skull, (0, 0), max(0.5, p.px(0.003)))
    thorax = _paint_thorax(p, rng, spine, body_x, chest, layers)
    pelvis = _paint_pelvis(p, rng, spine, layers)
    bone = sum(layers.values()) + skull
    density = tissue * rng.uniform(0.3, 0.42) * (1 - lungs * rng.uniform(0.7, 0.85) - gas * rng.uniform(0.3, 0.5))
    density += bone * rng.uniform(0.4, 0.6)
    anatomy = {"skull_top": skull_top, "chin": chin, "cervical": cervical, "lung_apex": apex, **thorax, **pelvis}
    return density, anatomy


def _lateral_bodies(rng: np.random.Generator, spine: np.ndarray, face: float) -> np.ndarray:
    """The 17 bodies seen from the side, bent into a thoracic kyphosis and a lumbar lordosis; the front faces
    +x for `face` 1, -x for -1."""
    t = spine.mean(axis=1)[:, 1]
    kyphosis, lordosis = rng.uniform(0.04, 0.08), rng.uniform(0.03, 0.06)
    x = face * np.where(t < 0.62, -kyphosis * np.sin(np.pi * t / 0.62), lordosis * np.sin(np.pi * (t - 0.62) / 0.38))
    slope = np.gradient(x, t)
    heights = np.linalg.norm(spine[:, 2] - spine[:, 0], axis=1)
    depths = np.linalg.norm(spine[:, 1] - spine[:, 0], axis=1) * 0.8
    bodies = np.zeros_like(spine)
    for k in range(N_VERTEBRAE):
        angle = -np.arctan(slope[k])
        up = np.array([np.sin(angle), -np.cos(angle)])
        bodies[k] = _box(np.array([x[k], t[k]]) + up * heights[k] / 2, up, heights[k], depths[k])
    return bodies


def _paint_lateral(p: _Painter, rng: np.random.Generator, bodies: np.ndarray, cervical: np.ndarray, face: float,
                   skull_size: float) -> np.ndarray:
    """A side view: skull in profile, cervical lordosis, thoracic kyphosis, lumbar lordosis, overlapping ribs and
    hips."""
    t, x = bodies.mean(axis=1)[:, 1], bodies.mean(axis=1)[:, 0]
    c1 = cervical[0, :2].mean(axis=0)
    cols, yy = p.axes()
    ys = c1[1] + np.array([-0.24, -0.2, -0.12, 0.0, 0.07, 0.12])
    ys = np.concatenate([ys, [0.0, 0.1, 0.5, 0.8, 1.1, 1.3, 1.45, 2.4]])
    hw = np.array([0.0, 0.13, 0.19, 0.17, 0.08, 0.07, 0.09, 0.18, 0.2, 0.23, 0.22, 0.2, 0.14, 0.11])
    cx = np.concatenate([np.full(6, c1[0] + face * 0.04), face * np.array([0.04, 0.08, 0.1, 0.13, 0.05, 0.04, 0.06,
                                                                            0.1])])
    tissue = _profile(cols, yy, np.interp(yy, ys, cx), np.interp(yy, ys, hw), np.interp(yy, ys, np.ones(len(ys))))
    lung = p.layer()
    p.poly(lung, np.array([[face * 0.02, -0.02], [face * 0.22, 0.08], [face * 0.26, 0.4], [face * 0.2, 0.55],
                           [0.0, 0.58], [-face * 0.12, 0.66], [-face * 0.12, 0.2]]), 1.0)
    p.disc(lung, [face * 0.2, 0.45], 0.1, 0.2)
    lung = cv2.GaussianBlur(lung, (0, 0), max(1.0, p.px(0.03)))
    bone = p.layer()
    for corners in np.concatenate([cervical, bodies]):
        outline = corners[[0, 1, 3, 2]]
        centre = outline.mean(axis=0)
        p.bone(bone, outline, 0.7)
        back = centre - face * (corners[1] - corners[0]) * 0.5
        p.line(bone, np.stack([back, back - face * (corners[1] - corners[0]) * 0.4]), 0.012, 0.5)
        p.line(bone, np.stack([back - face * (corners[1] - corners[0]) * 0.3,
                               back - face * (corners[1] - corners[0]) * 0.8 + [0, 0.03]]), 0.008, 0.45)
    ribs = p.layer()
    for k in range(12):
        y0 = float(t[k])
        for dy in (0.0, 0.012):
            arc = _bezier(np.array([[x[k] - face * 0.02, y0 + dy], [x[k] - face * 0.14, y0 + 0.02 + dy],
                                    [face * 0.3, y0 + 0.05 + dy], [face * (0.2 + 0.005 * k), y0 + 0.18 + dy]]))
            p.line(ribs, arc, 0.012, 0.22)
    p.long_bone(bone, np.array([[face * 0.22, 0.08], [face * 0.26, 0.45]]), 0.03, 0.4)
    skull_centre = c1 + np.array([face * 0.05, -0.12]) * skull_size
    p.bone(bone, _ellipse(skull_centre, (0.19 * skull_size, 0.13 * skull_size)), 0.5, core=0.93)
    p.line(bone, _ellipse(skull_centre + [face * 0.13, 0.03], (0.03, 0.028)), 0.008, 0.5)
    p.long_bone(bone, np.array([c1 + [face * 0.03, -0.02], c1 + [face * 0.04, 0.05], c1 + [face * 0.17, 0.065]]),
                0.024, 0.45)
    s1 = bodies[-1, 2:].mean(axis=0) + [0, 0.012]
    sacrum = _bezier(np.array([s1, s1 + [-face * 0.02, 0.12], s1 + [-face * 0.1, 0.22]]))
    p.long_bone(bone, sacrum, 0.07, 0.45)
    hip = s1 + np.array([face * 0.06, 0.22])
    p.bone(bone, _ellipse(s1 + [face * 0.03, 0.02], (0.13, 0.12)), 0.3, core=0.9)
    p.disc(bone, hip, 0.05, 0.5)
    p.long_bone(bone, np.stack([hip + [face * 0.02, 0.04], hip + [face * 0.08, 1.0]]), 0.06, 0.5)
    density = tissue * rng.uniform(0.35, 0.45) - lung * rng.uniform(0.12, 0.2)
    density += (bone + ribs) * rng.uniform(0.4, 0.6)
    return density


def _paint_limb(p: _Painter, rng: np.random.Generator) -> np.ndarray:
    """An AP leg from the thigh to the ankle: femur, knee, patella, tibia and fibula; no spine."""
    s = float(rng.choice([-1.0, 1.0]))
    knee = rng.uniform(0.4, 0.55)
    cols, yy = p.axes()
    rows = np.array([-0.1, knee, knee + 0.1, 1.1])
    tissue = _profile(cols, yy, np.zeros(len(yy), np.float32), np.interp(yy, rows, [0.16, 0.11, 0.12, 0.06]),
                      np.ones(len(yy), np.float32))
    bone = p.layer()
    p.long_bone(bone, np.array([[s * 0.03, -0.1], [0.0, knee - 0.03]]), 0.06, 0.6)
    for c in (-1, 1):
        p.disc(bone, [c * 0.035, knee - 0.015], 0.035, 0.55)
    p.disc(bone, [0.0, knee - 0.04], 0.03, 0.35)
    p.bone(bone, np.array([[-0.075, knee + 0.01], [0.075, knee + 0.01], [0.035, knee + 0.06],
                           [-0.035, knee + 0.06]]), 0.55)
    p.long_bone(bone, np.array([[0.0, knee + 0.05], [0.0, 1.1]]), 0.055, 0.6)
    p.long_bone(bone, np.array([[s * 0.06, knee + 0.04], [s * 0.055, 1.1]]), 0.02, 0.45)
    return tissue * rng.uniform(0.35, 0.5) + bone * rng.uniform(0.4, 0.6)


def _framing(rng: np.random.Generator, variant: str, spine: np.ndarray | None, vertex: float, start: str | None,
             end: str | None) -> tuple[float, float, str, str]:
    """The body-unit rows of the film's first and last exposed row, and where it starts and ends."""
    if spine is None:
        return 0.0, 1.0, "", ""
    start = start or str(rng.choice(["skull", "neck"]))
    end = "thorax" if variant == "cut-off" else end or str(rng.choice(["pelvis", "femurs"]))
    top = vertex - rng.uniform(0.0, 0.04) if start == "skull" else rng.uniform(-0.3, -0.1 if end != "thorax" else -0.15)
    if end == "thorax":
        bottom = float(spine[int(rng.integers(5, 11))].mean(axis=0)[1])
    elif end == "pelvis":
        bottom = rng.uniform(1.34, 1.42)
    else:
        bottom = rng.uniform(1.5, 1.9)
    return float(top), float(bottom), start, end


def _borders(rng: np.random.Generator, size: int, enabled: bool) -> tuple[int, int]:
    if not enabled:
        return 0, 0
    return tuple(int(size * rng.uniform(0.005, 0.06)) if rng.random() < 0.65 else 0 for _ in range(2))


def _text_lines(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Burnt-in lines for the two top corners: an id, a name, a date, the exam, window and zoom."""
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    name = "".join(rng.choice(letters, int(rng.integers(3, 7)))) + " " + "".join(rng.choice(letters, 4))
    pool = [f"ID {int(rng.integers(10**6, 10**7))}", name,
            f"{int(rng.integers(2010, 2024))}/{int(rng.integers(1, 13)):02d}/{int(rng.integers(1, 29)):02d}",
            str(rng.choice(["AP STANDING", "WHOLE SPINE", "FULL SPINE", "SPINE AP", "STITCHED"])),
            f"W {int(rng.integers(1000, 65535))} L {int(rng.integers(500, 32768))}",
            f"Zoom {rng.uniform(0.8, 1.5):.2f}"]
    order = rng.permutation(len(pool))
    n_left = int(rng.integers(2, 5))
    n_right = int(rng.integers(0, len(pool) - n_left + 1))
    return [pool[i] for i in order[:n_left]], [pool[i] for i in order[n_left:n_left + n_right]]


def _put_text(img: np.ndarray, text: str, x: int, y: int, height: float, colour: tuple, right: bool = False) -> None:
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = height / 22.0
    thickness = max(1, round(height / 12))
    if right:
        x -= cv2.getTextSize(text, font, scale, thickness)[0][0]
    cv2.putText(img, text, (int(x), int(y)), font, scale, colour, thickness, cv2.LINE_AA)


def _lead_marker(rng: np.random.Generator, img: np.ndarray, field: tuple[int, int, int, int]) -> str:
    """A lead "R" near the image's left or "L" near its right, in the upper part of the field, maybe in a ring."""
    x0, y0, x1, y1 = field
    letter = str(rng.choice(["R", "L"]))
    size = max(8.0, (x1 - x0) * rng.uniform(0.04, 0.08))
    inset = rng.uniform(0.04, 0.14) * (x1 - x0)
    x = x0 + inset if letter == "R" else x1 - inset - size * 0.75
    y = y0 + (y1 - y0) * rng.uniform(0.1, 0.2) + size
    value = float(rng.uniform(0.85, 1.0))
    thickness = max(1, round(size / 9))
    cv2.putText(img, letter, (int(x), int(y)), cv2.FONT_HERSHEY_DUPLEX, size / 30.0, value, thickness, cv2.LINE_AA)
    if rng.random() < 0.5:
        centre = (int(x + size * 0.37), int(y - size * 0.5))
        cv2.circle(img, centre, int(size * 0.75), value, max(1, thickness // 2), cv2.LINE_AA)
    return letter


def _ruler(rng: np.random.Generator, img: np.ndarray, field: tuple[int, int, int, int], spacing_mm: float,
           colour: tuple) -> None:
    """A vertical ruler near one edge: a tick every cm, longer every 5 cm, numbered every 10 cm where legible."""
    height, width = img.shape[:2]
    x0, y0, x1, y1 = field
    right = rng.random() < 0.6
    x = int(x1 - 1 - rng.uniform(0.005, 0.04) * (x1 - x0)) if right else int(x0 + rng.uniform(0.005, 0.04) * (x1 - x0))
    sign = -1 if right else 1
    top = int(y0 + (y1 - y0) * rng.uniform(0.05, 0.4))
    bottom = int(y1 - (y1 - y0) * rng.uniform(0.02, 0.1))
    cm = 10.0 / spacing_mm
    thickness = max(1, round(width / 900))
    cv2.line(img, (x, top), (x, bottom), colour, thickness)
    step = 1 if cm >= 4 else 5
    tick = max(3.0, width * 0.008)
    for i, y in enumerate(np.arange(top, bottom, cm * step)):
        cmark = i * step
        length = tick * (2.5 if cmark % 10 == 0 else 1.7 if cmark % 5 == 0 else 1.0)
        cv2.line(img, (x, int(y)), (int(x + sign * length), int(y)), colour, thickness)
        if cmark % 10 == 0 and cm * 10 > 30:
            _put_text(img, str(cmark), int(x + sign * (length + 2)), int(y + tick), tick * 1.8, colour, right)


def _finish(rng: np.random.Generator, density: np.ndarray, height: int, width: int, noise: float) -> np.ndarray:
    """Expose: contrast curve, blur, resize to the film, add noise; values near [0, 1]."""
    background = rng.uniform(0.02, 0.1)
    img = np.clip(background + density, 0.0, 1.2) ** np.float32(rng.uniform(0.8, 1.2))
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), max(0.6, 0.0011 * img.shape[0]))
    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    gradient = np.linspace(rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04), height, dtype=np.float32)[:, None]
    img += gradient + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(noise)
    return img


def _level_mask(landmarks: np.ndarray, field: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = field
    x, y = landmarks[..., 0], landmarks[..., 1]
    return ((x >= x0) & (x <= x1 - 1) & (y >= y0) & (y <= y1 - 1)).all(axis=1)


def _check_film_arguments(variant: str, bit_depth: int, rgb: bool, start: str | None, end: str | None,
                          curve: str | None) -> None:
    if variant not in FULL_LENGTH_VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(FULL_LENGTH_VARIANTS)}; got {variant!r}")
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    if rgb and bit_depth != 8:
        raise ValueError("an RGB screen capture has 8 bits per channel; use bit_depth=8 with rgb=True")
    if start not in (None, "skull", "neck") or end not in (None, "pelvis", "femurs"):
        raise ValueError(f"start must be 'skull' or 'neck' and end 'pelvis' or 'femurs'; got {start!r}, {end!r}")
    if curve not in (None, "C", "S", "straight"):
        raise ValueError(f"curve must be 'C', 'S' or 'straight', got {curve!r}")


def _lay_out(rng: np.random.Generator, height: int, width: int | None, span: tuple[float, float], has_spine: bool,
             artefacts: bool) -> tuple[_Painter, tuple[int, int, int, int]]:
    """Borders, the film's width and the body-unit scale that fits the rows `span` into the exposed field."""
    border_top, border_bottom = _borders(rng, height, artefacts)
    content = height - border_top - border_bottom
    unit_px = content / (span[1] - span[0])
    field_w = min(unit_px * rng.uniform(0.55, 0.9), 0.8 * content) if has_spine else content * rng.uniform(0.3, 0.45)
    if width is None:
        left, right = _borders(rng, int(field_w), artefacts)
        width = max(FILM_HEIGHT_RANGE[0] // 4, int(round(field_w)) + left + right)
    else:
        left, right = _borders(rng, width, artefacts)
    field = (left, border_top, width - right, height - border_bottom)
    origin = ((field[0] + field[2]) / 2 + rng.uniform(-0.05, 0.05) * (field[2] - field[0]),
              border_top - span[0] * unit_px)
    return _Painter(height, width, unit_px, origin), field


def make_full_length(
    seed: int,
    height: int | None = None,
    width: int | None = None,
    variant: str = "standard",
    *,
    bit_depth: int = 8,
    rgb: bool = False,
    curve: str | None = None,
    cobb_degrees: float | None = None,
    start: str | None = None,
    end: str | None = None,
    artefacts: bool = True,
    noise: float | None = None,
) -> FullLengthFilm:
    """A synthetic full-length film as clinics take them, with exact landmarks; None parameters come from the seed.

    height: film rows (256-10000; None: 500-7500, log-uniform); width: None follows the anatomy (about 0.3-0.5 of the
    height). variant: see FULL_LENGTH_VARIANTS. start: "skull" or "neck"; end: "pelvis" or "femurs" (standard,
    upside-down and lateral films; a cut-off film ends in the thorax, between T6 and T11). artefacts: black borders,
    a ruler, burnt-in text and a lead side marker. rgb: a screen capture, (H, W, 3) uint8 with coloured overlays.
    """
    _check_film_arguments(variant, bit_depth, rgb, start, end, curve)
    rng = np.random.default_rng(seed)
    if height is None:
        height = int(round(np.exp(rng.uniform(np.log(500), np.log(7500)))))
    low, high = FILM_HEIGHT_RANGE
    if not low <= height <= high:
        raise ValueError(f"film height {height} is outside {low}-{high} pixels")
    if width is not None and not low // 4 <= width <= high:
        raise ValueError(f"film width {width} is outside {low // 4}-{high} pixels")
    spine = cervical = None
    if variant not in NO_SPINE_VARIANTS:
        curve = curve or str(rng.choice(["C", "S", "straight"], p=[0.45, 0.45, 0.1]))
        if cobb_degrees is None:
            cobb_degrees = 0.0 if curve == "straight" else float(rng.uniform(8, 45))
        spine = _spine_units(rng, curve, cobb_degrees)
    face = float(rng.choice([-1.0, 1.0]))
    if variant == "lateral":
        spine = _lateral_bodies(rng, spine, face)
    if spine is not None:
        cervical = _cervical_units(rng, spine, sagittal=face * 0.35 if variant == "lateral" else 0.0)
    skull_size = float(rng.uniform(0.92, 1.08))
    vertex = float(cervical[0, :2, 1].mean()) - 0.25 * skull_size if cervical is not None else 0.0
    top, bottom, start, end = _framing(rng, variant, spine, vertex, start, end)
    painter, field = _lay_out(rng, height, width, (top, bottom), spine is not None, artefacts)
    width = painter.width
    parts = None
    if variant == "lateral":
        density = _paint_lateral(painter, rng, spine, cervical, face, skull_size)
    elif variant == "limb":
        density = _paint_limb(painter, rng)
    elif variant == "blank":
        density = np.full(painter.shape, rng.uniform(0.2, 0.5), np.float32)
    else:
        density, parts = _paint_ap(painter, rng, spine, cervical, skull_size)
    img = _finish(rng, density, height, width, noise if noise is not None else float(rng.uniform(0.008, 0.035)))
    side_marker = _lead_marker(rng, img, field) if artefacts else ""
    landmarks = np.full((N_VERTEBRAE, 4, 2), np.nan)
    t1_top = l5_bottom = np.nan
    anatomy = None if parts is None else _film_anatomy(painter, parts, start, end)
    if spine is not None:
        film_pts = painter.film(spine)
        inside = _level_mask(film_pts, field)
        landmarks[inside] = film_pts[inside]
        t1_top, l5_bottom = float(film_pts[0, :2, 1].mean()), float(film_pts[-1, 2:, 1].mean())
    if variant == "upside-down":
        img = img[::-1, ::-1].copy()
        landmarks, anatomy = _rotate(landmarks, width, height), _rotate_anatomy(anatomy, width, height)
        t1_top, l5_bottom = height - 1 - t1_top, height - 1 - l5_bottom
        field = (width - field[2], height - field[3], width - field[0], height - field[1])
    x0, y0, x1, y1 = field
    img[:y0], img[y1:], img[:, :x0], img[:, x1:] = 0, 0, 0, 0
    spacing_mm = float(rng.uniform(380, 500) / painter.unit_px) if spine is not None else float(rng.uniform(0.1, 0.2))
    if rgb:
        img = np.repeat(img[..., None], 3, axis=2)
    text = _burn_in(rng, img, field, spacing_mm, rgb) if artefacts else []
    stored_bits = 8 if bit_depth == 8 else int(rng.choice([12, 14, 16]))
    pixels = np.rint(np.clip(img, 0.0, 1.0) * ((1 << stored_bits) - 1))
    pixels = pixels.astype(np.uint8 if bit_depth == 8 else np.uint16)
    present = np.isfinite(landmarks).all(axis=(1, 2))
    pts = landmarks[present].reshape(-1, 2)
    return FullLengthFilm(
        image=pixels, landmarks=landmarks, variant=variant,
        levels_in_film=tuple(VERTEBRAE[i] for i in np.flatnonzero(present)), t1_top_row=t1_top,
        l5_bottom_row=l5_bottom,
        spine_box=tuple(float(v) for v in (*pts.min(axis=0), *pts.max(axis=0))) if len(pts) else (np.nan,) * 4,
        thorax_to_pelvis=(np.nan, np.nan) if anatomy is None else
        tuple(sorted((anatomy.lung_apex, anatomy.pelvis_bottom))),
        field=field, anatomy=anatomy, curve=curve if anatomy is not None else "none",
        target_cobb=float(cobb_degrees) if anatomy is not None else np.nan, bit_depth=bit_depth,
        stored_bits=stored_bits, spacing_mm=spacing_mm, side_marker=side_marker, text=tuple(text),
    )


def _burn_in(rng: np.random.Generator, img: np.ndarray, field: tuple[int, int, int, int], spacing_mm: float,
             rgb: bool) -> list[str]:
    """Burnt-in text in the top corners and, on some films, a ruler; coloured on screen captures."""
    height, width = img.shape[:2]
    palette = [(1.0, 1.0, 1.0), (1.0, 1.0, 0.3), (0.4, 1.0, 0.4), (0.5, 0.9, 1.0)]
    colour = palette[int(rng.integers(len(palette)))] if rgb else (float(rng.uniform(0.8, 1.0)),)
    left, right = _text_lines(rng)
    size = max(7.0, height * rng.uniform(0.006, 0.012))
    margin = max(2, int(size * 0.5))
    for i, line in enumerate(left):
        _put_text(img, line, margin, int(margin + size * (1.5 * i + 1)), size, colour)
    for i, line in enumerate(right):
        _put_text(img, line, width - margin, int(margin + size * (1.5 * i + 1)), size, colour, right=True)
    if rng.random() < 0.6:
        _ruler(rng, img, field, spacing_mm, (0.7, 0.7, 0.7) if rgb else colour)
    return left + right


def _film_anatomy(p: _Painter, parts: dict, start: str, end: str) -> FilmAnatomy:
    """The anatomy dict of _paint_ap in film pixels."""

    def row(v: float) -> float:
        return float(p.film(np.array([0.0, v]))[1])

    heads = parts["femoral_heads"].copy()
    heads[:, :2] = p.film(heads[:, :2])
    heads[:, 2] *= p.unit_px
    return FilmAnatomy(
        start=start, end=end, skull_top=row(parts["skull_top"]), chin=row(parts["chin"]),
        cervical=p.film(parts["cervical"]), clavicles=p.film(parts["clavicles"]),
        rib_heads=p.film(parts["rib_heads"]), rib_tips=p.film(parts["rib_tips"]), sacrum=p.film(parts["sacrum"]),
        iliac_crests=p.film(parts["iliac_crests"]), femoral_heads=heads, lung_apex=row(parts["lung_apex"]),
        pelvis_bottom=row(parts["pelvis_bottom"]),
    )


def _rotate(pts: np.ndarray, width: int, height: int) -> np.ndarray:
    """Points of a film turned by 180 degrees."""
    out = np.array(pts, dtype=np.float64, copy=True)
    out[..., 0] = width - 1 - out[..., 0]
    out[..., 1] = height - 1 - out[..., 1]
    return out


def _rotate_anatomy(a: FilmAnatomy, width: int, height: int) -> FilmAnatomy:
    heads = a.femoral_heads.copy()
    heads[:, :2] = _rotate(heads[:, :2], width, height)
    flip = height - 1
    return FilmAnatomy(
        start=a.start, end=a.end, skull_top=flip - a.skull_top, chin=flip - a.chin,
        cervical=_rotate(a.cervical, width, height), clavicles=_rotate(a.clavicles, width, height),
        rib_heads=_rotate(a.rib_heads, width, height), rib_tips=_rotate(a.rib_tips, width, height),
        sacrum=_rotate(a.sacrum, width, height), iliac_crests=_rotate(a.iliac_crests, width, height),
        femoral_heads=heads, lung_apex=flip - a.lung_apex, pelvis_bottom=flip - a.pelvis_bottom,
    )
