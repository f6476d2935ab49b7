"""Priors p(z) over the latent code ``z`` of ``z_dim`` dimensions.

A prior is built as ``PRIORS.get(name)(config, encoder)`` from the :class:`~ppl_vae.config.ModelConfig` and the VAE's
guide module (the VampPrior evaluates it; the other priors ignore it). ``dist()`` returns a distribution with batch
shape ``()`` and event shape ``(z_dim,)``; the model's data plate expands it to one draw per example.

====================  =============================================================================  ===============
name (``--prior``)    p(z)                                                                           parameters
====================  =============================================================================  ===============
``normal``            ``N(0, I)``                                                                    none
``mog``               ``sum_k pi_k N(mu_k, diag(sigma_k^2))``, ``K = prior_components``               pi, mu, sigma
``vamp``              ``(1 / K) sum_k q(z | u_k)``: the guide at ``K`` learned pseudo-inputs          u (K, D)
====================  =============================================================================  ===============

A prior states what it requires of the configuration (``requires(config)``, checked by :mod:`ppl_vae.parts`):
``vamp`` takes no labels and one latent layer.

The mixtures have no closed-form KL to any guide, so ``--elbo meanfield`` refuses them (see
:func:`ppl_vae.objectives.require_meanfield`).

Example::

    prior = PRIORS.get("normal")(config, vae.encoder)
    prior.dist().sample((5,))     # (5, 8)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyro.distributions as dist
import torch
from torch import nn

from ppl_vae.errors import InputError
from ppl_vae.registry import Registry

if TYPE_CHECKING:
    from ppl_vae.config import ModelConfig

PRIORS = Registry("prior")


@PRIORS.register("normal")
class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I): no parameters. Its buffers follow the module's device."""

    def __init__(self, config: ModelConfig, encoder: nn.Module | None = None):
        super().__init__()
        self.register_buffer("loc", torch.zeros(config.z_dim), persistent=False)
        self.register_buffer("scale", torch.ones(config.z_dim), persistent=False)

    def dist(self) -> dist.TorchDistribution:
        """``Normal(0, 1).to_event(1)``: batch shape ``()``, event shape ``(z_dim,)``."""
        return dist.Normal(self.loc, self.scale).to_event(1)


@PRIORS.register("mog")
class MixtureOfGaussiansPrior(nn.Module):
    """A learned mixture of ``K = config.prior_components`` diagonal Gaussians::

        p(z) = sum_k softmax(logits)_k  N(z; loc_k, diag(exp(log_scale_k)^2))

    Parameters: ``logits`` ``(K,)`` (start equal), ``loc`` ``(K, z_dim)`` (start as draws from N(0, I), so the
    mixture starts close to the standard normal's spread), ``log_scale`` ``(K, z_dim)`` (start at 0).
    """

    def __init__(self, config: ModelConfig, encoder: nn.Module | None = None):
        super().__init__()
        components = config.prior_components
        self.logits = nn.Parameter(torch.zeros(components))
        self.loc = nn.Parameter(torch.randn(components, config.z_dim))
        self.log_scale = nn.Parameter(torch.zeros(components, config.z_dim))

    def dist(self) -> dist.TorchDistribution:
        """``MixtureSameFamily``: batch shape ``()``, event shape ``(z_dim,)``."""
        components = dist.Normal(self.loc, self.log_scale.exp()).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)


@PRIORS.register("vamp")
class VampPrior(nn.Module):
    """The VampPrior (Tomczak & Welling 2018): the aggregate posterior of ``K`` learned pseudo-inputs ``u_k``::

        p(z) = (1 / K) sum_k q(z | u_k),   u_k = sigmoid(pseudo_logits_k)  in [0, 1]^D

    ``q`` is the VAE's own guide (``encoder.dist``, whatever ``--guide`` is), so the encoder's weights get gradients
    from the prior term too. The pseudo-inputs are grey-level images (a sigmoid keeps them in [0, 1], the data's
    range); ``pseudo_logits`` ``(K, D)`` start as N(0, 1) draws.

    Requires an unconditional VAE with one latent layer: the pseudo-inputs are images without labels, and the guide
    at them is a distribution over ``z`` (the layer the encoder reads), which has no form for a top layer ``z2``.
    """

    @classmethod
    def requires(cls, config: ModelConfig) -> None:
        if config.num_classes:
            raise InputError(
                "--conditional with --prior vamp: the VampPrior's pseudo-inputs carry no label; use --prior normal "
                "or mog"
            )
        if config.latent_layers != 1:
            raise InputError(
                f"--latent-layers {config.latent_layers} with --prior vamp: the VampPrior is the guide q(z | u_k) at "
                "pseudo-inputs, which has no form for the top layer z2; use --prior normal or mog (the prior of z2)"
            )

    def __init__(self, config: ModelConfig, encoder: nn.Module):
        super().__init__()
        self.pseudo_logits = nn.Parameter(torch.randn(config.prior_components, config.x_dim))
        # A bound method, not a submodule: the encoder belongs to the VAE, whose state_dict holds its weights once.
        self.guide_dist = encoder.dist

    def pseudo_inputs(self) -> torch.Tensor:
        """``u`` ``(K, D)``, values in [0, 1]."""
        return torch.sigmoid(self.pseudo_logits)

    def dist(self) -> dist.TorchDistribution:
        """``MixtureSameFamily`` of ``q(z | u_k)`` with equal weights: batch shape ``()``, event shape ``(z_dim,)``."""
        components = self.guide_dist(self.pseudo_inputs())  # batch (K,), event (z_dim,)
        uniform = torch.zeros_like(self.pseudo_logits[:, 0])  # (K,) equal logits, the parameters' device and dtype
        return dist.MixtureSameFamily(dist.Categorical(logits=uniform), components)
