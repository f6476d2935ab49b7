"""Tests for ppl_vae.priors: N(0, I), the mixture of Gaussians, the VampPrior (densities, normalisation, gradients)."""

import math

import pyro
import pytest
import torch

from ppl_vae.config import ModelConfig
from ppl_vae.guides import GUIDES
from ppl_vae.priors import PRIORS
from ppl_vae.vae import VAE

# Pyro's autoregressive inverse allocates in the default dtype: every tensor float64 (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("float64")


def make_vae(prior: str, z_dim: int, guide: str = "diagonal", components: int = 3) -> VAE:
    """A VAE on 4x4 images whose prior's parameters are moved off their starting values (seeded)."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    config = ModelConfig(
        x_dim=16, image_shape=(1, 4, 4), z_dim=z_dim, hidden=(8,), prior=prior, guide=guide, prior_components=components
    )
    vae = VAE(config)
    with torch.no_grad():
        if prior == "mog":  # unequal weights, spread locations, unequal scales
            vae.prior.logits.copy_(torch.linspace(-1.0, 1.0, components))
            vae.prior.loc.mul_(2.0)
            vae.prior.log_scale.copy_(torch.linspace(-1.0, 0.5, components * z_dim).reshape(components, z_dim))
    return vae


def vamp_density_by_hand(vae: VAE, z: torch.Tensor) -> torch.Tensor:
    """``log (1/K) sum_k q(z | u_k)`` with the guide evaluated directly: ``(N, z_dim) -> (N,)``."""
    u = vae.prior.pseudo_inputs()  # (K, D)
    log_q = vae.encoder.dist(u).log_prob(z.unsqueeze(-2))  # (N, K)
    return torch.logsumexp(log_q, dim=-1) - math.log(u.shape[0])


def mog_density_by_hand(prior, z: torch.Tensor) -> torch.Tensor:
    """``log sum_k pi_k prod_j N(z_j; loc_kj, scale_kj)``: ``(N, z_dim) -> (N,)``."""
    scale = prior.log_scale.exp()
    per_dim = -0.5 * ((z.unsqueeze(-2) - prior.loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)
    return torch.logsumexp(torch.log_softmax(prior.logits, -1) + per_dim.sum(-1), dim=-1)


MIXTURES = [("mog", "diagonal")] + [("vamp", guide) for guide in sorted(GUIDES)]


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_shapes(name):
    vae = make_vae(name, z_dim=3)
    p_z = vae.prior.dist()
    assert p_z.batch_shape == () and p_z.event_shape == (3,)
    assert p_z.sample((5,)).shape == (5, 3)
    assert p_z.log_prob(torch.zeros(4, 2, 3, dtype=torch.float64)).shape == (4, 2)
    assert vae.sample(6).shape == (6, 16)


def test_normal_is_standard_normal():
    z = torch.randn(10, 3, dtype=torch.float64)
    log_prob = make_vae("normal", z_dim=3).prior.dist().log_prob(z)
    assert torch.allclose(log_prob, (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1))


@pytest.mark.parametrize("prior, guide", MIXTURES)
def test_mixture_log_prob_against_components(prior, guide):
    vae = make_vae(prior, z_dim=3, guide=guide)
    z = 2 * torch.randn(50, 3, dtype=torch.float64)
    by_hand = mog_density_by_hand(vae.prior, z) if prior == "mog" else vamp_density_by_hand(vae, z)
    assert torch.allclose(vae.prior.dist().log_prob(z), by_hand, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("prior, guide", MIXTURES)
def test_mixture_is_normalised_on_a_grid_in_two_dimensions(prior, guide):
    """``integral p(z) dz = 1``: midpoint rule on [-12, 12]^2 with 600^2 cells (error far below 1e-4 here)."""
    vae = make_vae(prior, z_dim=2, guide=guide)
    edges = torch.linspace(-12.0, 12.0, 601, dtype=torch.float64)
    centres = (edges[1:] + edges[:-1]) / 2
    grid = torch.cartesian_prod(centres, centres)  # (360000, 2)
    with torch.no_grad():
        density = vae.prior.dist().log_prob(grid).exp()
    cell = (edges[1] - edges[0]) ** 2
    assert abs((density.sum() * cell).item() - 1.0) < 1e-4


@pytest.mark.parametrize("prior, guide", MIXTURES)
def test_mixture_is_normalised_by_importance_sampling_in_four_dimensions(prior, guide):
    """``E_r[p(z) / r(z)] = 1`` for a broad proposal ``r = N(0, 3^2 I)``: within 4 standard errors, and the standard
    error small enough (< 0.02) for that to mean something. (Four dimensions: in eight, a broad Gaussian proposal
    gives weights of too high a variance for narrow components.)"""
    vae = make_vae(prior, z_dim=4, guide=guide)
    proposal = torch.distributions.Normal(torch.zeros(4), 3.0)
    z = proposal.sample((400_000,))
    with torch.no_grad():
        weights = (vae.prior.dist().log_prob(z) - proposal.log_prob(z).sum(-1)).exp()
    se = weights.std().item() / math.sqrt(len(weights))
    assert se < 0.02
    assert abs(weights.mean().item() - 1.0) < 4 * se


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_learned_prior_gets_gradients(prior):
    vae = make_vae(prior, z_dim=3)
    vae.prior.dist().log_prob(torch.randn(7, 3, dtype=torch.float64)).sum().backward()
    for name, parameter in vae.prior.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    if prior == "vamp":  # the VampPrior trains the encoder too
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vae.encoder.parameters())


def test_vamp_prior_holds_pseudo_inputs_and_shares_the_encoder():
    vae = make_vae("vamp", z_dim=3, components=5)
    prior_keys = [key for key in vae.state_dict() if key.startswith("prior.")]
    assert prior_keys == ["prior.pseudo_logits"]  # the encoder's weights are saved once, under "encoder."
    u = vae.prior.pseudo_inputs()
    assert u.shape == (5, 16) and (u > 0).all() and (u < 1).all()
    z = torch.zeros(1, 3, dtype=torch.float64)
    before = vae.prior.dist().log_prob(z)
    with torch.no_grad():
        vae.encoder.net[0].bias.add_(1.0)  # the prior reads the VAE's own encoder, not a copy
    after = vae.prior.dist().log_prob(z)
    assert not torch.allclose(before, after)
    assert torch.allclose(after, vamp_density_by_hand(vae, z))


def test_components_count_is_checked():
    from ppl_vae.errors import InputError

    with pytest.raises(InputError, match="--prior-components must be an integer >= 1, got 0"):
        ModelConfig(x_dim=16, image_shape=(1, 4, 4), prior="mog", prior_components=0)
