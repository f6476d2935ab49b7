"""The classic hand-written VAE losses, in pure torch (no Pyro), as an independent check on the Pyro path.

These are the formulas people copy from the Keras example and pytorch/examples, written once and tested against
Pyro's ``Trace_ELBO`` (Monte Carlo KL) and ``TraceMeanField_ELBO`` (analytic KL). All values are per example, in nats.

For ``q(z | x) = N(loc, diag(scale^2))`` and ``p(z) = N(0, I)`` over ``z_dim`` dimensions::

    KL(q || p) = 0.5 * sum_j (loc_j^2 + scale_j^2 - 1 - 2 log scale_j)
               = -0.5 * sum_j (1 + log_var_j - loc_j^2 - exp(log_var_j))      with log_var = 2 log scale

    ELBO(x) = E_q[log p(x | z)] - KL(q || p)                                   (analytic KL)
            = E_q[log p(x | z) + log p(z) - log q(z | x)]                       (Monte Carlo KL)

with ``z = loc + scale * eps``, ``eps ~ N(0, I)`` (the reparameterization trick). The three estimators have the same
expectation and, for the same ``eps``, the Monte Carlo and the analytic ELBO differ only by ``KL - (log q - log p)``,
a term of mean zero. "Sticking the landing" (:func:`elbo_stl`, Roeder et al. 2017) has the value of the Monte Carlo
ELBO but drops the score term ``d log q(z; phi) / d phi`` (at fixed ``z``) from the encoder's gradient: that term has
mean zero, so the gradient stays unbiased, and it vanishes entirely when q equals the posterior.

Example::

    eps = torch.randn(num_particles, B, z_dim)
    elbo = elbo_analytic_kl(encoder_net, decoder_net, x, eps, head="log_var")   # (num_particles, B)
    loss = -elbo.mean(0).sum()                                                 # Pyro's convention
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ppl_vae.heads import SOFTPLUS_FLOOR

LOG_2PI = math.log(2 * math.pi)


# --- closed-form KL(N(loc, scale) || N(0, I)), one per head; each sums the last dimension -------------------------
def kl_from_scale(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``0.5 * sum(loc^2 + scale^2 - 1 - 2 log scale)``: ``(..., z_dim) -> (...)``."""
    return 0.5 * (loc.pow(2) + scale.pow(2) - 1.0 - 2.0 * torch.log(scale)).sum(-1)


def kl_from_log_scale(loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """``0.5 * sum(loc^2 + exp(2 log_scale) - 1 - 2 log_scale)``: ``(..., z_dim) -> (...)``."""
    return 0.5 * (loc.pow(2) + torch.exp(2.0 * log_scale) - 1.0 - 2.0 * log_scale).sum(-1)


def kl_from_log_var(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """The classic ``-0.5 * sum(1 + log_var - mu^2 - exp(log_var))``: ``(..., z_dim) -> (...)``."""
    return -0.5 * (1.0 + log_var - mu.pow(2) - torch.exp(log_var)).sum(-1)


# --- each head written out by hand: raw output h -> (scale, closed-form KL) ----------------------------------------
def _scale_and_kl(loc: torch.Tensor, h: torch.Tensor, head: str) -> tuple[torch.Tensor, torch.Tensor]:
    if head == "log_scale":
        return torch.exp(h), kl_from_log_scale(loc, h)
    if head == "log_var":
        return torch.exp(0.5 * h), kl_from_log_var(loc, h)
    if head == "softplus":
        scale = F.softplus(h) + SOFTPLUS_FLOOR
        return scale, kl_from_scale(loc, scale)
    raise ValueError(f"unknown head {head!r}: expected log_scale, log_var or softplus")


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``sum_d [x_d log sigmoid(l_d) + (1 - x_d) log sigmoid(-l_d)]``: ``(..., D) -> (...)``."""
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


def normal_log_density(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``sum_j log N(z_j; loc_j, scale_j)``: ``(..., z_dim) -> (...)``."""
    return (-0.5 * ((z - loc) / scale).pow(2) - torch.log(scale) - 0.5 * LOG_2PI).sum(-1)


def _encode(encoder: nn.Module, x: torch.Tensor, head: str, eps: torch.Tensor):
    loc, h = encoder(x).chunk(2, dim=-1)
    scale, kl = _scale_and_kl(loc, h, head)
    z = loc + scale * eps
    return loc, scale, kl, z


def elbo_analytic_kl(encoder: nn.Module, decoder: nn.Module, x: torch.Tensor, eps: torch.Tensor, head: str = "log_var"):
    """Per-example ELBO with the closed-form KL: ``log p(x | z) - KL(q || p)``.

    Arguments:
        encoder: network ``x (B, D) -> [loc | h] (B, 2 z_dim)``; ``h`` is read through ``head``.
        decoder: network ``z (..., z_dim) -> logits (..., D)`` of a Bernoulli likelihood.
        x: binary images ``(B, D)``.
        eps: standard normal noise ``(..., B, z_dim)``; leading dimensions are particles.
        head: ``log_scale`` | ``log_var`` | ``softplus``.

    Returns:
        ``(..., B)``: one single-sample ELBO per particle and example, in nats.
    """
    loc, _, kl, z = _encode(encoder, x, head, eps)
    return bernoulli_log_likelihood(decoder(z), x) - kl


def elbo_monte_carlo_kl(
    encoder: nn.Module, decoder: nn.Module, x: torch.Tensor, eps: torch.Tensor, head: str = "log_scale"
):
    """Per-example ELBO with the KL estimated from the same sample: ``log p(x | z) + log p(z) - log q(z | x)``.

    Arguments and returns as :func:`elbo_analytic_kl`.
    """
    return _elbo_sampled_kl(encoder, decoder, x, eps, head, stop_gradient_in_q=False)


def elbo_stl(encoder: nn.Module, decoder: nn.Module, x: torch.Tensor, eps: torch.Tensor, head: str = "log_scale"):
    """Sticking the landing (STL; Roeder, Wu and Duvenaud 2017): the Monte Carlo ELBO with ``log q(z | x)`` evaluated at
    stopped-gradient (detached) ``loc`` and ``scale``.

    Its value equals :func:`elbo_monte_carlo_kl` for the same ``eps``; its gradient keeps only the path derivative
    through ``z = loc + scale * eps`` and drops the score term ``-d log q(z; loc, scale) / d(loc, scale)`` at fixed
    ``z`` (mean zero under q). Arguments and returns as :func:`elbo_analytic_kl`.
    """
    return _elbo_sampled_kl(encoder, decoder, x, eps, head, stop_gradient_in_q=True)


def _elbo_sampled_kl(encoder, decoder, x, eps, head: str, stop_gradient_in_q: bool) -> torch.Tensor:
    loc, scale, _, z = _encode(encoder, x, head, eps)
    if stop_gradient_in_q:
        loc, scale = loc.detach(), scale.detach()
    log_prior = normal_log_density(z, torch.zeros_like(z), torch.ones_like(z))
    return bernoulli_log_likelihood(decoder(z), x) + log_prior - normal_log_density(z, loc, scale)
