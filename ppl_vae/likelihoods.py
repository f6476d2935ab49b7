"""Likelihoods p(x | z): the decoder's raw output becomes a distribution over a flat image ``x`` of ``D`` pixels.

Every likelihood returns a distribution with batch shape ``output.shape[:-1]`` (``(B,)``, or ``(K, B)`` with
particles) and event shape ``(D,)``, so ``log_prob(x)`` is the log-likelihood of each whole image, in nats.

Example::

    likelihood = LIKELIHOODS.get("bernoulli")(x_dim=64)
    p_x = likelihood.dist(decoder(z))     # Bernoulli(logits=decoder(z)).to_event(1)
    p_x.log_prob(x_binary)                # (B,)
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from ppl_vae.registry import Registry

LIKELIHOODS = Registry("likelihood")


class Likelihood(nn.Module):
    """Interface of a likelihood.

    Attributes:
        binary: the observations must be 0/1; training images are then binarized afresh for every minibatch and test
            images once with a fixed seed.
        outputs_per_pixel: how many decoder outputs each pixel needs (the decoder's width is ``outputs_per_pixel * D``).
    """

    binary: bool
    outputs_per_pixel: int

    def __init__(self, x_dim: int):
        super().__init__()
        self.x_dim = x_dim

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
