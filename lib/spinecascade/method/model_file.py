"""The model file: one safetensors file with the weights, PCA matrices, mean shapes and all settings.

Weights are stored in half precision (the shipped file stays small); the shape models and mean shapes, which
set the geometry directly, stay in single precision. A SHA-256 of the tensor data in the header catches
corruption that safetensors' own length checks cannot see.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib.resources import files
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from spinecascade.errors import ModelFileError
from spinecascade.io.atomic import atomic_path
from spinecascade.method.cascade import Cascade, CascadeConfig

FORMAT = "spinecascade-cascade"
# 2: every setting written out (no defaults for settings older files lacked); the training metadata names its
# recipe. Files of version 1 are refused.
FORMAT_VERSION = 2
SHIPPED_MODEL = "spinecascade.safetensors"  # in the package's models/ folder
_FULL_PRECISION = ("shape_model.", "mean_centres", "mean_corner_offsets")


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        h.update(key.encode())
        h.update(tensors[key].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_model(path: str | Path, cascade: Cascade, info: dict) -> None:
    """Write atomically; `info` describes the training data and its metrics (JSON-serialisable).

    """
    tensors = {}
    for key, value in cascade.state_dict().items():
        value = value.detach().cpu()
        if value.is_floating_point() and not any(k in key for k in _FULL_PRECISION):
            value = value.half()
        tensors[key] = value.contiguous()
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(cascade.config.as_dict()),
        "info": json.dumps(info),
        "sha256": _digest(tensors),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_metadata(path: str | Path) -> dict:
    """Header only: format, config and info, without loading the weights."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or n > 100_000_000:
                raise ValueError("header length out of range")
            header = json.loads(f.read(n))
        meta = header.get("__metadata__", {})
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: not a SpineCascade model file (unreadable header: {exc})") from None
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a SpineCascade model file (format {meta.get('format')!r})")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise ModelFileError(
            f"{path}: model file format version {meta.get('format_version')}; this version of spinecascade reads "
            f"version {FORMAT_VERSION} only: train the model again with `spinecascade train --recipe ...`"
        )
    return meta


def shipped_model_path() -> Path:
    """The model installed with the package (package data), whichever folder the program runs from."""
    return Path(str(files("spinecascade") / "models" / SHIPPED_MODEL))


def default_model_path() -> Path:
    """$SPINECASCADE_MODEL when set, else the shipped model."""
    configured = os.environ.get("SPINECASCADE_MODEL")
    return Path(configured).expanduser() if configured else shipped_model_path()


def load_model(path: str | Path) -> tuple[Cascade, dict]:
    """The cascade in eval mode on the CPU, and its info; ModelFileError for anything wrong with the file."""
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: corrupt or truncated model file ({exc})") from None
    if _digest(tensors) != meta.get("sha256"):
        raise ModelFileError(f"{path}: corrupt model file (checksum mismatch)")
    try:
        config = CascadeConfig.from_dict(json.loads(meta["config"]))
        cascade = Cascade(config)
        own = cascade.state_dict()
        cascade.load_state_dict({k: v.to(own[k].dtype) if k in own else v for k, v in tensors.items()})
        info = json.loads(meta.get("info", "{}"))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: incompatible model file ({exc})") from None
    return cascade.eval(), info
