"""`pip install .` (not editable) into a fresh environment, then `spinecascade predict` from another folder: the
shipped model comes with the package, not from the repository."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "apps" / "scoliosis" / "sample_studies" / "sunhl-1th-26-Jul-2016-70_A_AP.jpg"


def test_an_installed_package_predicts_with_its_own_model_from_any_folder(tmp_path: Path):
    source = tmp_path / "source"  # a copy, so that the build leaves nothing in the repository
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "lib", source / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run = {"check": True, "capture_output": True, "text": True, "timeout": 300}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "wheels"), str(source)], **run)
    wheel = next((tmp_path / "wheels").glob("spinecascade-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], **run)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)], **run)
    # The dependencies (torch and the rest) come from this environment instead of a download; spinecascade
    # itself is only what the wheel installed.
    packages = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              **run).stdout.strip()
    (Path(packages) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import spinecascade; print(spinecascade.__file__)"], cwd=elsewhere,
                           **run).stdout.strip()
    assert where.startswith(packages), where
    out = elsewhere / "answer.json"
    subprocess.run([str(venv / "bin" / "spinecascade"), "predict", str(SAMPLE), "--out", str(out)], cwd=elsewhere,
                   env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, **run)
    answer = json.loads(out.read_text())
    reference = json.loads((REPO / "tests" / "data" / "shipped_model_reference.json").read_text())
    assert answer["model"]["version"] == reference["model_version"]
    points = np.array([[p["x"], p["y"]] for p in answer["landmarks"]])
    np.testing.assert_allclose(points, reference["landmarks"][SAMPLE.name], atol=1e-3)
