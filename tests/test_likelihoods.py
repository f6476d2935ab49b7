"""Tests for ppl_vae.likelihoods: shapes, log densities against closed forms, binarization, training on grey levels."""

import math

import pytest
import torch

from ppl_vae.config import ModelConfig, TrainConfig
from ppl_vae.data import load_dataset
from ppl_vae.evaluate import observed_test_set
from ppl_vae.likelihoods import LIKELIHOODS, MIN_PIXEL_SCALE
from ppl_vae.train import fit
from ppl_vae.vae import VAE

D = 6
CONFIG = ModelConfig(x_dim=D, image_shape=(1, 2, 3), pixel_scale=0.3)
GREY_LEVEL = ["continuous-bernoulli", "gaussian", "gaussian-learned", "laplace"]


def observations(name: str, shape, generator) -> torch.Tensor:
    """Values in each likelihood's support: 0/1 for binary ones, grey levels in [0, 1] (both ends included) else."""
    x = torch.rand(shape, generator=generator, dtype=torch.float64)
    x[..., 0], x[..., 1] = 0.0, 1.0
    return x.round() if LIKELIHOODS[name].binary else x


def closed_form(name: str, output: torch.Tensor, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log p(x | output) written out per pixel and summed, float64."""
    if name == "bernoulli":
        return (x * torch.log(torch.sigmoid(output)) + (1 - x) * torch.log(torch.sigmoid(-output))).sum(-1)
    if name == "continuous-bernoulli":
        lam = torch.sigmoid(output)
        log_norm = torch.log(2 * torch.atanh(1 - 2 * lam) / (1 - 2 * lam))
        return (log_norm + x * torch.log(lam) + (1 - x) * torch.log(1 - lam)).sum(-1)
    if name in ("gaussian", "gaussian-learned"):
        return (-0.5 * ((x - output) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)
    if name == "laplace":
        return (-(x - output).abs() / scale - torch.log(2 * scale)).sum(-1)
    raise AssertionError(f"no closed form written for likelihood {name!r}: add one")


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
@pytest.mark.parametrize("leading", [(5,), (4, 5)], ids=["batch", "particles-batch"])
def test_shapes_and_log_prob_against_closed_form(name, leading):
    generator = torch.Generator().manual_seed(0)
    likelihood = LIKELIHOODS.get(name)(CONFIG).double()
    if name == "gaussian-learned":  # a non-constant learned scale, to see it is used per pixel
        likelihood.log_scale.data = torch.linspace(-3.0, 0.5, D, dtype=torch.float64)
    output = 2 * torch.randn((*leading, likelihood.outputs_per_pixel * D), generator=generator, dtype=torch.float64)
    output[..., 2] = 1e-6  # continuous Bernoulli near lam = 1/2, where torch switches to a Taylor expansion
    x = observations(name, (*leading, D), generator)
    p_x = likelihood.dist(output)
    assert p_x.batch_shape == leading and p_x.event_shape == (D,)
    scale = 0.3 if name != "gaussian-learned" else MIN_PIXEL_SCALE + likelihood.log_scale.exp()
    log_prob = p_x.log_prob(x)
    assert log_prob.shape == leading
    scale = torch.as_tensor(scale)
    assert torch.allclose(log_prob, closed_form(name, output, x, scale), rtol=1e-6, atol=1e-6)
    one_image = x.reshape(-1, D)[0]  # broadcasts against every output, as x (B, D) against particles (K, B, D)
    expected = closed_form(name, output, one_image.expand_as(output), scale)
    assert torch.allclose(p_x.log_prob(one_image), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
def test_mean_matches_samples(name):
    """``mean`` (what ``reconstruct`` and ``sample`` show) is the average of draws, within 5 standard errors."""
    torch.manual_seed(1)
    likelihood = LIKELIHOODS.get(name)(CONFIG).double()
    p_x = likelihood.dist(torch.linspace(-2, 2, D, dtype=torch.float64))
    draws = p_x.sample((20000,))
    se = draws.std(0) / math.sqrt(len(draws))
    assert ((draws.mean(0) - p_x.mean).abs() < 5 * se).all()


def test_binary_flags():
    assert LIKELIHOODS["bernoulli"].binary
    for name in GREY_LEVEL:
        assert not LIKELIHOODS[name].binary
    assert set(LIKELIHOODS) == {"bernoulli", *GREY_LEVEL}


def test_learned_scale_starts_at_pixel_scale_and_is_a_parameter():
    likelihood = LIKELIHOODS.get("gaussian-learned")(CONFIG)
    assert [name for name, _ in likelihood.named_parameters()] == ["log_scale"]
    assert torch.allclose(likelihood.scale(), torch.full((D,), 0.3))
    for name in ("gaussian", "laplace", "bernoulli", "continuous-bernoulli"):
        assert not list(LIKELIHOODS.get(name)(CONFIG).parameters())


@pytest.mark.parametrize("name", GREY_LEVEL)
def test_grey_level_likelihoods_train_on_grey_levels(name):
    """The training step and the test set see the data's grey levels, never binarized images."""
    data = load_dataset("digits")
    vae = VAE(ModelConfig(x_dim=64, image_shape=(1, 8, 8), z_dim=2, hidden=(16,), likelihood=name))
    seen = []
    model = vae.model
    vae.model = lambda x: (seen.append(x), model(x))[1]  # SVI is built from vae.model when fit starts
    history = fit(vae, data, TrainConfig(epochs=1, batch_size=500, eval_particles=2), progress=False)
    assert math.isfinite(history[0]["train_elbo"]) and math.isfinite(history[0]["test_elbo"])
    # 1,497 examples in batches of 500, between two test-ELBO passes in batches of at most 256 (the untrained model's,
    # the divergence baseline, and the epoch's); the first minibatch is also read by the step's site discovery and the
    # guards of the first update, so the batches are counted as distinct tensors
    train_batches = [x for x in {id(x): x for x in seen}.values() if len(x) > 256]
    assert sorted(map(len, train_batches)) == [497, 500, 500]
    assert all(((x > 0) & (x < 1)).any() for x in train_batches)
    assert torch.equal(torch.sort(torch.cat(train_batches).flatten())[0], torch.sort(data.x_train.flatten())[0])
    assert torch.equal(observed_test_set(data.x_test, vae.likelihood.binary), data.x_test)


def test_pixel_scale_is_checked():
    """The schema asks for a positive number; the likelihoods with a pixel scale ask for more than its floor."""
    from ppl_vae.errors import InputError

    with pytest.raises(InputError, match="--pixel-scale must be a positive number, got 0"):
        ModelConfig(x_dim=D, image_shape=(1, 2, 3), pixel_scale=0)
    for name in ("gaussian", "laplace", "gaussian-learned"):
        with pytest.raises(InputError, match="--pixel-scale must be a number > 0.001, got 0.001"):
            VAE(ModelConfig(x_dim=D, image_shape=(1, 2, 3), likelihood=name, pixel_scale=MIN_PIXEL_SCALE))
    assert VAE(ModelConfig(x_dim=D, image_shape=(1, 2, 3), pixel_scale=MIN_PIXEL_SCALE)).config.pixel_scale == 1e-3
