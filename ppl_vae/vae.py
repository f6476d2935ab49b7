"""The VAE: a Pyro model and a Pyro guide over the site names ``"z"`` (latent) and ``"x"`` (observed).

Model, for a minibatch ``x`` of shape ``(B, D)``::

    with pyro.plate("data", B):
        z ~ p(z)                       # prior, event (z_dim,)
        x ~ p(x | z) = lik(decoder(z)) # likelihood, event (D,), observed

Guide::

    with pyro.plate("data", B):
        z ~ q(z | x) = guide.dist(x)   # e.g. Normal(loc(x), exp(log_scale(x))), event (z_dim,)

A conditional VAE (``ModelConfig.num_classes = C > 0``) takes labels ``y`` of shape ``(B,)`` in both programs:
the guide's network reads ``[x | one_hot(y)]`` (``(B, D + C)``) and the decoder ``[z | one_hot(y)]``, so the model is
``p(z) p(x | z, y)`` and evaluation reports ``log p(x | y)``. ``y`` is an input, not a sample site.

**Two latent layers** (``ModelConfig.latent_layers = 2``, ``--latent-layers 2``): a hierarchical VAE over the sites
``"z1"`` (``z_dim`` dimensions, the code the decoder reads) and ``"z2"`` (``top_dim = top_z_dim or z_dim // 2``)::

    model:  z2 ~ p(z2)                                    # the prior (normal | mog), event (top_dim,)
            z1 ~ p(z1 | z2) = Normal(loc(z2), scale(z2))  # prior_z1: an MLP of z2 and the scale head
            x  ~ p(x | z1 [, y])                          # the decoder and likelihood, as above
    guide:  z1 ~ q(z1 | x [, y])                          # the encoder (any guide), as above
            z2 ~ q(z2 | z1) = Normal(loc(z1), scale(z1))  # guide_z2: an MLP of the *sampled* z1

``p(z1 | z2)`` and ``q(z2 | z1)`` are :class:`~ppl_vae.guides.DiagonalNormalGuide` networks over latents (the
``hidden`` widths; ``--scale-param`` heads); labels reach only the encoder and the decoder. ``q(z2 | z1)`` depends on
the sampled ``z1``, so the guide is not mean-field: train with ``--elbo trace`` (or ``jit``, ``iwae``), not
``meanfield``. ``encode`` returns ``loc`` and ``scale`` of q(z1 | x); ``reconstruct`` decodes that ``loc``; ``sample``
draws ``z2 ~ p(z2)``, then ``z1 ~ p(z1 | z2)``, and returns the pixel means of p(x | z1).

``SVI(vae.model, vae.guide, optim, Trace_ELBO())`` then samples ``z`` from the guide with the reparameterization
``z = loc + scale * eps`` and estimates ``ELBO = E_q[log p(x | z)] - KL(q(z | x) || p(z))`` by Monte Carlo;
``TraceMeanField_ELBO`` uses the closed-form KL instead.

Example::

    vae = VAE(ModelConfig(x_dim=64, image_shape=(1, 8, 8), z_dim=8))
    loc, scale = vae.encode(x)          # (B, 8) each
    p_x = vae.decode(loc)               # batch (B,), event (64,)
    images = vae.sample(16)             # (16, 64), pixel means
    # conditional: vae.model(x, y), vae.guide(x, y), vae.sample(16, y=3) -> sixteen 3s
"""

from __future__ import annotations

import dataclasses
import itertools

import pyro
import torch
import torch.nn.functional as F
from pyro import distributions as dist
from torch import nn

from ppl_vae.bounds import check_memory
from ppl_vae.config import ModelConfig
from ppl_vae.errors import InputError
from ppl_vae.guides import GUIDES, DiagonalNormalGuide
from ppl_vae.inputs import check_tensor, first_parameter, require_count
from ppl_vae.likelihoods import LIKELIHOODS
from ppl_vae.nets import NETS
from ppl_vae.parts import check_model
from ppl_vae.priors import PRIORS

_instance_ids = itertools.count()


