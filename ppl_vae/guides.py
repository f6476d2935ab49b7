"""Guides q(z | x): amortized posteriors whose parameters an encoder network computes from ``x``.

A guide returns a distribution with batch shape ``x.shape[:-1]`` and event shape ``(z_dim,)``; its samples are
reparameterized (``rsample``), which is what lets ``Trace_ELBO`` differentiate through ``z``.

Example::

    guide = GUIDES.get("diagonal")(model_config)
    loc, scale = guide.loc_and_scale(x)       # each (B, z_dim)
    q_z = guide.dist(x)                       # Normal(loc, scale).to_event(1)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyro.distributions as dist
import torch
from torch import nn

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
