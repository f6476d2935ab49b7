import pyro
import pytest
import torch
from pyro import poutine

from ppl_vae.config import ModelConfig, TrainConfig
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
    with pytest.raises(ValueError, match="unknown scale head 'log_sigma'"):
        ModelConfig(x_dim=64, image_shape=(1, 8, 8), scale_param="log_sigma")