class VAE(nn.Module):
    """A variational autoencoder assembled from named parts (see :class:`~ppl_vae.config.ModelConfig`).

    Submodules: ``prior`` (p(z)), ``decoder`` (network: z -> likelihood parameters), ``likelihood`` (p(x | decoder
    output)), ``encoder`` (the guide: x -> q(z | x)). With two latent layers ``z`` is ``z1``, ``prior`` is p(z2), and
    ``prior_z1`` (p(z1 | z2)) and ``guide_z2`` (q(z2 | z1)) are added; with one they are ``None``.

    ``code_site`` is the latent site the decoder reads: ``"z"``, or ``"z1"`` with two layers.

    Each instance registers its parameters in Pyro's global parameter store under its own name
    (``pyro_name``), so two VAEs in one process never share parameters.

    Raises:
        InputError: a part ``config`` names is not registered or does not accept ``config``
            (:func:`ppl_vae.parts.check_model`), or its weights would not fit in memory
            (:func:`ppl_vae.bounds.check_memory`).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.family != "vae":
            raise InputError(f"VAE builds --family vae; --family {config.family} is ppl_vae.semisupervised's")
        self.config = check_model(config)
        check_memory(config)  # one line, not the allocator's failure, for sizes whose weights cannot fit
        self.pyro_name = f"vae{next(_instance_ids)}"
        self.likelihood = LIKELIHOODS.get(config.likelihood)(config)
        self.encoder = GUIDES.get(config.guide)(_encoder_config(config))
        top = config if config.latent_layers == 1 else _latent_layer_config(config, config.z_dim, config.top_dim)
        self.prior = PRIORS.get(config.prior)(top, self.encoder)  # the VampPrior evaluates the guide
        self.decoder = NETS.get(config.net).decoder(
            config.z_dim + config.num_classes,
            config.hidden,
            self.likelihood.outputs_per_pixel * config.x_dim,
            config.image_shape,
        )
        self.code_site = "z" if config.latent_layers == 1 else "z1"
        self.prior_z1 = self.guide_z2 = None
        if config.latent_layers == 2:  # built last, so a one-layer VAE starts from the same weights as before
            self.prior_z1 = DiagonalNormalGuide(
                _latent_layer_config(config, config.top_dim, config.z_dim, tuple(reversed(config.hidden)))
            )
            self.guide_z2 = DiagonalNormalGuide(_latent_layer_config(config, config.z_dim, config.top_dim))

    # --- the two Pyro programs -------------------------------------------------------------------------------
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """p(z) p(x | z [, y]) for ``x`` of shape ``(B, D)``, observed at site ``"x"``; labels ``y`` ``(B,)``."""
        pyro.module(self.pyro_name, self)
        with pyro.plate("data", x.shape[0]):
            if self.prior_z1 is None:
                z = pyro.sample("z", self.prior.dist())
            else:
                z2 = pyro.sample("z2", self.prior.dist())
                z = pyro.sample("z1", self.prior_z1.dist(z2))
            pyro.sample("x", self.decode(z, y), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """q(z | x [, y]) at site ``"z"`` (or q(z1 | x [, y]) q(z2 | z1) at ``"z1"``, ``"z2"``) for ``x`` of shape
        ``(B, D)``; labels ``y`` ``(B,)``."""
        pyro.module(self.pyro_name, self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample(self.code_site, self.encoder.dist(self._with_labels(x, y)))
            if self.guide_z2 is not None:
                pyro.sample("z2", self.guide_z2.dist(z))

    # --- the same parts as plain functions -------------------------------------------------------------------
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``loc`` and ``scale`` of the guide's diagonal Normal, each ``(B, z_dim)`` for ``x`` of shape ``(B, D)`` (of
        q(z1 | x) with two latent layers). ``x`` is checked: floats of the parameters' dtype, finite, ``D`` wide."""
        x = check_tensor(x, "x", "encode", self.config.x_dim, first_parameter(self))
        return self.encoder.loc_and_scale(self._with_labels(x, y))

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> dist.TorchDistribution:
        """p(x | z [, y]) for ``z`` of shape ``(..., z_dim)``: batch shape ``(...)``, event shape ``(D,)``. (The model
        calls it at every step: only the width is checked, which costs no pass over ``z``.)"""
        if not isinstance(z, torch.Tensor) or z.dim() == 0 or z.shape[-1] != self.config.z_dim:
            shown = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise InputError(f"decode: z must have shape (..., {self.config.z_dim}), got {shown}")
        return self.likelihood.dist(self.decoder(self._with_labels(z, y)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The mean of p(x | z = loc(x)): ``(B, D)``, in the data's units (pixel probabilities for Bernoulli)."""
        loc, _ = self.encode(x, y)  # checks x
        return self.decode(loc, y).mean

    @torch.no_grad()
    def sample(self, num_samples: int, y: int | torch.Tensor | None = None, *, draw: bool = False) -> torch.Tensor:
        """Pixel means of p(x | z [, y]) for ``num_samples`` draws ``z ~ p(z)``: ``(num_samples, D)``. With two
        latent layers ``z2 ~ p(z2)``, ``z1 ~ p(z1 | z2)``, and the pixel means of p(x | z1 [, y]).

        ``y`` (conditional VAE only): one class for every sample, or ``(num_samples,)`` classes. ``draw=True``: one
        draw ``x ~ p(x | z [, y])`` per ``z`` instead of the pixel means (0/1 pixels for a Bernoulli likelihood).
        """
        require_count(num_samples, "sample: num_samples")
        z = self.prior.dist().sample((num_samples,))
        if self.prior_z1 is not None:
            z = self.prior_z1.dist(z).sample()
        if y is not None and self.config.num_classes:
            y = torch.as_tensor(y, device=z.device).expand(num_samples)
            if y.is_floating_point() or not bool(((y >= 0) & (y < self.config.num_classes)).all()):
                raise InputError(f"sample: y must hold class labels 0..{self.config.num_classes - 1}, got {y}")
        p_x = self.decode(z, y)
        return p_x.sample() if draw else p_x.mean

    def _with_labels(self, inputs: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """``[inputs | one_hot(y)]`` (the one-hot ``(B, C)`` broadcast over leading sample dimensions of ``inputs``)
        for a conditional VAE; ``inputs`` themselves for a plain one."""
        classes = self.config.num_classes
        if (y is None) != (classes == 0):
            raise InputError(
                f"this VAE is conditional on {classes} classes: pass labels y"
                if classes
                else "this VAE is not conditional: it takes no labels y"
            )
        if y is None:
            return inputs
        try:  # F.one_hot checks the labels' type and range (one pass, which it makes anyway)
            one_hot = F.one_hot(y, classes).to(inputs.dtype)
        except (RuntimeError, TypeError):
            shown = y.unique()[:10].tolist() if isinstance(y, torch.Tensor) else y
            raise InputError(f"labels y {shown}: expected int64 class labels from 0 to {classes - 1}") from None
        return torch.cat([inputs, one_hot.expand(*inputs.shape[:-1], classes)], dim=-1)


def _latent_layer_config(
    config: ModelConfig, in_dim: int, out_dim: int, hidden: tuple[int, ...] | None = None
) -> ModelConfig:
    """The view of ``config`` of a Normal between latent layers, ``in_dim`` values -> ``out_dim`` dimensions: an MLP
    (``hidden``, default ``config.hidden``) with ``config``'s scale head, no labels (also the top prior's view, with
    ``out_dim = top_dim``)."""
    return dataclasses.replace(
        config,
        x_dim=in_dim,
        image_shape=(1, 1, in_dim),
        z_dim=out_dim,
        hidden=config.hidden if hidden is None else hidden,
        guide="diagonal",
        net="mlp",
        num_classes=0,
        latent_layers=1,
        top_z_dim=None,
    )


def _encoder_config(config: ModelConfig) -> ModelConfig:
    """The guide's view of ``config``: a conditional VAE's encoder reads ``[x | one_hot(y)]``, ``D + C`` values."""
    if config.num_classes == 0:
        return config
    width = config.x_dim + config.num_classes
    return dataclasses.replace(config, x_dim=width, image_shape=(1, 1, width), num_classes=0)
