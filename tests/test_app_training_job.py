"""One training run of the scoliosis app (lib/trainers/job.py), called in-process: what it publishes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import load_app_module

from spinecascade.method.model_file import load_model, read_metadata
from spinecascade.synthetic import write_aasce_layout

job = load_app_module("lib/trainers/job.py", "scoliosis_app_train_job")


def _run(model_path: Path, studies: Path, seed: int, from_scratch: bool, settings: list[str]) -> dict:
    """One job on six synthetic films, as the app's training task runs it."""
    names = write_aasce_layout(studies, 6, seed=seed, width=96, height=240)
    samples = [{"name": n, "image": str(studies / "data" / "training" / n),
                "label": str(studies / "labels" / "training" / f"{n}.mat")} for n in names]
    threads = torch.get_num_threads()
    try:
        return job.run_job(job.TrainJob(str(model_path), samples, from_scratch, "small", settings, 1, 4, None,
                                        "cpu", 1, str(studies)))
    finally:
        torch.set_num_threads(threads)  # run_job sets the process's thread count


def test_training_from_scratch_follows_the_recipe_and_keeps_the_model_it_replaces(tiny_model: Path,
                                                                                  tmp_path: Path):
    model_path = tmp_path / "model" / "spinecascade.safetensors"
    model_path.parent.mkdir()
    shutil.copyfile(tiny_model, model_path)
    before = read_metadata(model_path)["sha256"][:12]
    state = _run(model_path, tmp_path / "studies", 900, True, ["model.n_stages=0"])
    assert state["status"] == "DONE", state
    assert state["model_version"] == read_metadata(model_path)["sha256"][:12] != before == state["previous_version"]
    assert read_metadata(Path(state["previous_model"]))["sha256"][:12] == before
    assert state["stages_done"] == state["stages_total"] == 3
    published, info = load_model(model_path)
    assert published.prediction_stages.tolist() == [0, 0] and info["recipe"] == "small"
    assert not (model_path.parent / job.NEW_MODEL_FILE).exists()


def test_a_setting_the_recipe_refuses_ends_the_run_with_its_name_and_leaves_the_model(tiny_model: Path,
                                                                                     tmp_path: Path):
    model_path = tmp_path / "model" / "spinecascade.safetensors"
    model_path.parent.mkdir()
    shutil.copyfile(tiny_model, model_path)
    with pytest.raises(ValueError, match="stages.lr_decay 2"):
        _run(model_path, tmp_path / "studies", 901, False, ["train.stages.lr_decay=2"])
    state = job.read_status(model_path.parent / job.STATS_FILE)
    assert state["status"] == "ERROR" and "stages.lr_decay 2" in state["message"]
    assert model_path.read_bytes() == tiny_model.read_bytes()
