"""Likelihoods p(x | z): the decoder's raw output becomes a distribution over a flat image ``x`` of ``D`` pixels.

Every likelihood returns a distribution with batch shape ``output.shape[:-1]`` (``(B,)``, or ``(K, B)`` with
particles) and event shape ``(D,)``, so ``log_prob(x)`` is the log-likelihood of each whole image, in nats.

=========================  ===========================================================  ==========  ===============
name (``--likelihood``)    p(x_d | z), independently per pixel                          binarizes   parameters
=========================  ===========================================================  ==========  ===============
``bernoulli``              ``Bernoulli(sigmoid(logits_d))``                             yes         decoder only
``continuous-bernoulli``   ``ContinuousBernoulli(logits_d)`` on grey levels in [0, 1]   no          decoder only
``gaussian``               ``Normal(loc_d, pixel_scale)``: fixed scale                  no          decoder only
``gaussian-learned``       ``Normal(loc_d, MIN_PIXEL_SCALE + exp(log_scale_d))``        no          + ``(D,)``
``laplace``                ``Laplace(loc_d, pixel_scale)``: fixed scale                 no          decoder only
=========================  ===========================================================  ==========  ===============

A likelihood states what it requires of the configuration (``requires(config)``, checked by :mod:`ppl_vae.parts`):
those with a pixel scale (``gaussian``, ``laplace``, ``gaussian-learned``) need ``pixel_scale > MIN_PIXEL_SCALE``.

The continuous likelihoods are densities over grey levels, so their log p(x) is in nats per example of a density
on [0, 1]^D (or R^D): it is not comparable with a Bernoulli log-probability of binarized images. With a fixed
``pixel_scale`` the Gaussian's log-likelihood is ``-||x - loc||^2 / (2 pixel_scale^2)`` plus a constant (the squared
error), the Laplace's ``-||x - loc||_1 / pixel_scale`` plus a constant (the absolute error).

Example::

    likelihood = LIKELIHOODS.get("bernoulli")(ModelConfig(x_dim=64, image_shape=(1, 8, 8)))
    p_x = likelihood.dist(decoder(z))     # Bernoulli(logits=decoder(z)).to_event(1)
    p_x.log_prob(x_binary)                # (B,)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pyro.distributions as dist
import torch
from torch import nn

from ppl_vae.errors import InputError
from ppl_vae.registry import Registry

if TYPE_CHECKING:
    from ppl_vae.config import ModelConfig

LIKELIHOODS = Registry("likelihood")

MIN_PIXEL_SCALE = 1e-3
"""The learned per-pixel scale's floor. Digits have pixels that are 0 in every image; without a floor their scale
would shrink towards 0 and their density grow without bound. It caps each pixel's Gaussian log density at
``-log(MIN_PIXEL_SCALE * sqrt(2 pi)) ~ 5.99`` nats."""


class Likelihood(nn.Module):
    """Interface of a likelihood, built from the :class:`~ppl_vae.config.ModelConfig`.

    Attributes:
        binary: the observations must be 0/1; training images are then binarized afresh for every minibatch and test
            images once with a fixed seed. Otherwise the grey levels are observed as they are.
        outputs_per_pixel: how many decoder outputs each pixel needs (the decoder's width is ``outputs_per_pixel * D``).
    """

    binary: bool
    outputs_per_pixel: int

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.x_dim = config.x_dim

    def dist(self, output: torch.Tensor) -> dist.TorchDistribution:
        """p(x | z) from the decoder output ``(..., outputs_per_pixel * D)``; batch shape ``(...)``, event ``(D,)``."""
        raise NotImplementedError


@LIKELIHOODS.register("bernoulli")
class BernoulliLikelihood(Likelihood):
    """``x_d ~ Bernoulli(sigmoid(logits_d))`` independently per pixel; the decoder emits ``logits`` (never
    probabilities: ``log sigmoid`` is computed stably from the logits)."""

    binary = True
    outputs_per_pixel = 1

    def dist(self, output: torch.Tensor) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=output).to_event(1)


@LIKELIHOODS.register("continuous-bernoulli")
class ContinuousBernoulliLikelihood(Likelihood):
    """``x_d ~ ContinuousBernoulli(logits_d)`` on grey levels ``x_d`` in [0, 1] (Loaiza-Ganem & Cunningham 2019).

    Density ``C(lam) lam^x (1 - lam)^(1 - x)`` with ``lam = sigmoid(logits)`` and the normalizer
    ``C(lam) = 2 atanh(1 - 2 lam) / (1 - 2 lam)`` (``C(1/2) = 2``): the Bernoulli formula made a proper density on
    [0, 1]. Its mean is not ``lam``: ``lam / (2 lam - 1) + 1 / (2 atanh(1 - 2 lam))``.
    """

    binary = False
    outputs_per_pixel = 1

    def dist(self, output: torch.Tensor) -> dist.TorchDistribution:
        return dist.ContinuousBernoulli(logits=output).to_event(1)


class _LocationScaleLikelihood(Likelihood):
    """``x_d ~ family(loc_d, scale_d)`` with ``loc`` from the decoder; the subclass says where ``scale`` comes from.

    Requires ``pixel_scale > MIN_PIXEL_SCALE`` (the fixed scale, or the learned one's start above its floor).
    """

    binary = False
    outputs_per_pixel = 1
    family: type[dist.TorchDistribution]

    @classmethod
    def requires(cls, config: ModelConfig) -> None:
        if not config.pixel_scale > MIN_PIXEL_SCALE:
            raise InputError(f"--pixel-scale must be a number > {MIN_PIXEL_SCALE}, got {config.pixel_scale!r}")

    def scale(self) -> torch.Tensor:
        """The per-pixel scale, broadcastable to ``(D,)``."""
        raise NotImplementedError

    def dist(self, output: torch.Tensor) -> dist.TorchDistribution:
        return self.family(output, self.scale().expand_as(output)).to_event(1)


class _FixedScale(_LocationScaleLikelihood):
    """The scale is ``config.pixel_scale`` for every pixel (a buffer: no gradient, follows the module's device)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.register_buffer("fixed_scale", torch.tensor(float(config.pixel_scale)), persistent=False)

    def scale(self) -> torch.Tensor:
        return self.fixed_scale


@LIKELIHOODS.register("gaussian")
class GaussianLikelihood(_FixedScale):
    """``x_d ~ Normal(loc_d, pixel_scale)``: the decoder emits ``loc``; ``--pixel-scale`` fixes the standard deviation.

    ``log p(x | z) = -sum_d (x_d - loc_d)^2 / (2 s^2) - D log(s sqrt(2 pi))``: a scaled squared error, where a smaller
    ``s`` weighs reconstruction more against the KL term.
    """

    family = dist.Normal


@LIKELIHOODS.register("laplace")
class LaplaceLikelihood(_FixedScale):
    """``x_d ~ Laplace(loc_d, pixel_scale)``: the decoder emits ``loc``; ``--pixel-scale`` fixes the scale ``b``.

    ``log p(x | z) = -sum_d |x_d - loc_d| / b - D log(2 b)``: a scaled absolute error (the median, not the mean, of
    the pixel is fitted; the standard deviation is ``sqrt(2) b``).
    """

    family = dist.Laplace


@LIKELIHOODS.register("gaussian-learned")
class LearnedGaussianLikelihood(_LocationScaleLikelihood):
    """``x_d ~ Normal(loc_d, MIN_PIXEL_SCALE + exp(log_scale_d))``: ``loc`` from the decoder, one learned
    ``log_scale`` per pixel (a parameter of shape ``(D,)``, shared by all images, initialized so that the scale
    starts at ``pixel_scale``)."""

    family = dist.Normal

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        start = math.log(config.pixel_scale - MIN_PIXEL_SCALE)
        self.log_scale = nn.Parameter(torch.full((config.x_dim,), start))

    def scale(self) -> torch.Tensor:
        return MIN_PIXEL_SCALE + self.log_scale.exp()
