"""Priors p(z) over the latent code ``z`` of ``z_dim`` dimensions.

A prior returns a distribution with batch shape ``()`` and event shape ``(z_dim,)``; the model's data plate expands it
to one draw per example.

Example::

    prior = PRIORS.get("normal")(z_dim=8)
    prior.dist().sample((5,))     # (5, 8)
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from ppl_vae.registry import Registry

PRIORS = Registry("prior")


@PRIORS.register("normal")
class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I): no parameters. Its buffers follow the module's device."""

    def __init__(self, z_dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(z_dim), persistent=False)
        self.register_buffer("scale", torch.ones(z_dim), persistent=False)

    def dist(self) -> dist.TorchDistribution:
        """``Normal(0, 1).to_event(1)``: batch shape ``()``, event shape ``(z_dim,)``."""
        return dist.Normal(self.loc, self.scale).to_event(1)
