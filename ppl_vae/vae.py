"""The VAE: a Pyro model and a Pyro guide over the site names ``"z"`` (latent) and ``"x"`` (observed).

Model, for a minibatch ``x`` of shape ``(B, D)``::

    with pyro.plate("data", B):
        z ~ p(z)                       # prior, event (z_dim,)
        x ~ p(x | z) = lik(decoder(z)) # likelihood, event (D,), observed

Guide::

    with pyro.plate("data", B):
        z ~ q(z | x) = guide.dist(x)   # e.g. Normal(loc(x), exp(log_scale(x))), event (z_dim,)

``SVI(vae.model, vae.guide, optim, Trace_ELBO())`` then samples ``z`` from the guide with the reparameterization
``z = loc + scale * eps`` and estimates ``ELBO = E_q[log p(x | z)] - KL(q(z | x) || p(z))`` by Monte Carlo;
``TraceMeanField_ELBO`` uses the closed-form KL instead.

Example::

    vae = VAE(ModelConfig(x_dim=64, image_shape=(1, 8, 8), z_dim=8))
    loc, scale = vae.encode(x)          # (B, 8) each
    p_x = vae.decode(loc)               # batch (B,), event (64,)
    images = vae.sample(16)             # (16, 64), pixel means
"""

from __future__ import annotations

import itertools

import pyro
import torch
from pyro import distributions as dist
from torch import nn

from ppl_vae.config import ModelConfig
from ppl_vae.guides import GUIDES
from ppl_vae.likelihoods import LIKELIHOODS
from ppl_vae.nets import NETS
from ppl_vae.priors import PRIORS

_instance_ids = itertools.count()


class VAE(nn.Module):
    """A variational autoencoder assembled from named parts (see :class:`~ppl_vae.config.ModelConfig`).

    Submodules: ``prior`` (p(z)), ``decoder`` (network: z -> likelihood parameters), ``likelihood`` (p(x | decoder
    output)), ``encoder`` (the guide: x -> q(z | x)).

    Each instance registers its parameters in Pyro's global parameter store under its own name
    (``pyro_name``), so two VAEs in one process never share parameters.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.pyro_name = f"vae{next(_instance_ids)}"
        self.likelihood = LIKELIHOODS.get(config.likelihood)(config)
        self.encoder = GUIDES.get(config.guide)(config)
        self.prior = PRIORS.get(config.prior)(config, self.encoder)  # the VampPrior evaluates the guide
        self.decoder = NETS.get(config.net).decoder(
            config.z_dim, config.hidden, self.likelihood.outputs_per_pixel * config.x_dim, config.image_shape
        )

    # --- the two Pyro programs -------------------------------------------------------------------------------
    def model(self, x: torch.Tensor) -> None:
        """p(z) p(x | z) for ``x`` of shape ``(B, D)``, observed at site ``"x"``."""
        pyro.module(self.pyro_name, self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior.dist())
            pyro.sample("x", self.decode(z), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """q(z | x) at site ``"z"`` for ``x`` of shape ``(B, D)``."""
        pyro.module(self.pyro_name, self)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.encoder.dist(x))

    # --- the same parts as plain functions -------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``loc`` and ``scale`` of the guide's diagonal Normal, each ``(B, z_dim)`` for ``x`` of shape ``(B, D)``."""
        return self.encoder.loc_and_scale(x)

    def decode(self, z: torch.Tensor) -> dist.TorchDistribution:
        """p(x | z) for ``z`` of shape ``(..., z_dim)``: batch shape ``(...)``, event shape ``(D,)``."""
        return self.likelihood.dist(self.decoder(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of p(x | z = loc(x)): ``(B, D)``, in the data's units (pixel probabilities for Bernoulli)."""
        loc, _ = self.encode(x)
        return self.decode(loc).mean

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        """Pixel means of p(x | z) for ``num_samples`` draws ``z ~ p(z)``: ``(num_samples, D)``."""
        z = self.prior.dist().sample((num_samples,))
        return self.decode(z).mean
