"""Scale heads: conversions, and the claim that log_scale and log_var are one family differing only at the head.

With matched outputs (``h_log_var = 2 * h_log_scale``) the distributions, the samples for the same noise, the ELBO and
the gradients below the head agree; the gradient at the head's output differs by a factor 2; softplus has its own
derivative ``sigmoid(h)``. All in float64.
"""

import itertools

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from ppl_vae import reference
from ppl_vae.config import ModelConfig
from ppl_vae.heads import HEADS, SOFTPLUS_FLOOR, convert
from ppl_vae.lab import FixedNoise
from ppl_vae.vae import VAE

HEAD_NAMES = sorted(HEADS)
Z_DIM = 3


@pytest.fixture(autouse=True)
def clean_pyro_state():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def test_registry_lists_the_three_heads():
    assert HEAD_NAMES == ["log_scale", "log_var", "softplus"]


@pytest.mark.parametrize(("source", "target"), list(itertools.product(HEAD_NAMES, repeat=2)))
def test_convert_gives_the_same_scale(source, target):
    h = torch.linspace(-3.0, 3.0, 25, dtype=torch.float64)
    same = convert(h, source, target)
    torch.testing.assert_close(HEADS[target].scale(same), HEADS[source].scale(h), rtol=1e-10, atol=0.0)


@pytest.mark.parametrize("head", HEAD_NAMES)
def test_scale_is_positive_and_inverse_inverts(head):
    scale = torch.logspace(-3, 2, 30, dtype=torch.float64)
    torch.testing.assert_close(HEADS[head].scale(HEADS[head].inverse(scale)), scale, rtol=1e-10, atol=0.0)
    assert (HEADS[head].scale(torch.linspace(-50, 50, 101, dtype=torch.float64)) > 0).all()


@pytest.mark.parametrize("head", HEAD_NAMES)
def test_derivative_of_scale_is_as_documented(head):
    """The table in the module docstring: d scale / d h = scale, scale / 2, sigmoid(h) = 1 - exp(-(scale - floor))."""
    h = torch.linspace(-4.0, 4.0, 17, dtype=torch.float64, requires_grad=True)
    scale = HEADS[head].scale(h)
    (derivative,) = torch.autograd.grad(scale.sum(), h)
    expected = {
        "log_scale": scale,
        "log_var": scale / 2,
        "softplus": 1 - torch.exp(-(scale - SOFTPLUS_FLOOR)),
    }[head]
    torch.testing.assert_close(derivative, expected.detach(), rtol=1e-10, atol=1e-12)


# --- one family: log_scale and log_var with matched outputs ------------------------------------------------------
def matched_pair() -> tuple[VAE, VAE]:
    """Two float64 VAEs: a log_scale one and a log_var one whose last encoder layer's h rows are doubled."""
    pyro.set_rng_seed(0)
    config = ModelConfig(x_dim=64, image_shape=(1, 8, 8), z_dim=Z_DIM, hidden=(16,), scale_param="log_scale")
    log_scale = VAE(config).double()
    with torch.no_grad():
        for parameter in log_scale.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    log_var = VAE(ModelConfig(**{**config.__dict__, "scale_param": "log_var"})).double()
    log_var.load_state_dict(log_scale.state_dict())
    last = log_var.encoder.net[-1]
    with torch.no_grad():
        last.weight[Z_DIM:] *= 2.0
        last.bias[Z_DIM:] *= 2.0
    return log_scale, log_var


def binary_images(batch: int = 6) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.bernoulli(torch.full((batch, 64), 0.3, dtype=torch.float64), generator=generator)


def is_h_row_parameter(name: str) -> bool:
    return name in ("encoder.net.2.weight", "encoder.net.2.bias")  # MLP(64, (16,), 2 z_dim): Linear, ReLU, Linear


