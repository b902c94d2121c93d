"""`spinecascade predict`: 68 corners, centres and Cobb angles for X-ray images."""

from __future__ import annotations

import argparse
from pathlib import Path

from spinecascade.cli.options import add_precision_option
from spinecascade.errors import SpineCascadeError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="find the 68 corners and the Cobb angles on X-ray images",
                       description="Writes our JSON label (with centres, angles, uncertainty) per image. One image "
                       "and --out FILE.json writes that file; otherwise --out is a folder (default: next to each "
                       "image as IMAGE.landmarks.json).")
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    p.add_argument("--model", type=Path, default=None, help="model file (default: the shipped model)")
    p.add_argument("--out", type=Path, default=None, help="output file (one image) or folder")
    p.add_argument("--mrk", action="store_true", help="also write 3D Slicer .mrk.json")
    p.add_argument("--overlay", action="store_true", help="also write a PNG with the corners and angles drawn")
    p.add_argument("--sr", type=Path, default=None, metavar="REPORT.dcm",
                   help="one DICOM film only: also write the result as a DICOM Structured Report (TID 1500) that "
                        "references the film, for PACS pipelines")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present)")
    add_precision_option(p)
    p.add_argument("--batch-size", type=int, default=4)


def _outputs(image: Path, out: Path | None, single: bool) -> Path:
    if out is not None and single and out.suffix == ".json":
        return out
    folder = out if out is not None else image.parent
    if out is not None and out.suffix == ".json":
        raise SpineCascadeError(f"{out}: give a folder, not a .json file, when predicting several images")
    return folder / f"{image.name}.landmarks.json"


def _film_for_report(images: list[Path]):
    """The header of the one DICOM film a report is asked for; a clear error for anything else."""
    import pydicom

    if len(images) != 1:
        raise SpineCascadeError(f"--sr writes the report of one film; {len(images)} images were given")
    try:
        return pydicom.dcmread(images[0], stop_before_pixels=True)
    except pydicom.errors.InvalidDicomError:
        raise SpineCascadeError(f"{images[0]}: --sr needs a DICOM film (the report references its study, series "
                                "and instance)") from None


def run(args: argparse.Namespace) -> int:
    from spinecascade.io.images import load_image
    from spinecascade.io.labels import write_json_label, write_mrk_json
    from spinecascade.io.overlay import write_overlay
    from spinecascade.method.prediction import Predictor

    single = len(args.images) == 1
    film = _film_for_report(args.images) if args.sr else None
    predictor = Predictor(args.model, device=args.device, precision=args.precision)
    for start in range(0, len(args.images), args.batch_size):
        paths = args.images[start : start + args.batch_size]
        radiographs = [predictor.load(p) for p in paths]
        for path, radiograph, pred in zip(paths, radiographs, predictor.predict_batch(radiographs)):
            target = _outputs(path, args.out, single)
            target.parent.mkdir(parents=True, exist_ok=True)
            label = pred.to_label(path.name, radiograph.spacing)
            write_json_label(target, label)
            written = [target]
            if args.mrk:
                mrk = target.with_name(target.name.removesuffix(".json") + ".mrk.json")
                write_mrk_json(mrk, label, spacing=radiograph.spacing or (1.0, 1.0), origin=radiograph.origin)
                written.append(mrk)
            if args.overlay:
                png = target.with_name(target.name.removesuffix(".json") + ".png")
                full = radiograph if radiograph.downscale == 1 else load_image(path)  # drawn at the file's size
                write_overlay(png, full.to_uint8(), pred.landmarks, pred.cobb, crop=pred.window,
                              review=pred.quality.reasons if pred.quality.review_needed else None)
                written.append(png)
            if film is not None:
                from spinecascade.io.dicom_sr import write_sr

                args.sr.parent.mkdir(parents=True, exist_ok=True)
                write_sr(args.sr, label, film)
                written.append(args.sr)
            angles = "  ".join(f"{a.name} {a.degrees:.1f} ({a.end_vertebrae[0]}-{a.end_vertebrae[1]})"
                               for a in pred.cobb.angles)
            review = ("REVIEW NEEDED: " + "; ".join(pred.quality.reasons)) if pred.quality.review_needed \
                else "no review flag"
            print(f"{path}: {angles}  uncertainty {pred.image_uncertainty:.1f} px  {review} -> "
                  + ", ".join(str(w) for w in written))
    return 0
