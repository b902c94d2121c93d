"""The scoliosis app's `--conf` parsing: defaults, overrides, and a clear refusal of anything it cannot use."""

from __future__ import annotations

import pytest
from conftest import load_app_module

config = load_app_module("lib/configs/landmarks.py", "scoliosis_app_config")


def test_defaults_serve_the_apps_own_model_file(tmp_path):
    app = config.AppConfig.from_conf(tmp_path, {})
    assert app.model_path == (tmp_path / "model" / "spinecascade.safetensors").resolve()
    assert (app.device, app.threads, app.recipe, app.min_scratch_images) == (None, 2, None, 20)


def test_every_option_can_be_set(tmp_path):
    conf = {"model_path": str(tmp_path / "m.safetensors"), "device": "cuda:1", "threads": "1", "recipe": "paper",
            "min_scratch_images": "10", "on_demand_scores": "2", "server_mode": "true"}
    app = config.AppConfig.from_conf(tmp_path, conf)
    assert app.model_path == tmp_path / "m.safetensors"
    assert (app.device, app.threads, app.recipe, app.min_scratch_images, app.on_demand_scores) == (
        "cuda:1", 1, "paper", 10, 2)
    assert set(conf) - {"server_mode"} == set(config.OPTIONS)


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"model": "x"}, "unknown --conf key"),
        ({"epochs": "2"}, "unknown --conf key"),
        ({"threads": "two"}, "expected an integer"),
        ({"min_scratch_images": "0"}, "must be positive"),
        ({"device": "tpu"}, "expected cpu, cuda or cuda:N"),
        ({"recipe": "fast"}, "recipe 'fast': the recipes are paper, shipped, small"),
    ],
)
def test_bad_values_stop_the_server_with_the_key_named(tmp_path, conf, message):
    with pytest.raises(config.ConfigError, match=message):
        config.AppConfig.from_conf(tmp_path, conf)


@pytest.mark.parametrize(("value", "expected"), [(True, True), ("true", True), ("1", True), ("no", False),
                                                 (False, False), ("", False)])
def test_flag(value, expected):
    assert config.flag(value, "save_label") is expected


def test_flag_refuses_anything_else():
    with pytest.raises(config.ConfigError, match="save_label 'maybe'"):
        config.flag("maybe", "save_label")
