"""Honest evaluation: the ELBO and the importance-weighted estimate of log p(x), in nats per example.

Both come from the log importance weights of the guide as proposal, for ``S`` samples ``z_s ~ q(z | x)``::

    log w_s(x) = log p(x, z_s) - log q(z_s | x)                    (sum over every sample site of model and guide)

    ELBO(x)      ~ (1 / S) sum_s log w_s(x)                         (a lower bound on log p(x), in expectation)
    IWAE_k(x)    = log (1 / k) sum_s exp(log w_s(x)),  s = 1..k      (Burda et al. 2015; grows with k towards log p(x))

The functions take any Pyro ``model(x)`` / ``guide(x)`` that follow the conventions (sites ``"z"`` and ``"x"``, the
one plate ``"data"`` over the examples). With labels ``y`` (a conditional model) they call ``model(x, y)`` and
``guide(x, y)`` and the estimates are of ``log p(x | y)``. Samples are vectorized with an outer plate and chunked so
that memory stays bounded for any ``k``. Every estimate comes with a standard error over the examples:
``std / sqrt(N)``.

Example::

    result = iwae_log_likelihood(vae.model, vae.guide, x_test, k=5000)
    print(f"log p(x) ~ {result.mean:.2f} +- {result.se:.2f} nats per example")
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from ppl_vae.data import binarize_fixed

TEST_BINARIZATION_SEED = 0
"""Test images are binarized once with this seed, so every evaluation of a run sees the same observations."""

MAX_ELEMENTS = 2**24
"""Upper bound on ``samples x examples x pixels`` held at once (about 64 MiB of float32 decoder output)."""


@dataclass(frozen=True)
class Estimate:
    """A per-example estimate averaged over a data set.

    Attributes:
        mean: average over examples, nats per example.
        se: standard error of that average, ``std(per_example) / sqrt(N)``.
        per_example: ``(N,)`` values, nats.
    """

    mean: float
    se: float
    per_example: torch.Tensor

    @classmethod
    def from_values(cls, values: torch.Tensor) -> Estimate:
        n = values.numel()
        se = values.std().item() / math.sqrt(n) if n > 1 else float("nan")
        return cls(mean=values.mean().item(), se=se, per_example=values)


def observed_test_set(x: torch.Tensor, binary: bool) -> torch.Tensor:
    """The test observations: for a binary likelihood the grey levels binarized once with a fixed seed."""
    return binarize_fixed(x, seed=TEST_BINARIZATION_SEED) if binary else x


def log_importance_weights(
    model: Callable, guide: Callable, x: torch.Tensor, num_samples: int, y: torch.Tensor | None = None
) -> torch.Tensor:
    """``log p(x, z_s) - log q(z_s | x)`` for ``num_samples`` draws per example, in one vectorized pass.

    Arguments:
        model, guide: Pyro programs taking ``x`` of shape ``(B, D)`` (and ``y`` when it is given).
        x: observations ``(B, D)``.
        num_samples: draws of z per example (an outer plate at dim -2).
        y: labels ``(B,)`` for a conditional model, passed as the second argument of both programs; or ``None``.

    Returns:
        ``(num_samples, B)`` log weights, nats. Sites' scales (e.g. a KL weight) are ignored: this is the true joint.
    """
    guide_trace, model_trace = importance_traces(model, guide, x, num_samples, y)
    expected = (num_samples, x.shape[0])
    return sum_log_probs(model_trace, expected) - sum_log_probs(guide_trace, expected)


def importance_traces(model: Callable, guide: Callable, x: torch.Tensor, num_samples: int, y=None):
    """The guide's trace and the model's trace replayed on it, for ``num_samples`` draws per example, without
    gradients. Every sample site's value and ``fn`` carry a leading sample dimension: ``z`` is
    ``(num_samples, B, z_dim)``. ``y``, when given, is the programs' second argument."""
    args = (x,) if y is None else (x, y)
    with torch.no_grad(), pyro.plate("importance_samples", num_samples, dim=-2):
        guide_trace = poutine.trace(guide).get_trace(*args)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
    return guide_trace, model_trace


def sum_log_probs(trace, expected_shape: tuple[int, int]) -> torch.Tensor:
    """``sum`` of ``log_prob`` over every sample site of ``trace`` (plates excluded), checked to be
    ``expected_shape`` = ``(samples, examples)``; unscaled."""
    total = torch.zeros(())
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):  # plates are recorded as sample sites too
            continue
        log_prob = site["fn"].log_prob(site["value"])
        if log_prob.shape != expected_shape:
            raise ValueError(
                f"site {name!r} has log_prob shape {tuple(log_prob.shape)}, expected {expected_shape} "
                "(samples, examples): declare every site inside pyro.plate('data', B) with .to_event for its "
                "event dimensions"
            )
        total = total.to(log_prob) + log_prob  # follows the sites' device and dtype
    return total


