"""Memory bounds (ppl_vae.bounds): the parameter count against the VAE it describes, and one-line refusals."""

import re

import pytest

from ppl_vae.bounds import GiB, check_memory, memory_estimate, parameter_count
from ppl_vae.cli import main
from ppl_vae.config import EvalConfig, ModelConfig, TrainConfig
from ppl_vae.errors import InputError
from ppl_vae.vae import VAE

SIZED = {"x_dim": 64, "image_shape": (1, 8, 8)}


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"hidden": (256, 128)},
        {"prior": "mog", "prior_components": 7},
        {"prior": "vamp", "prior_components": 50},
        {"guide": "iaf", "flow_layers": 3},
        {"guide": "lowrank", "rank": 3},
        {"net": "conv"},
        {"latent_layers": 2, "top_z_dim": 3},
        {"num_classes": 10},
        {"likelihood": "gaussian-learned"},
    ],
)
def test_parameter_count_bounds_the_vae_from_above_within_a_fifth(options):
    """The estimate counts every dense layer and the priors' and flows' parameters; it may overcount (the heads'
    and MADEs' exact widths), never undercount."""
    config = ModelConfig(**SIZED, **options)
    actual = sum(parameter.numel() for parameter in VAE(config).parameters())
    assert actual <= parameter_count(config) <= 1.2 * actual


def test_estimate_grows_with_the_sizes_that_set_it():
    """Training activations are linear in the particles; the evaluation chunk's mixture density in ``K``."""
    plain = ModelConfig(**SIZED)
    weights = 16 * parameter_count(plain)
    one, hundred = (memory_estimate(plain, TrainConfig(num_particles=n), None, 1497)["training"] for n in (1, 100))
    assert hundred - weights == 100 * (one - weights)
    small, large = (
        memory_estimate(ModelConfig(**SIZED, prior="vamp", prior_components=k), TrainConfig(), EvalConfig(), 1497, 300)
        for k in (10, 1000)
    )
    assert large["evaluation"] > 20 * small["evaluation"]


def test_a_run_above_the_available_memory_is_one_line_with_its_estimate():
    config = ModelConfig(**SIZED, hidden=(4096, 4096))
    estimate = check_memory(config, TrainConfig(), EvalConfig(), 1497, 300, available=100 * GiB)
    phase, needed = max(estimate.items(), key=lambda item: item[1])
    with pytest.raises(InputError) as error:
        check_memory(config, TrainConfig(), EvalConfig(), 1497, 300, available=needed - 1)
    message = str(error.value)
    assert "\n" not in message and f"for its {phase}" in message and "--hidden 4096,4096" in message
    assert f"about {needed / GiB:,.1f} GiB" in message


def test_a_vae_whose_weights_cannot_fit_is_refused_before_allocation():
    with pytest.raises(InputError, match=r"this VAE needs about [\d,.]+ GiB for its parameters .*--z-dim 1000000000"):
        VAE(ModelConfig(**SIZED, z_dim=10**9))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--hidden", "100000000"], "this VAE needs about .* GiB for its .*--hidden 100000000"),
        (["--prior", "vamp", "--prior-components", "100000000"], "--prior-components 100000000"),
        (["--num-particles", "100000", "--hidden", "4096"], "for its training .*--num-particles 100000"),
        (["--z-dim", str(2**63)], r"--z-dim must be at most 9,223,372,036,854,775,807 \(2\^63 - 1"),
    ],
)
def test_cli_refuses_a_run_that_cannot_fit(capsys, tmp_path, argv, message):
    assert main(["train", *argv, "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ppl-vae: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "run").exists()
