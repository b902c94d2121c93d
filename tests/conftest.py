"""Shared fixtures: the AASCE data when present, and a small cascade trained here on synthetic spines."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
AASCE = REPO.parent / "shared" / "aasce"

# Slicer loads the module's SpineCascadeLib from the module folder; the tests import it from there too.
SLICER_MODULE = REPO / "slicer_extension" / "SpineCascade"
if str(SLICER_MODULE) not in sys.path:
    sys.path.insert(0, str(SLICER_MODULE))

def load_app_module(relative: str, name: str) -> ModuleType:
    """A module of the scoliosis app loaded from its file: putting the app's top-level `lib` package on sys.path
    would leak into other tests."""
    spec = importlib.util.spec_from_file_location(name, REPO / "apps" / "scoliosis" / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


needs_aasce = pytest.mark.skipif(not (AASCE / "labels" / "training").is_dir(),
                                 reason="../shared/aasce (AASCE training data) is not present")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real model file of the `small` recipe (every part) trained on synthetic spines; about a minute."""
    from spinecascade.training.train import train_synthetic_model

    return train_synthetic_model(tmp_path_factory.mktemp("model") / "tiny.safetensors")
