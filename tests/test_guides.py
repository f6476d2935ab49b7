"""Tests for ppl_vae.guides: shapes, reparameterization, the low-rank covariance, the IAF's change of variables, and
the refusal of ``--elbo meanfield`` where no closed-form KL exists."""

import math

import pyro
import pytest
import torch

from ppl_vae.cli import main
from ppl_vae.config import ModelConfig, TrainConfig
from ppl_vae.errors import InputError
from ppl_vae.guides import GUIDES, DiagonalNormalGuide
from ppl_vae.objectives import make_step
from ppl_vae.priors import PRIORS
from ppl_vae.vae import VAE

Z = 3


# Pyro's autoregressive inverse allocates in the default dtype: every tensor float64 (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("float64")


def make_guide(name: str, **options):
    torch.manual_seed(0)
    return GUIDES.get(name)(ModelConfig(x_dim=16, image_shape=(1, 4, 4), z_dim=Z, hidden=(8,), **options))


def images(batch: int = 5) -> torch.Tensor:
    return torch.rand(batch, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", sorted(GUIDES))
def test_shapes_and_reparameterized_samples(name):
    guide = make_guide(name)
    x = images()
    q_z = guide.dist(x)
    assert q_z.batch_shape == (5,) and q_z.event_shape == (Z,) and q_z.has_rsample
    z = q_z.rsample((4,))
    assert z.shape == (4, 5, Z) and q_z.log_prob(z).shape == (4, 5)
    loc, scale = guide.loc_and_scale(x)
    assert loc.shape == scale.shape == (5, Z) and (scale > 0).all()
    z.sum().backward()  # gradients reach every encoder weight through the sample
    assert all(p.grad is not None for p in guide.parameters())


@pytest.mark.parametrize("name", sorted(GUIDES))
def test_log_prob_is_a_normalised_density(name):
    """``integral q(z | x) dz = 1``, checked as ``E_r[q(z | x) / r(z)] = 1`` for a broad ``r = N(0, 4^2 I)``: within 4
    standard errors, and the standard error below 0.02."""
    guide = make_guide(name)
    q_z = guide.dist(images(1))
    proposal = torch.distributions.Normal(torch.zeros(Z), 4.0)
    z = proposal.sample((200_000,)).unsqueeze(-2)  # (N, 1, Z)
    with torch.no_grad():
        weights = (q_z.log_prob(z) - proposal.log_prob(z).sum(-1)).exp().squeeze(-1)
    se = weights.std().item() / math.sqrt(len(weights))
    assert se < 0.02 and abs(weights.mean().item() - 1.0) < 4 * se


def test_lowrank_covariance_and_log_prob():
    """``Sigma = W W^T + diag(head(h)^2)`` from the encoder's raw output; log_prob as the full-covariance Normal's;
    ``loc_and_scale`` gives the marginal standard deviations ``sqrt(diag Sigma)``."""
    guide = make_guide("lowrank", rank=2, scale_param="log_var")
    x = images()
    loc, factor, h = guide.net(x).split([Z, 2 * Z, Z], dim=-1)
    factor = factor.reshape(5, Z, 2)
    covariance = factor @ factor.transpose(-1, -2) + torch.diag_embed(torch.exp(h))  # log_var head: scale^2 = e^h
    q_z = guide.dist(x)
    assert torch.allclose(q_z.covariance_matrix, covariance)
    full = torch.distributions.MultivariateNormal(loc, covariance)
    z = full.sample((3,))
    assert torch.allclose(q_z.log_prob(z), full.log_prob(z))
    marginal_loc, marginal_scale = guide.loc_and_scale(x)
    assert torch.allclose(marginal_loc, loc)
    assert torch.allclose(marginal_scale, torch.diagonal(covariance, dim1=-2, dim2=-1).sqrt())


def test_iaf_log_prob_is_the_change_of_variables():
    """``log q(z) = log N(z_0; loc, scale) - log |det dz / dz_0|``, with the determinant from autograd's Jacobian of
    the flow (not from the transforms' own formula); the same value for the guide's own (cached) samples and for
    fresh points that need the flow's inverse."""
    guide = make_guide("iaf", flow_layers=3)
    x = images(4)
    base = guide.base.dist(x)
    z0 = base.sample()  # (4, Z)

    def flow(point):
        for transform in guide.flows:
            point = transform(point)
        return point

    z = flow(z0)
    log_det = torch.stack([torch.linalg.slogdet(torch.autograd.functional.jacobian(flow, row))[1] for row in z0])
    expected = base.log_prob(z0) - log_det
    assert not torch.allclose(z, z0)  # the flow does something
    fresh = guide.dist(x)  # a new distribution: no cache, so log_prob inverts the flow
    assert torch.allclose(fresh.log_prob(z.detach()), expected, rtol=1e-8, atol=1e-8)
    q_z = guide.dist(x)
    sample = q_z.rsample()
    assert torch.allclose(q_z.log_prob(sample), guide.dist(x).log_prob(sample.detach()), rtol=1e-8, atol=1e-8)


def test_iaf_encode_returns_the_base_normal():
    config = ModelConfig(x_dim=16, image_shape=(1, 4, 4), z_dim=Z, hidden=(8,), guide="iaf")
    vae = VAE(config)
    x = images()
    loc, scale = vae.encode(x)
    assert isinstance(vae.encoder.base, DiagonalNormalGuide)
    assert torch.equal(loc, vae.encoder.base.dist(x).base_dist.loc)
    assert torch.equal(scale, vae.encoder.base.dist(x).base_dist.scale)


def test_iaf_flows_alternate_the_order():
    guide = make_guide("iaf", flow_layers=3)
    orders = [transform.arn.permutation.tolist() for transform in guide.flows]
    assert orders == [[0, 1, 2], [2, 1, 0], [0, 1, 2]]


@pytest.mark.parametrize("guide", sorted(GUIDES))
@pytest.mark.parametrize("prior", sorted(PRIORS))
def test_meanfield_only_with_a_closed_form_kl(guide, prior):
    """Pyro's TraceMeanField_ELBO would quietly use a Monte Carlo KL for these pairs: the step refuses instead (at its
    first call, when it reads the programs)."""
    pyro.clear_param_store()
    vae = VAE(ModelConfig(x_dim=16, image_shape=(1, 4, 4), z_dim=Z, hidden=(8,), guide=guide, prior=prior))
    config = TrainConfig(elbo="meanfield")
    if (guide, prior) == ("diagonal", "normal"):
        step = make_step(vae, config)
        assert math.isfinite(step(images().round()))
    else:
        message = f"--elbo meanfield needs a closed-form KL.*--guide {guide} with --prior {prior}: use --elbo trace"
        step = make_step(vae, config)
        with pytest.raises(InputError, match=message):
            step(images().round())


def test_cli_refuses_meanfield_with_a_flow(tmp_path, capsys):
    torch.set_default_dtype(torch.float32)  # the command line runs in float32 (the fixture restores the default)
    args = ["train", "--guide", "iaf", "--elbo", "meanfield", "--epochs", "1", "--no-progress", "--out", str(tmp_path)]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.startswith("ppl-vae: error: --elbo meanfield needs a closed-form KL") and error.count("\n") == 1


def test_cli_part_flags_reach_the_config():
    from ppl_vae.cli import _config_from_args, build_parser

    args = build_parser().parse_args(
        ["train", "--likelihood", "laplace", "--prior", "vamp", "--guide", "lowrank", "--net", "conv"]
        + ["--pixel-scale", "0.2", "--prior-components", "7", "--rank", "3", "--flow-layers", "4"]
    )
    model = _config_from_args(args).model
    assert (model.likelihood, model.prior, model.guide, model.net) == ("laplace", "vamp", "lowrank", "conv")
    assert (model.pixel_scale, model.prior_components, model.rank, model.flow_layers) == (0.2, 7, 3, 4)


def test_cli_unknown_guide(capsys):
    assert main(["train", "--guide", "flow", "--epochs", "1"]) == 2
    assert capsys.readouterr().err == (
        "ppl-vae: error: --guide: unknown guide 'flow': expected one of diagonal, iaf, lowrank\n"
    )
