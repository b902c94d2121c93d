"""Make the `spinecascade` library importable from 3D Slicer's Python, without a second copy of it.

The module needs only the library's dependency-light parts (landmarks, label formats, Cobb angles, image
reading: numpy, scipy and Pillow, which Slicer bundles). Where it comes from, first match wins:

1. an already importable `spinecascade` (for example installed into Slicer with
   `slicer.util.pip_install("--no-deps /path/to/checkout")`);
2. the folder named by the environment variable SPINECASCADE_LIB (the `lib` folder of a checkout);
3. the `lib` folder of the checkout this extension lies in (`<repo>/slicer_extension/...`).

For 2 and 3 the folder is put on sys.path instead of being pip-installed: that needs no network and no build
step, does not pull in the package's declared heavy dependencies (torch, OpenCV), and Slicer then always runs
the very code the tests check.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

ENVIRONMENT_VARIABLE = "SPINECASCADE_LIB"
# The parts the module uses; importing them up front turns a missing dependency into one clear error.
REQUIRED_MODULES = (
    "spinecascade.landmarks",
    "spinecascade.measurement.cobb",
    "spinecascade.io.labels",
    "spinecascade.io.images",
)


def checkout_lib(start: Path | None = None) -> Path | None:
    """The `lib` folder of the repository checkout that contains `start` (this file by default), if any."""
    here = (start or Path(__file__)).resolve()
    for parent in here.parents:
        if (parent / "lib" / "spinecascade" / "__init__.py").is_file():
            return parent / "lib"
    return None


def _candidates() -> list[Path]:
    found = []
    configured = os.environ.get(ENVIRONMENT_VARIABLE)
    if configured:
        found.append(Path(configured).expanduser())
    checkout = checkout_lib()
    if checkout is not None:
        found.append(checkout)
    return found


def ensure_spinecascade() -> str:
    """Import the library's parts the module needs and return the folder the package was loaded from."""
    try:
        importlib.import_module("spinecascade")
    except ImportError:
        for folder in _candidates():
            if (folder / "spinecascade" / "__init__.py").is_file():
                sys.path.insert(0, str(folder))
                importlib.invalidate_caches()
                logger.info("SpineCascade: using the spinecascade library in %s", folder)
                break
        else:
            raise ImportError(
                "SpineCascade needs the spinecascade library, which is not importable here. Either set "
                f"{ENVIRONMENT_VARIABLE} to the 'lib' folder of a spinecascade checkout and restart Slicer, or "
                "install it into Slicer's Python: slicer.util.pip_install('--no-deps /path/to/checkout')"
            ) from None
    for name in REQUIRED_MODULES:
        importlib.import_module(name)
    return str(Path(importlib.import_module("spinecascade").__file__).parent)
