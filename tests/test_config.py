import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

import ppl_vae
from ppl_vae.config import EvalConfig, ModelConfig, ProgramSpec, RunConfig, TrainConfig
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
        ({"train": {"beta": True}}, "--beta must be a positive number, got True"),
        ({"train": {"elbo": ["trace"]}}, r"--elbo must be a name \(a string\), got \['trace'\]"),
        ({"train": {"device": "gpu0"}}, "--device 'gpu0' is not a torch device"),
        ({"train": {"device": 0}}, "--device must be a torch device name, e.g. cpu or cuda:0, got 0"),
        ({"evaluation": {"k": 0}}, "--k must be an integer >= 1, got 0"),
        ({"model": {"guide": None}}, r"--guide must be a name \(a string\), got None"),
        ({"model": {"pixel_scale": 0}}, "--pixel-scale must be a positive number, got 0"),
        ({"model": {"pixel_scale": True}}, "--pixel-scale must be a positive number, got True"),
        ({"model": {"hidden": 128}}, "--hidden must list at least one layer width"),
        ({"model": {"image_shape": [1, 8.0, 8]}}, r"image_shape \(1, 8.0, 8\) must be \(C, H, W\), integers >= 1"),
        ({"model": {"image_shape": 64}}, r"image_shape must be \(C, H, W\), got 64"),
        ({"data": {"download": "yes"}}, "data download must be true or false, got 'yes'"),
        ({"data": {"name": 3}}, r"--data must be a name \(a string\), got 3"),
        ({"train": {"epocs": 3}}, r"unknown keys \['epocs'\]"),
    ],
)
def test_bad_values_in_a_config_file_are_named(change, message):
    raw = json.loads(RunConfig(model=ModelConfig(x_dim=64, image_shape=(1, 8, 8))).to_json())
    for section, values in change.items():
        raw[section].update(values)
    with pytest.raises(InputError, match=message):
        RunConfig.from_json(json.dumps(raw))


def test_training_options_round_trip_through_json():
    train = TrainConfig(
        optim="adamw",
        lr_schedule="cosine",
        lr_decay=0.2,
        lr_horizon=300,
        lr_factors={"decoder": 0.1, "encoder.net.0": 2},
        latent_sites=["z1", "z2"],
    )
    assert train.lr_factors == (("decoder", 0.1), ("encoder.net.0", 2.0)) and train.latent_sites == ("z1", "z2")
    config = RunConfig(model=ModelConfig(x_dim=64, image_shape=(1, 8, 8)), train=train)
    assert RunConfig.from_json(config.to_json()) == config


def test_a_config_written_before_the_optimizer_options_loads_with_their_defaults():
    config = RunConfig(model=ModelConfig(x_dim=64, image_shape=(1, 8, 8)))
    raw = json.loads(config.to_json())
    for key in ("optim", "lr_schedule", "lr_decay", "lr_horizon", "lr_factors", "latent_sites"):
        del raw["train"][key]
    assert RunConfig.from_json(json.dumps(raw)) == config


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lr_decay": 0.0}, r"--lr-decay must be a number in \(0, 1\], got 0.0"),
        ({"lr_decay": 1.5}, r"--lr-decay must be a number in \(0, 1\], got 1.5"),
        ({"lr_decay": float("nan")}, r"--lr-decay must be a number in \(0, 1\], got nan"),
        ({"lr_decay": True}, r"--lr-decay must be a number in \(0, 1\], got True"),
        ({"lr": True}, "--lr must be a positive number, got True"),
        ({"lr": float("inf")}, "--lr must be a positive number, got inf"),
        ({"lr_horizon": 0}, r"lr_horizon \(optimizer steps of the schedule\) must be an integer >= 1, got 0"),
        ({"lr_horizon": 2.5}, "lr_horizon .* must be an integer >= 1, got 2.5"),
        ({"lr_factors": {"decoder": 0}}, r"lr_factors\['decoder'\] must be a positive number, got 0"),
        ({"lr_factors": {"decoder": float("inf")}}, r"lr_factors\['decoder'\] must be a positive number, got inf"),
        ({"lr_factors": {"decoder": False}}, r"lr_factors\['decoder'\] must be a positive number, got False"),
        ({"lr_factors": {"": 0.5}}, "lr_factors: a prefix must be a non-empty string"),
        ({"lr_factors": [["a", 1.0], ["a", 2.0]]}, "lr_factors names a prefix twice"),
        ({"lr_factors": "decoder"}, "lr_factors must map parameter-name prefixes to factors"),
        ({"latent_sites": "z"}, "latent_sites must be a list of site names"),
        ({"latent_sites": ["z", "z"]}, "latent_sites must hold distinct, non-empty site names"),
        ({"seed": -1}, r"--seed must be an integer from 0 to 4294967295 \(2\^32 - 1\), got -1"),
        ({"seed": 2**32}, "--seed must be an integer from 0 to 4294967295 .*, got 4294967296"),
        ({"seed": True}, "--seed must be an integer from 0 to 4294967295 .*, got True"),
        ({"epochs": 100_001}, "--epochs must be at most 100,000 .*, got 100,001"),
        ({"num_particles": 10**9}, "--num-particles must be at most 100,000 .*, got 1,000,000,000"),
        ({"eval_particles": 0}, "--epoch-eval-particles must be an integer >= 1, got 0"),
        ({"batch_size": True}, "--batch-size must be an integer >= 1, got True"),
    ],
)
def test_bad_training_options_are_named(options, message):
    with pytest.raises(InputError, match=message):
        TrainConfig(**options)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().epochs = 3


