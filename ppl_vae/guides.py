"""Guides q(z | x): amortized posteriors whose parameters an encoder network computes from ``x``.

A guide is built as ``GUIDES.get(name)(config)`` and returns, from ``dist(x)``, a distribution with batch shape
``x.shape[:-1]`` and event shape ``(z_dim,)``; its samples are reparameterized (``rsample``), which is what lets
``Trace_ELBO`` differentiate through ``z``.

====================  ==================================================================================
name (``--guide``)    q(z | x)
====================  ==================================================================================
``diagonal``          ``Normal(loc(x), scale(x))``, independent dimensions
``lowrank``           ``MultivariateNormal(loc(x), W(x) W(x)^T + diag(scale(x)^2))``, ``W`` of shape
                      ``(z_dim, rank)``
``iaf``               the diagonal Normal pushed through ``flow_layers`` inverse autoregressive flows
====================  ==================================================================================

A guide states what it requires of the configuration (``requires(config)``, checked by :mod:`ppl_vae.parts`):
``iaf`` needs ``z_dim >= 2``.

Every guide has ``loc_and_scale(x)``: the location and the per-dimension standard deviation of its Gaussian (for
``iaf`` those of the base Normal, before the flow), which is what ``VAE.encode`` returns.

Only the ``diagonal`` guide with the ``normal`` prior has a closed-form KL in Pyro; ``--elbo meanfield`` refuses the
others (see :func:`ppl_vae.objectives.require_meanfield`).

Example::

    guide = GUIDES.get("diagonal")(model_config)
    loc, scale = guide.loc_and_scale(x)       # each (B, z_dim)
    q_z = guide.dist(x)                       # Normal(loc, scale).to_event(1)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import AffineAutoregressive
from pyro.nn import AutoRegressiveNN
from torch import nn

from ppl_vae.errors import InputError
from ppl_vae.heads import HEADS
from ppl_vae.nets import NETS
from ppl_vae.registry import Registry

if TYPE_CHECKING:
    from ppl_vae.config import ModelConfig

GUIDES = Registry("guide")


@GUIDES.register("diagonal")
class DiagonalNormalGuide(nn.Module):
    """``q(z | x) = Normal(loc(x), scale(x))`` with independent dimensions.

    The encoder emits ``[loc | h]`` of width ``2 * z_dim``; the scale head (``--scale-param``) turns ``h`` into
    ``scale`` (see :mod:`ppl_vae.heads`).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.z_dim = config.z_dim
        architecture = NETS.get(config.net)
        self.net = architecture.encoder(config.x_dim, config.hidden, 2 * config.z_dim, config.image_shape)
        self.head = HEADS.get(config.scale_param)

    def head_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``loc`` and the raw head output ``h``, each ``(..., z_dim)`` for ``x`` of shape ``(..., D)``."""
        loc, h = self.net(x).split(self.z_dim, dim=-1)
        return loc, h

    def loc_and_scale(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``loc`` and ``scale = head(h)``, each ``(..., z_dim)``."""
        loc, h = self.head_outputs(x)
        return loc, self.head.scale(h)

    def dist(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x): batch shape ``x.shape[:-1]``, event shape ``(z_dim,)``."""
        return dist.Normal(*self.loc_and_scale(x)).to_event(1)


@GUIDES.register("lowrank")
class LowRankNormalGuide(nn.Module):
    """``q(z | x) = MultivariateNormal(loc, cov_factor cov_factor^T + diag(cov_diag))``: correlated dimensions.

    The encoder emits ``[loc | cov_factor | h]`` of width ``z_dim + z_dim * rank + z_dim``; ``cov_factor`` is read as
    ``(z_dim, rank)`` (``rank = config.rank``) and ``cov_diag = head(h)^2`` through the scale head (``--scale-param``).
    Pyro's ``LowRankMultivariateNormal`` keeps sampling and ``log_prob`` at ``O(z_dim rank^2)``.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.z_dim, self.rank = config.z_dim, config.rank
        width = config.z_dim * (2 + config.rank)
        self.net = NETS.get(config.net).encoder(config.x_dim, config.hidden, width, config.image_shape)
        self.head = HEADS.get(config.scale_param)

    def parameters_of(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``loc`` ``(..., z_dim)``, ``cov_factor`` ``(..., z_dim, rank)``, ``cov_diag`` ``(..., z_dim)``."""
        loc, factor, h = self.net(x).split([self.z_dim, self.z_dim * self.rank, self.z_dim], dim=-1)
        return loc, factor.unflatten(-1, (self.z_dim, self.rank)), self.head.scale(h).pow(2)

    def loc_and_scale(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``loc`` and the marginal standard deviations ``sqrt(cov_diag + sum_r cov_factor^2)``, each
        ``(..., z_dim)``."""
        loc, factor, diag = self.parameters_of(x)
        return loc, (diag + factor.pow(2).sum(-1)).sqrt()

    def dist(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x): batch shape ``x.shape[:-1]``, event shape ``(z_dim,)``."""
        return dist.LowRankMultivariateNormal(*self.parameters_of(x))


@GUIDES.register("iaf")
class IAFGuide(nn.Module):
    """The diagonal guide's Normal pushed through ``L = config.flow_layers`` inverse autoregressive flows (Kingma et
    al. 2016), each Pyro's ``AffineAutoregressive`` in its ``stable`` (gated) form::

        z_0 ~ Normal(loc(x), scale(x))                                  (amortized: the encoder, as in ``diagonal``)
        z_l = sigma_l * z_(l-1) + (1 - sigma_l) * m_l,   [m_l, s_l] = MADE_l(z_(l-1)),  sigma_l = sigmoid(s_l + 2)
        log q(z_L | x) = log N(z_0) - sum_l sum_j log sigma_lj

    Sampling is one pass per layer; ``log_prob`` of the guide's own sample reads the cached ``z_0``.

    The flows are shared by all ``x`` (unconditional): the amortization lives in the base Normal. This keeps
    ``q(z | u)`` a plain distribution that broadcasts over a batch of inputs, which the VampPrior needs to evaluate
    ``q(z | u_k)`` for every ``z`` against all ``K`` pseudo-inputs at once (Pyro's context-conditioned
    ``ConditionalAutoRegressiveNN`` expands its context to the input's batch shape, which a ``(K,)`` context cannot
    follow). Consecutive layers reverse the autoregressive order, so every dimension can depend on every other.
    Each MADE has one hidden layer of ``3 z_dim + 1`` units (Pyro's default).

    Requires ``z_dim >= 2``: over one dimension an autoregressive flow has nothing to condition on, and is affine.
    """

    @classmethod
    def requires(cls, config: ModelConfig) -> None:
        if config.z_dim < 2:
            raise InputError(
                "--guide iaf needs --z-dim >= 2 (an autoregressive flow over one dimension is affine), "
                f"got {config.z_dim}"
            )

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.base = DiagonalNormalGuide(config)
        order = torch.arange(config.z_dim)
        self.flows = nn.ModuleList(
            AffineAutoregressive(
                AutoRegressiveNN(
                    config.z_dim, [3 * config.z_dim + 1], permutation=order.flip(0) if layer % 2 else order
                ),
                stable=True,
            )
            for layer in range(config.flow_layers)
        )

    def loc_and_scale(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``loc`` and ``scale`` of the base Normal (before the flows), each ``(..., z_dim)``."""
        return self.base.loc_and_scale(x)

    def dist(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x): batch shape ``x.shape[:-1]``, event shape ``(z_dim,)``."""
        return dist.TransformedDistribution(self.base.dist(x), list(self.flows))
