"""One training run of the scoliosis app (lib/trainers/job.py), called in-process: what it publishes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from conftest import load_app_module

from spinecascade.method.cascade import Cascade
from spinecascade.method.model_file import load_model, read_metadata, save_model
from spinecascade.method.workflow import corner_heatmap_config
from spinecascade.synthetic import write_aasce_layout

job = load_app_module("lib/trainers/job.py", "scoliosis_app_train_job")


def _train_from_scratch(model_path: Path, studies: Path, seed: int, **train: int) -> dict:
    """One from-scratch job on six synthetic films, as the app's training task runs it."""
    names = write_aasce_layout(studies, 6, seed=seed, width=96, height=240)
    samples = [{"name": n, "image": str(studies / "data" / "training" / n),
                "label": str(studies / "labels" / "training" / f"{n}.mat")} for n in names]
    threads = torch.get_num_threads()
    try:
        return job.run_job(job.TrainJob(str(model_path), samples, True, {"epochs": 1, "batch_images": 2, **train},
                                        "cpu", 1, str(studies)))
    finally:
        torch.set_num_threads(threads)  # run_job sets the process's thread count


def test_training_from_scratch_runs_as_many_stages_as_the_model_it_replaces(tiny_model: Path, tmp_path: Path):
    served, info = load_model(tiny_model)
    served.set_prediction_stages(1, 1)
    model_path = tmp_path / "model" / "spinecascade.safetensors"
    save_model(model_path, served, info)
    state = _train_from_scratch(model_path, tmp_path / "studies", 900)
    assert state["status"] == "DONE", state
    assert state["model_version"] == read_metadata(model_path)["sha256"][:12] != state["previous_version"]
    assert load_model(model_path)[0].prediction_stages.tolist() == [1, 1]


def test_training_from_scratch_without_warps_replaces_a_model_that_runs_no_stage(tiny_model: Path, tmp_path: Path):
    """The shipped layout (film start, level finder, corner heatmaps; no stage run) retrained from scratch without
    the warps: no film start then, so step 1 gets its stages back and the new model runs them all."""
    tiny, info = load_model(tiny_model)
    config = replace(tiny.config, n_stages=0, corner_heatmaps=corner_heatmap_config(tiny.config))
    served = Cascade(config)
    served.load_state_dict({k: v for k, v in tiny.state_dict().items() if k in served.state_dict()}, strict=False)
    served.set_prediction_stages(0, 0)
    model_path = tmp_path / "model" / "spinecascade.safetensors"
    save_model(model_path, served, info)
    state = _train_from_scratch(model_path, tmp_path / "studies", 901, heatmap_epochs=1)
    assert state["status"] == "DONE", state
    published = load_model(model_path)[0]
    assert published.film_start is None and published.corner_heatmaps is not None
    assert published.prediction_stages.tolist() == [3, 3] == [published.config.n_stages] * 2