def test_a_program_run_round_trips_and_has_no_model_section():
    spec = ProgramSpec(path="mypackage.models:build", x_dim=64, image_shape=[1, 8, 8], args={"widths": (32, 16)})
    config = RunConfig(program=spec, train=TrainConfig(epochs=3))
    raw = json.loads(config.to_json())
    assert raw["model"] is None and raw["program"]["args"] == {"widths": [32, 16]}
    assert RunConfig.from_json(config.to_json()) == config


def test_a_config_file_written_before_programs_existed_still_loads():
    raw = json.loads(RunConfig(model=ModelConfig(x_dim=64, image_shape=(1, 8, 8))).to_json())
    del raw["program"]
    config = RunConfig.from_json(json.dumps(raw))
    assert config.program is None and config.model.z_dim == 8


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"program": {"path": "m:build", "x_dim": 64, "image_shape": [1, 8, 8]}}, "got both"),
        ({"model": None}, "got neither"),
        ({"program": {"path": "m:build", "x_dim": 64, "image_shape": [1, 8, 7]}, "model": None}, "C\\*H\\*W"),
        ({"program": {"path": "m", "x_dim": 64, "image_shape": [1, 8, 8]}, "model": None}, "expected package.module"),
        ({"program": {"path": "m:f", "x_dim": 64, "image_shape": [1, 8, 8], "args": {"a b": 1}}, "model": None},
         "key 'a b' is not a Python identifier"),
    ],
)  # fmt: skip
def test_a_config_file_has_exactly_one_model_or_program(change, message):
    raw = json.loads(RunConfig(model=ModelConfig(x_dim=64, image_shape=(1, 8, 8))).to_json())
    raw.update(change)
    with pytest.raises(InputError, match=message):
        RunConfig.from_json(json.dumps(raw))


