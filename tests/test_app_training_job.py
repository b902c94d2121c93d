"""One training run of the scoliosis app (lib/trainers/job.py), called in-process: what it publishes."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import load_app_module

from spinecascade.method.model_file import load_model, read_metadata, save_model
from spinecascade.synthetic import write_aasce_layout

job = load_app_module("lib/trainers/job.py", "scoliosis_app_train_job")


def test_training_from_scratch_runs_as_many_stages_as_the_model_it_replaces(tiny_model: Path, tmp_path: Path):
    served, info = load_model(tiny_model)
    served.set_prediction_stages(1, 1)
    model_path = tmp_path / "model" / "spinecascade.safetensors"
    save_model(model_path, served, info)
    studies = tmp_path / "studies"
    names = write_aasce_layout(studies, 6, seed=900, width=96, height=240)
    samples = [{"name": n, "image": str(studies / "data" / "training" / n),
                "label": str(studies / "labels" / "training" / f"{n}.mat")} for n in names]
    threads = torch.get_num_threads()
    try:
        state = job.run_job(job.TrainJob(str(model_path), samples, True, {"epochs": 1, "batch_images": 2}, "cpu",
                                         1, str(studies)))
    finally:
        torch.set_num_threads(threads)  # run_job sets the process's thread count
    assert state["status"] == "DONE", state
    assert state["model_version"] == read_metadata(model_path)["sha256"][:12] != state["previous_version"]
    assert load_model(model_path)[0].prediction_stages.tolist() == [1, 1]
