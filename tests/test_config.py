import dataclasses
import json

import pytest

from ppl_vae.config import EvalConfig, ModelConfig, RunConfig, TrainConfig
from ppl_vae.errors import InputError


def test_json_round_trip():
    config = RunConfig(
        model=ModelConfig(x_dim=784, image_shape=(1, 28, 28), z_dim=50, hidden=(400,), scale_param="log_var"),
        train=TrainConfig(epochs=3, elbo="meanfield", lr=5e-4),
        evaluation=EvalConfig(k=5000),
    )
    assert RunConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train": {"epochs": 0}}, "--epochs must be an integer >= 1, got 0"),
        ({"train": {"batch_size": -5}}, "--batch-size must be an integer >= 1, got -5"),
        ({"train": {"lr": -1.0}}, "--lr must be a positive number, got -1.0"),
        ({"train": {"elbo": "renyi"}}, "--elbo: unknown objective 'renyi': expected one of"),
        ({"train": {"device": "gpu0"}}, "--device 'gpu0' is not a torch device"),
        ({"evaluation": {"k": 0}}, "--k must be an integer >= 1, got 0"),
        ({"model": {"likelihood": "poisson"}}, "--likelihood: unknown likelihood 'poisson'"),
        ({"train": {"epocs": 3}}, r"unknown keys \['epocs'\]"),
    ],
)
def test_bad_values_in_a_config_file_are_named(change, message):
    raw = json.loads(RunConfig(model=ModelConfig(x_dim=64, image_shape=(1, 8, 8))).to_json())
    for section, values in change.items():
        raw[section].update(values)
    with pytest.raises(InputError, match=message):
        RunConfig.from_json(json.dumps(raw))


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().epochs = 3
