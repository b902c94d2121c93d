"""Draw the module icon (128 x 128 PNG): vertebrae along a curve, corner points, two Cobb lines.

Run from the repository root with the project's environment: `python slicer_extension/tools/make_icon.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = 128
SCALE = 4  # drawn large and scaled down, for smooth edges
OUTPUT = Path(__file__).resolve().parents[1] / "SpineCascade" / "Resources" / "Icons" / "SpineCascade.png"


def draw() -> Image.Image:
    big = SIZE * SCALE
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    pen = ImageDraw.Draw(image)
    pen.rounded_rectangle((0, 0, big - 1, big - 1), radius=22 * SCALE, fill=(28, 36, 52, 255))
    count = 7
    t = np.linspace(0.0, 1.0, count)
    centres_y = big * (0.16 + 0.68 * t)
    centres_x = big * (0.5 + 0.09 * np.sin(2 * np.pi * 0.9 * t))
    # Tilts softened from the curve's slope so that the vertebrae still read as vertebrae at 32 pixels.
    tilt = -0.6 * np.arctan(0.09 * 2 * np.pi * 0.9 * np.cos(2 * np.pi * 0.9 * t) / 0.68)
    half_w, half_h = big * 0.14, big * 0.036
    corners = []
    for x, y, angle in zip(centres_x, centres_y, tilt, strict=True):
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        box = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]]) @ rotation.T
        box += (x, y)
        pen.polygon([tuple(p) for p in box], fill=(226, 220, 204, 255))
        corners.append(box)
    for upper, lower, colour in ((0, 3, (90, 165, 255, 255)), (3, 6, (242, 90, 216, 255))):
        for start, end in ((corners[upper][0], corners[upper][1]), (corners[lower][3], corners[lower][2])):
            reach = (end - start) * 0.45
            pen.line([tuple(start - reach), tuple(end + reach)], fill=colour, width=3 * SCALE)
    for k, box in enumerate(corners):
        for n, point in enumerate(box):
            colour = (255, 140, 26, 255) if (k, n) in ((2, 1), (5, 3)) else (64, 217, 89, 255)
            radius = 3.2 * SCALE
            pen.ellipse((point[0] - radius, point[1] - radius, point[0] + radius, point[1] + radius), fill=colour)
    return image.resize((SIZE, SIZE), Image.LANCZOS)


if __name__ == "__main__":
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    draw().save(OUTPUT, optimize=True)
