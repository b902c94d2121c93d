"""The scoliosis app's `--conf` parsing: defaults, overrides, and a clear refusal of anything it cannot use."""

from __future__ import annotations

import pytest
from conftest import load_app_module

config = load_app_module("lib/configs/landmarks.py", "scoliosis_app_config")


def test_defaults_serve_the_shipped_model(tmp_path):
    app = config.AppConfig.from_conf(tmp_path, {})
    assert app.model_path == (tmp_path / "model" / "spinecascade.safetensors").resolve()
    assert (app.device, app.threads, app.train) == (None, 2, config.TrainDefaults())


def test_every_option_can_be_set(tmp_path):
    conf = {"model_path": str(tmp_path / "m.safetensors"), "device": "cuda:1", "threads": "1", "epochs": "3",
            "scratch_epochs": "5", "learning_rate": "1e-4", "scratch_learning_rate": "1e-3", "batch_images": "4",
            "min_scratch_images": "10", "augment": "off", "lr_decay": "0.7", "scratch_lr_decay": "1",
            "film_framing": "0", "on_demand_scores": "2", "server_mode": "true"}
    app = config.AppConfig.from_conf(tmp_path, conf)
    assert app.model_path == tmp_path / "m.safetensors"
    assert (app.device, app.threads, app.on_demand_scores) == ("cuda:1", 1, 2)
    assert app.train == config.TrainDefaults(3, 5, 1e-4, 1e-3, 4, 10, augment=False, lr_decay=0.7,
                                             scratch_lr_decay=1.0, film_framing=0.0)
    assert set(conf) - {"server_mode"} == set(config.OPTIONS)


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"model": "x"}, "unknown --conf key"),
        ({"threads": "two"}, "expected an integer"),
        ({"epochs": "0"}, "must be positive"),
        ({"learning_rate": "-1"}, "must be positive"),
        ({"scratch_lr_decay": "1.5"}, "scratch_lr_decay '1.5': must be at most 1"),
        ({"device": "tpu"}, "expected cpu, cuda or cuda:N"),
        ({"augment": "maybe"}, "augment 'maybe': expected true or false"),
        ({"film_framing": "200"}, r"film_framing: '200' is not in \[0, 170\]"),
        ({"film_framing": "a lot"}, "film_framing: 'a lot' is not a number of pixels"),
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
