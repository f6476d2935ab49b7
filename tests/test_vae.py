import dataclasses

import pyro
import pytest
import torch
from pyro import poutine

from ppl_vae.config import ModelConfig, TrainConfig
from ppl_vae.errors import InputError
from ppl_vae.objectives import make_step
from ppl_vae.vae import VAE


def test_model_and_guide_sites_and_shapes(small_config):
    vae = VAE(small_config)
    x = torch.bernoulli(torch.full((5, 64), 0.3))
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    guide_sites = {name for name, site in guide_trace.nodes.items() if site["type"] == "sample"}
    model_sites = {name for name, site in model_trace.nodes.items() if site["type"] == "sample"}
    assert guide_sites == {"data", "z"}
    assert model_sites == {"data", "z", "x"}
    z_site, x_site = model_trace.nodes["z"], model_trace.nodes["x"]
    assert guide_trace.nodes["z"]["value"].shape == (5, 4)
    assert z_site["fn"].batch_shape == (5,) and z_site["fn"].event_shape == (4,)
    assert x_site["is_observed"] and torch.equal(x_site["value"], x)
    assert x_site["fn"].batch_shape == (5,) and x_site["fn"].event_shape == (64,)
    q_z = guide_trace.nodes["z"]["fn"]
    assert q_z.batch_shape == (5,) and q_z.event_shape == (4,) and q_z.has_rsample


def test_encode_decode_reconstruct_sample_shapes(small_config):
    vae = VAE(small_config)
    x = torch.rand(7, 64)
    loc, scale = vae.encode(x)
    assert loc.shape == scale.shape == (7, 4) and (scale > 0).all()
    p_x = vae.decode(torch.randn(3, 7, 4))
    assert p_x.batch_shape == (3, 7) and p_x.event_shape == (64,)
    reconstruction = vae.reconstruct(x)
    assert reconstruction.shape == (7, 64) and ((reconstruction >= 0) & (reconstruction <= 1)).all()
    assert vae.sample(11).shape == (11, 64)


def test_guide_scale_is_exp_of_the_log_scale_head(small_config):
    vae = VAE(small_config)
    x = torch.rand(6, 64)
    raw = vae.encoder.net(x)
    loc, scale = vae.encode(x)
    torch.testing.assert_close(loc, raw[:, :4])
    torch.testing.assert_close(scale, torch.exp(raw[:, 4:]))


def test_two_vaes_never_share_parameters(small_config):
    first, second = VAE(small_config), VAE(small_config)
    second_before = {name: value.clone() for name, value in second.state_dict().items()}
    step = make_step(first, TrainConfig(lr=1e-2))
    x = torch.bernoulli(torch.full((16, 64), 0.4))
    for _ in range(3):
        step(x)
    # training the first leaves the second untouched, and both are registered under distinct names
    for name, value in second.state_dict().items():
        assert torch.equal(value, second_before[name]), name
    pyro.module(second.pyro_name, second)
    store = pyro.get_param_store()
    first_names = {name for name in store.keys() if name.startswith(first.pyro_name + "$$$")}
    second_names = {name for name in store.keys() if name.startswith(second.pyro_name + "$$$")}
    assert len(first_names) == len(second_names) == len(list(first.parameters()))
    assert store[next(iter(first_names))] is not store[next(iter(second_names))]


def test_bernoulli_likelihood_rejects_grey_levels(small_config):
    """Pyro's validation stays on: grey levels observed under a Bernoulli likelihood are an error."""
    vae = VAE(small_config)
    with pytest.raises(ValueError, match="support"):
        poutine.trace(vae.model).get_trace(torch.full((2, 64), 0.5)).log_prob_sum()


def test_model_config_checks_its_values():
    with pytest.raises(ValueError, match="--z-dim must be an integer >= 1, got 0"):
        ModelConfig(x_dim=64, image_shape=(1, 8, 8), z_dim=0)
    with pytest.raises(ValueError, match="--hidden must list at least one"):
        ModelConfig(x_dim=64, image_shape=(1, 8, 8), hidden=())
    with pytest.raises(ValueError, match="image_shape"):
        ModelConfig(x_dim=64, image_shape=(1, 8, 7))
    config = ModelConfig(x_dim=64, image_shape=(1, 8, 8), scale_param="log_sigma")  # the schema knows no heads
    with pytest.raises(ValueError, match="--scale-param: unknown scale head 'log_sigma'"):
        VAE(config)


# --- two latent layers: z2 -> z1 -> x, guide q(z1 | x) q(z2 | z1) ---------------------------------------------------


@pytest.fixture
def two_layer_config(small_config):
    """The small digits model with a top layer z2 of 3 dimensions under z1 of 4."""
    return dataclasses.replace(small_config, latent_layers=2, top_z_dim=3)


