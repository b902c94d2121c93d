"""`spinecascade benchmark`: latency, throughput and peak memory of prediction on this machine.

A benchmark prints figures; it asserts nothing. Latency is end to end: file decode to Cobb angles.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from spinecascade.cli.options import add_precision_option
from spinecascade.errors import SpineCascadeError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".dcm", ".nrrd", ".nii", ".gz", ".tif", ".tiff", ".bmp"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="latency, throughput and memory of prediction on this machine",
                       description="Median and p90 latency of one prediction (file decode to angles), batch "
                       "throughput and peak memory. Images: --images DIR (the repository's "
                       "apps/scoliosis/sample_studies "
                       "are four training films), else a synthetic film of typical training size (1200 x 3000).")
    p.add_argument("--model", type=Path, default=None, help="model file (default: the shipped model)")
    p.add_argument("--images", type=Path, default=None, help="folder of X-rays to time")
    p.add_argument("--repeats", type=int, default=20, help="timed single-image predictions (default 20)")
    p.add_argument("--batch", type=int, default=8, help="images per batch for the throughput figure")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default=None)
    add_precision_option(p)
    p.add_argument("--no-mirror", action="store_true",
                   help="predict without the mirror view: half the work, but no uncertainty")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _images(folder: Path | None, scratch: Path) -> list[Path]:
    if folder is not None:
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise SpineCascadeError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
        return found
    from spinecascade.io.images import save_image
    from spinecascade.synthetic import make_spine

    path = scratch / "synthetic-film.jpg"
    save_image(path, make_spine(0, 1200, 3000).image)
    return [path]


def run(args: argparse.Namespace) -> int:
    import torch

    from spinecascade.method.prediction import Predictor

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]  # other work on the machine slows every figure below
    with tempfile.TemporaryDirectory() as scratch:
        images = _images(args.images, Path(scratch))
        predictor = Predictor(args.model, device=args.device, mirror=not args.no_mirror,
                              precision=args.precision)
        for path in images[:2]:
            predictor.predict(path)
        latencies, parts = [], []
        for i in range(args.repeats):
            start = time.perf_counter()
            pred = predictor.predict(images[i % len(images)])
            latencies.append((time.perf_counter() - start) * 1e3)
            parts.append(pred.timings_ms)
        batch = [images[i % len(images)] for i in range(args.batch)]
        predictor.predict_batch(batch)  # a batch's first run pays for its new shapes (cuDNN picks kernels on a GPU)
        start = time.perf_counter()
        predictor.predict_batch(batch)
        throughput = len(batch) / (time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu_peak_mb = torch.cuda.max_memory_allocated(predictor.device) / 2**20 if predictor.device.type == "cuda" else None
    result = {
        "device": str(predictor.device),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "mirror_view": predictor.mirror,
        "precision": predictor.precision,
        "model_version": predictor.version,
        "images": len(images),
        "latency_ms": {"median": float(np.median(latencies)), "p90": float(np.percentile(latencies, 90)),
                       "min": float(np.min(latencies))},
        "breakdown_ms": {k: float(np.median([p[k] for p in parts])) for k in parts[0]},
        "batch_throughput_images_per_s": throughput,
        "peak_memory_mb": peak_mb,
        "gpu_peak_memory_mb": gpu_peak_mb,
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    lat = result["latency_ms"]
    print(f"device {result['device']}, {result['threads']} threads, model {result['model_version']}, "
          f"{predictor.precision} encoders, {len(images)} image(s), "
          f"{'with' if predictor.mirror else 'without'} the mirror view; {result['cpus']} CPUs, load average "
          f"{load_before:.2f} before the run")
    print(f"latency   median {lat['median']:.1f} ms   p90 {lat['p90']:.1f} ms   (end to end, file to angles)")
    print("breakdown " + "  ".join(f"{k} {v:.1f} ms" for k, v in result["breakdown_ms"].items()))
    print(f"batch     {throughput:.2f} images/s (batch of {args.batch})")
    print(f"memory    peak {peak_mb:.0f} MB (resident set of this process)"
          + (f", {gpu_peak_mb:.0f} MB on the GPU (tensors)" if gpu_peak_mb is not None else ""))
    return 0