def test_matched_heads_give_the_same_distribution_and_samples():
    log_scale, log_var = matched_pair()
    x = binary_images()
    for a, b in zip(log_scale.encode(x), log_var.encode(x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0.0)
    pyro.set_rng_seed(5)
    z_a = log_scale.encoder.dist(x).rsample()
    pyro.set_rng_seed(5)
    z_b = log_var.encoder.dist(x).rsample()
    torch.testing.assert_close(z_a, z_b, rtol=1e-12, atol=0.0)


@pytest.mark.parametrize("elbo_class", [Trace_ELBO, TraceMeanField_ELBO])
def test_matched_heads_give_the_same_elbo_and_gradients_below_the_head(elbo_class):
    """Same eps: equal loss; equal gradients for every parameter except the h rows, where log_var's is half."""
    log_scale, log_var = matched_pair()
    x = binary_images()
    eps = torch.randn(x.shape[0], Z_DIM, dtype=torch.float64)
    results = []
    for vae in (log_scale, log_var):
        loss = elbo_class().differentiable_loss(vae.model, FixedNoise(eps)(vae.guide), x)
        names, parameters = zip(*vae.named_parameters(), strict=True)
        grads = dict(zip(names, torch.autograd.grad(loss, parameters), strict=True))
        results.append((loss.detach(), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-12, atol=0.0)
    for name, grad_a in grads_a.items():
        if is_h_row_parameter(name):
            torch.testing.assert_close(grads_b[name][Z_DIM:], grad_a[Z_DIM:] / 2, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(grads_b[name][:Z_DIM], grad_a[:Z_DIM], rtol=1e-10, atol=1e-12)  # loc rows
        else:
            torch.testing.assert_close(grads_b[name], grad_a, rtol=1e-10, atol=1e-12)
    assert grads_a["encoder.net.2.bias"][Z_DIM:].abs().min() > 1e-6  # the factor 2 is tested on non-zero numbers


def head_output_gradient(head: str, loc: torch.Tensor, h: torch.Tensor, x, eps, decoder) -> torch.Tensor:
    """``d loss / d h`` of the hand-written analytic loss, the encoder's output held fixed at ``[loc | h]``."""
    h = h.detach().requires_grad_(True)
    output = torch.cat([loc, h], dim=-1)
    loss = -reference.elbo_analytic_kl(lambda _: output, decoder, x, eps, head=head).sum()
    (gradient,) = torch.autograd.grad(loss, h)
    return gradient


def test_gradient_at_the_head_output_differs_by_the_head_derivative():
    """Same scale, same loss: dL/dh = dL/dscale * dscale/dh, i.e. log_var's is half of log_scale's and softplus's is
    ``sigmoid(h_softplus) / scale`` times log_scale's (smaller for every scale; about 1/scale for large ones)."""
    log_scale, _ = matched_pair()
    x = binary_images()
    eps = torch.randn(1, x.shape[0], Z_DIM, dtype=torch.float64)
    with torch.no_grad():
        loc, h = log_scale.encoder.head_outputs(x)
    scale = h.exp()
    grad = {
        head: head_output_gradient(head, loc, convert(h, "log_scale", head), x, eps, log_scale.decoder)
        for head in HEAD_NAMES
    }
    torch.testing.assert_close(grad["log_var"], grad["log_scale"] / 2, rtol=1e-10, atol=1e-12)
    h_softplus = convert(h, "log_scale", "softplus")
    torch.testing.assert_close(
        grad["softplus"], grad["log_scale"] * torch.sigmoid(h_softplus) / scale, rtol=1e-8, atol=1e-12
    )
    assert (torch.sigmoid(h_softplus) < scale).all()


def test_adam_moves_log_sigma_half_as_far_under_log_var():
    """One Adam step on the same loss: the h rows move by about lr under both heads, i.e. log-sigma moves half as far
    under log_var (whose h is 2 log-sigma); every other parameter moves identically."""
    log_scale, log_var = matched_pair()
    x = binary_images()
    eps = torch.randn(1, x.shape[0], Z_DIM, dtype=torch.float64)
    moves = []
    for vae, head in ((log_scale, "log_scale"), (log_var, "log_var")):
        before = {name: p.detach().clone() for name, p in vae.named_parameters()}
        optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
        loss = -reference.elbo_monte_carlo_kl(vae.encoder.net, vae.decoder, x, eps, head=head).sum()
        loss.backward()
        optimizer.step()
        moves.append({name: p.detach() - before[name] for name, p in vae.named_parameters()})
    for name, move_a in moves[0].items():
        move_b = moves[1][name]
        if is_h_row_parameter(name):
            log_sigma_move_b = move_b[Z_DIM:] / 2  # h_log_var = 2 log sigma
            torch.testing.assert_close(log_sigma_move_b, move_a[Z_DIM:] / 2, rtol=1e-4, atol=1e-12)
            torch.testing.assert_close(move_b[:Z_DIM], move_a[:Z_DIM], rtol=1e-6, atol=1e-12)
        else:
            torch.testing.assert_close(move_b, move_a, rtol=1e-6, atol=1e-12)