def sample_chunks(x: torch.Tensor, num_samples: int, max_elements: int = MAX_ELEMENTS) -> Iterator[int]:
    """Sizes that add up to ``num_samples``, each with ``size x B x D <= max_elements`` (at least 1) for ``x``
    ``(B, D)``."""
    per_sample = max(1, x.shape[0] * max(1, x[0].numel()))
    chunk = max(1, min(num_samples, max_elements // per_sample))
    for start in range(0, num_samples, chunk):
        yield min(chunk, num_samples - start)


def _chunked_log_weights(model, guide, x, y, num_samples: int, max_elements: int) -> Iterator[torch.Tensor]:
    labels = () if y is None else (y,)
    for size in sample_chunks(x, num_samples, max_elements):
        yield log_importance_weights(model, guide, x, size, *labels)


def _per_example(reduce, model, guide, x, y, batch_size: int) -> torch.Tensor:
    if y is not None and y.shape != x.shape[:1]:
        raise ValueError(f"y has shape {tuple(y.shape)}, expected ({x.shape[0]},): one label per example of x")
    return torch.cat(
        [
            reduce(model, guide, x[start : start + batch_size], None if y is None else y[start : start + batch_size])
            for start in range(0, x.shape[0], batch_size)
        ]
    )


def log_weights_per_example(
    model,
    guide,
    x: torch.Tensor,
    k: int,
    batch_size: int = 256,
    max_elements: int = MAX_ELEMENTS,
    *,
    y: torch.Tensor | None = None,
) -> torch.Tensor:
    """All ``k`` log importance weights of every example, ``(N, k)``, nats; the draws and chunks are those of
    :func:`iwae_log_likelihood` (same seed, same numbers). Holds ``N x k`` values: for diagnostics that need every
    weight of an example (effective sample size, Pareto k-hat), not for the IWAE mean, which needs one chunk."""

    def reduce(model, guide, xb, yb):
        return torch.cat(list(_chunked_log_weights(model, guide, xb, yb, k, max_elements)), dim=0).T

    return _per_example(reduce, model, guide, x, y, batch_size)


def elbo(
    model,
    guide,
    x: torch.Tensor,
    num_particles: int = 100,
    batch_size: int = 256,
    max_elements: int = MAX_ELEMENTS,
    *,
    y: torch.Tensor | None = None,
) -> Estimate:
    """Per-example ELBO, ``mean_s log w_s(x)`` over ``num_particles`` samples, nats per example.

    ``x`` is ``(N, D)``; examples are processed ``batch_size`` at a time and samples in chunks of bounded memory.
    ``y`` ``(N,)``: labels passed to a conditional model and guide (the bound is then on ``log p(x | y)``).
    """

    def reduce(model, guide, xb, yb):
        total = sum(lw.sum(0) for lw in _chunked_log_weights(model, guide, xb, yb, num_particles, max_elements))
        return total / num_particles

    return Estimate.from_values(_per_example(reduce, model, guide, x, y, batch_size))


def iwae_log_likelihood(
    model,
    guide,
    x: torch.Tensor,
    k: int = 1000,
    batch_size: int = 256,
    max_elements: int = MAX_ELEMENTS,
    *,
    y: torch.Tensor | None = None,
) -> Estimate:
    """Importance-weighted estimate of log p(x) with ``k`` samples per example (the IWAE bound), nats per example.

    ``log (1/k) sum_s w_s``, accumulated with a running ``logsumexp`` over chunks, so ``k = 5000`` needs no more memory
    than one chunk. At ``k = 1`` it is the single-sample ELBO; its expectation grows with ``k`` towards log p(x).
    ``y`` ``(N,)``: labels passed to a conditional model and guide; the estimate is then of ``log p(x | y)``.
    """

    def reduce(model, guide, xb, yb):
        running = torch.full((xb.shape[0],), -math.inf, device=xb.device, dtype=xb.dtype)
        for lw in _chunked_log_weights(model, guide, xb, yb, k, max_elements):
            running = torch.logaddexp(running, torch.logsumexp(lw, dim=0))
        return running - math.log(k)

    return Estimate.from_values(_per_example(reduce, model, guide, x, y, batch_size))
