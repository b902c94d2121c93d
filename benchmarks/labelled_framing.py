"""Does the frame place a tight film's levels? Each labelled film is read whole and again cut to its labelled spine
with the training films' margins (TRAINING_FRAMING: 3.4 % of the T1-L5 span above T1's top, 7.8 % below L5's
bottom): above only, below only, and both. The answers are mapped back to the film and scored against the labels.

If the cascade read its levels off the frame, the cut films would come out right. On the January-2017 films the
2016 cascade places a level too high, they do not (docs/experiments.md, 2026-12-05, late morning).

Run: python benchmarks/labelled_framing.py --model runs/period-2016.safetensors --data ../shared/aasce \
         --split period-2017 [--out runs/labelled-framing.jsonl]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from spinecascade.io.dataset import AasceDataset
from spinecascade.io.images import Radiograph
from spinecascade.measurement.label_check import check_landmarks
from spinecascade.measurement.metrics import vertical_miss_levels
from spinecascade.measurement.quality import answer_rows
from spinecascade.method.prediction import Predictor
from spinecascade.method.spine_locator import TRAINING_FRAMING

READINGS = ("whole", "cut above", "cut below", "cut at both")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="period-2017")
    parser.add_argument("--out", type=Path, help="one JSON line per film")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    predictor = Predictor(args.model, device="cpu")
    predictor.cascade.spine_locator = None  # the film as cut is what the cascade reads
    samples = [s for s in AasceDataset(args.data).split(args.split)
               if not check_landmarks(s.landmarks, s.width, s.height)]
    rows = []
    for sample in tqdm(samples, desc="films", unit="film"):
        film = predictor.load(sample.image_path).to_uint8()
        height = film.shape[0]
        t1_top, l5_bottom = answer_rows(sample.landmarks)
        span = l5_bottom - t1_top
        above, below = t1_top - TRAINING_FRAMING[0] * span, l5_bottom + TRAINING_FRAMING[1] * span
        row = {"image": sample.name}
        for name, (top, bottom) in zip(READINGS, ((0, height), (above, height), (0, below), (above, below))):
            top, bottom = int(max(0, top)), int(min(height, bottom))
            answer = predictor.predict(Radiograph(np.ascontiguousarray(film[top:bottom])))
            row[name] = vertical_miss_levels(answer.landmarks + [0, top], sample.landmarks)
        rows.append(row)
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    whole = np.array([r["whole"] for r in rows])
    too_high = whole <= -0.5
    print(f"{len(rows)} films whose labels pass the checker ({args.split})")
    for name in READINGS:
        miss = np.array([r[name] for r in rows])
        line = (f"{name:>12}: {int((abs(miss) >= 0.5).sum())} half a level or more off "
                f"({int((miss <= -0.5).sum())} too high, {int((miss >= 0.5).sum())} too low)")
        if name != "whole":
            line += (f"; of the {int(too_high.sum())} too high read whole, {int((miss[too_high] <= -0.5).sum())} "
                     f"still too high, {int((abs(miss[too_high]) < 0.5).sum())} mended")
        print(line)


if __name__ == "__main__":
    main()