def test_two_layer_sites_read_the_sampled_values(two_layer_config):
    """Sites z1, z2, x in plate data; p(z1 | z2) reads the drawn z2, q(z2 | z1) the drawn z1 (not its mean), and
    p(x | z1) the drawn z1."""
    vae = VAE(two_layer_config)
    x = torch.bernoulli(torch.full((5, 64), 0.3))
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    sample_sites = [name for name, site in guide_trace.nodes.items() if site["type"] == "sample"]
    assert sample_sites == ["data", "z1", "z2"]
    assert [name for name, site in model_trace.nodes.items() if site["type"] == "sample"] == ["data", "z2", "z1", "x"]
    z1, z2 = guide_trace.nodes["z1"]["value"], guide_trace.nodes["z2"]["value"]
    assert z1.shape == (5, 4) and z2.shape == (5, 3)
    assert all(frame.name == "data" for name in ("z1", "z2") for frame in guide_trace.nodes[name]["cond_indep_stack"])
    q_z2, p_z1, p_x = guide_trace.nodes["z2"]["fn"], model_trace.nodes["z1"]["fn"], model_trace.nodes["x"]["fn"]
    assert q_z2.event_shape == (3,) and p_z1.event_shape == (4,) and model_trace.nodes["z2"]["fn"].event_shape == (3,)
    torch.testing.assert_close(q_z2.base_dist.loc, vae.guide_z2.loc_and_scale(z1)[0])
    torch.testing.assert_close(p_z1.base_dist.scale, vae.prior_z1.loc_and_scale(z2)[1])
    torch.testing.assert_close(p_x.base_dist.logits, vae.decoder(z1))
    assert not torch.allclose(vae.guide_z2.loc_and_scale(vae.encode(x)[0])[0], q_z2.base_dist.loc)


def test_two_layer_marginal_sums_to_one(float64):
    """sum over all 2^3 binary images x of the importance estimate of p(x) is 1 (within standard errors): the
    importance weights p(x, z1, z2) / q(z1, z2 | x) of the two-layer model and guide are those of a normalized joint.
    The decoder's weights are scaled up so that p(x | z1) depends strongly on z1, and both guide scales widened by e
    so that the weights are light-tailed and their standard error honest."""
    from ppl_vae.evaluate import log_weights_per_example

    vae = VAE(ModelConfig(x_dim=3, image_shape=(1, 1, 3), z_dim=2, hidden=(8,), latent_layers=2))
    with torch.no_grad():
        vae.decoder[-1].weight.mul_(4.0)
        vae.encoder.net[-1].bias[2:] += 1.0  # the head outputs h of q(z1 | x): log scales
        vae.guide_z2.net[-1].bias[1:] += 1.0  # of q(z2 | z1)
    images = torch.tensor([[(i >> bit) & 1 for bit in range(3)] for i in range(8)], dtype=torch.float64)
    weights = log_weights_per_example(vae.model, vae.guide, images, k=100_000).exp()  # (8, k)
    total = weights.mean(1).sum().item()
    se = (weights.var(1) / weights.shape[1]).sum().sqrt().item()
    assert se < 0.01 and abs(total - 1.0) < 4 * se, (total, se)


def test_two_layer_trains_and_evaluates(digits, two_layer_config):
    """Two epochs on the digits: the test ELBO improves; ELBO and IWAE log p(x) are finite per example; IWAE with k = 1
    is the single-sample ELBO in expectation, and k = 100 is above the ELBO."""
    import math

    from ppl_vae.evaluate import elbo, iwae_log_likelihood, observed_test_set
    from ppl_vae.train import fit

    vae = VAE(two_layer_config)
    x_test = observed_test_set(digits.x_test, binary=True)
    before = elbo(vae.model, vae.guide, x_test, num_particles=10)
    fit(vae, digits, TrainConfig(epochs=2, eval_every=2, eval_particles=10), progress=False)
    after = elbo(vae.model, vae.guide, x_test, num_particles=50)
    gain = after.per_example - before.per_example
    assert gain.mean() > 4 * gain.std() / math.sqrt(len(gain)), (before.mean, after.mean)
    single = iwae_log_likelihood(vae.model, vae.guide, x_test, k=1)
    many = iwae_log_likelihood(vae.model, vae.guide, x_test, k=100)
    for estimate in (after, single, many):
        assert estimate.per_example.shape == (300,) and torch.isfinite(estimate.per_example).all()
    difference = single.per_example - after.per_example  # zero in expectation
    assert abs(difference.mean()) < 4 * difference.std() / math.sqrt(len(difference))
    tighter = many.per_example - after.per_example
    assert tighter.mean() > 4 * tighter.std() / math.sqrt(len(tighter))


def test_two_layer_plain_functions_and_labels(digits):
    """encode (q(z1 | x)), reconstruct and sample keep their shapes; a conditional two-layer VAE takes labels."""
    from ppl_vae.evaluate import elbo
    from ppl_vae.run import model_config_for

    vae = VAE(model_config_for(digits, conditional=True, z_dim=4, hidden=(32,), latent_layers=2))
    x, y = torch.bernoulli(digits.x_test[:6]), digits.y_test[:6]
    loc, scale = vae.encode(x, y)
    assert loc.shape == scale.shape == (6, 4) and vae.config.top_dim == 2
    assert vae.reconstruct(x, y).shape == (6, 64) and vae.sample(5, y=3).shape == (5, 64)
    assert torch.isfinite(elbo(vae.model, vae.guide, x, num_particles=3, y=y).per_example).all()
    with pytest.raises(InputError, match="pass labels y"):
        vae.sample(2)