def test_two_layer_json_round_trip_and_older_files():
    config = RunConfig(model=ModelConfig(x_dim=64, image_shape=(1, 8, 8), z_dim=6, latent_layers=2, top_z_dim=3))
    assert RunConfig.from_json(config.to_json()) == config and config.model.top_dim == 3
    default_top = ModelConfig(x_dim=64, image_shape=(1, 8, 8), z_dim=5, latent_layers=2)
    assert RunConfig.from_json(RunConfig(model=default_top).to_json()).model.top_dim == 2  # z_dim // 2
    raw = json.loads(RunConfig(model=ModelConfig(x_dim=64, image_shape=(1, 8, 8))).to_json())
    for key in ("latent_layers", "top_z_dim"):
        del raw["model"][key]  # a config.json written before the hierarchical VAE
    model = RunConfig.from_json(json.dumps(raw)).model
    assert model.latent_layers == 1 and model.top_dim is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"latent_layers": 0}, "--latent-layers must be an integer from 1 to 2, got 0"),
        ({"latent_layers": -1}, "--latent-layers must be an integer from 1 to 2, got -1"),
        ({"latent_layers": 3}, "--latent-layers must be an integer from 1 to 2, got 3"),
        ({"latent_layers": 10**12}, "--latent-layers must be an integer from 1 to 2, got 1000000000000"),
        ({"latent_layers": True}, "--latent-layers must be an integer from 1 to 2, got True"),
        ({"latent_layers": 2.0}, "--latent-layers must be an integer from 1 to 2, got 2.0"),
        ({"top_z_dim": 2}, "--top-z-dim 2 needs --latent-layers 2, got --latent-layers 1"),
        ({"latent_layers": 2, "top_z_dim": 0}, "--top-z-dim must be an integer from 1 to --z-dim 8, got 0"),
        ({"latent_layers": 2, "top_z_dim": 9}, "--top-z-dim must be an integer from 1 to --z-dim 8, got 9"),
        ({"latent_layers": 2, "top_z_dim": False}, "--top-z-dim must be an integer from 1 to --z-dim 8, got False"),
    ],
)
def test_latent_layers_refusals(options, message):
    with pytest.raises(InputError, match=message):
        ModelConfig(x_dim=64, image_shape=(1, 8, 8), **options)


def test_the_schema_imports_no_part():
    """config.py is a plain schema: in a fresh interpreter (the ppl_vae package's __init__, which imports everything,
    left out) building, writing and reading every section imports no other module of the package, and no Pyro; a
    config that a part would refuse (iaf over one dimension, iwae with beta, an unknown guide) is the schema's to
    accept."""
    code = f"""
import json, sys, types
package = types.ModuleType("ppl_vae")
package.__path__ = [{str(Path(ppl_vae.__file__).parent)!r}]
sys.modules["ppl_vae"] = package
from ppl_vae.config import DataConfig, EvalConfig, ModelConfig, ProgramSpec, RunConfig, TrainConfig
model = ModelConfig(x_dim=64, image_shape=(1, 8, 8), z_dim=1, guide="iaf", prior="vamp", num_classes=10, net="conv")
train = TrainConfig(elbo="iwae", beta=2.0, anneal="linear", optim="rmsprop", lr_schedule="cosine")
config = RunConfig(model=model, data=DataConfig(name="digits"), train=train, evaluation=EvalConfig())
assert RunConfig.from_json(config.to_json()) == config
flagged = RunConfig(model=ModelConfig(x_dim=64, image_shape=(1, 8, 8), guide="flow"))
assert RunConfig.from_json(flagged.to_json()).model.guide == "flow"
ProgramSpec(path="m:build", x_dim=64, image_shape=(1, 8, 8))
print(json.dumps(sorted(name for name in sys.modules if name.startswith(("ppl_vae", "pyro")))))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["ppl_vae", "ppl_vae.config", "ppl_vae.errors"]


def test_the_largest_seed_and_counts_are_accepted():
    """The bounds are inclusive: 2^32 - 1 is a seed pyro.set_rng_seed takes."""
    import pyro

    config = TrainConfig(seed=2**32 - 1, epochs=100_000, num_particles=100_000)
    pyro.set_rng_seed(config.seed)
    assert EvalConfig(k=100_000, num_particles=100_000).k == 100_000


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        (EvalConfig, {"k": 10**6}, "--k must be at most 100,000"),
        (EvalConfig, {"num_particles": 100_001}, "--eval-particles must be at most 100,000"),
        (ModelConfig, {"flow_layers": 65}, "--flow-layers must be at most 64"),
        (ModelConfig, {"hidden": (8,) * 65}, "--hidden layers must be at most 64"),
        (ModelConfig, {"z_dim": True}, "--z-dim must be an integer >= 1, got True"),
    ],
)
def test_bounds_of_counts(kind, options, message):
    sized = {"x_dim": 64, "image_shape": (1, 8, 8)} if kind is ModelConfig else {}
    with pytest.raises(InputError, match=message):
        kind(**sized, **options)
