"""Honest evaluation: the ELBO and the importance-weighted estimate of log p(x), in nats per example.

Both come from the log importance weights of the guide as proposal, for ``S`` samples ``z_s ~ q(z | x)``::

    log w_s(x) = log p(x, z_s) - log q(z_s | x)                    (sum over every sample site of model and guide)

    ELBO(x)      ~ (1 / S) sum_s log w_s(x)                         (a lower bound on log p(x), in expectation)
    IWAE_k(x)    = log (1 / k) sum_s exp(log w_s(x)),  s = 1..k      (Burda et al. 2015; grows with k towards log p(x))

The functions take any Pyro ``model(x, *args)`` / ``guide(x, *args)`` that keep the program contract of
:mod:`ppl_vae.programs` (any latent sites, one data plate, masks honoured, scales ignored). With labels ``y`` (a
conditional model) they call ``model(x, y)`` and ``guide(x, y)`` and the estimates are of ``log p(x | y)``. Samples
are vectorized with a plate left of the user's and chunked so that memory stays bounded for any ``k``. Every estimate
comes with a standard error over the examples: ``std / sqrt(N)``.

Example::

    result = iwae_log_likelihood(vae.model, vae.guide, x_test, k=5000)
    print(f"log p(x) ~ {result.mean:.2f} +- {result.se:.2f} nats per example")
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from ppl_vae.data import Dataset, binarize_fixed
from ppl_vae.errors import InputError
from ppl_vae.eval_memory import ChunkPlan
from ppl_vae.eval_shards import evaluation_seed, map_batches
from ppl_vae.inputs import require_count
from ppl_vae.programs import (
    ProgramSites,
    UserProgram,
    example_batches,
    inspect_programs,
    log_importance_weights,
    program_args,
)

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


def program_test_set(program: UserProgram, data: Dataset) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The test observations of ``data`` for ``program`` (:func:`observed_test_set` with ``program.binary``) on the
    program's device, and the test labels ``(N,)`` for a program that takes them (``None`` otherwise)."""
    x_test = observed_test_set(data.x_test, program.binary).to(program.device)
    return x_test, data.y_test.to(program.device) if program.labels else None


def sample_chunks(x: torch.Tensor, num_samples: int, max_elements: int = MAX_ELEMENTS) -> Iterator[int]:
    """Sizes that add up to ``num_samples``, each with ``size x B x D <= max_elements`` (at least 1) for ``x``
    ``(B, D)``."""
    return ChunkPlan(max_elements).sizes(x, num_samples)


def _chunked_log_weights(
    model, guide, x, args: tuple, num_samples: int, plan: ChunkPlan, sites: ProgramSites
) -> Iterator[torch.Tensor]:
    for size in plan.sizes(x, num_samples):
        yield log_importance_weights(model, guide, x, size, args=args, sites=sites)


def inspected_batches(
    model, guide, x: torch.Tensor, args: tuple, batch_size: int, data_plate=None
) -> tuple[list[tuple[torch.Tensor, tuple]], ProgramSites]:
    """The batches ``(x_batch, args_batch)`` of ``batch_size`` examples, and the pair's :class:`ProgramSites`,
    inspected once on the first batch (see :func:`ppl_vae.programs.inspect_programs`)."""
    check_extra_args(x, args)
    batches = list(example_batches(x, args, batch_size))
    return batches, inspect_programs(model, guide, batches[0][0], *batches[0][1], data_plate=data_plate)


def planned_batches(
    model,
    guide,
    x: torch.Tensor,
    args: tuple,
    batch_size: int,
    data_plate=None,
    max_elements: int = MAX_ELEMENTS,
    memory_mb: float | None = None,
) -> tuple[list[tuple[torch.Tensor, tuple]], ProgramSites, ChunkPlan]:
    """:func:`inspected_batches` and the :class:`~ppl_vae.eval_memory.ChunkPlan` of their passes: ``max_elements``
    values per pass, or with ``memory_mb`` the samples that the budget allows by the measured bytes of a pass of the
    first batch (whose examples are then fewer than ``batch_size`` only when one sample of ``batch_size`` examples
    exceeds the budget). The draws do not depend on the plan: the same seed gives the same numbers for any budget
    that keeps the examples per batch, up to the rounding of the running sums."""
    batches, sites = inspected_batches(model, guide, x, args, batch_size, data_plate)
    plan = ChunkPlan.measure(model, guide, *batches[0], sites, memory_mb, max_elements)
    fitting = plan.examples_per_batch(batches[0][0].shape[0])
    if fitting < batches[0][0].shape[0]:
        batches = list(example_batches(x, args, fitting))
    return batches, sites, plan


def per_example(
    reduce,
    model,
    guide,
    x: torch.Tensor,
    args: tuple,
    batch_size: int,
    data_plate=None,
    max_elements: int = MAX_ELEMENTS,
    memory_mb: float | None = None,
    *,
    keyed_seed: int | None = None,
    shard: bool = True,
) -> torch.Tensor:
    """``reduce(model, guide, x_batch, args_batch, sites, plan)`` over the :func:`planned_batches` of ``batch_size``
    examples, concatenated: ``(N, ...)``.

    Keyed and sharded (:mod:`ppl_vae.eval_shards`): with ``keyed_seed``, or always in an initialized
    ``torch.distributed`` process group (unless ``shard=False``), batch ``b`` draws its noise from generators seeded
    with ``(keyed_seed, b)``, each rank reduces its block of batches, and every rank returns all ``N`` rows in order:
    the same numbers for any number of processes. Without either, the draws continue torch's RNG as it is.

    A distribution that refuses its value or parameters (Pyro's validation: grey levels for a Bernoulli likelihood,
    a label out of range) is an :class:`InputError` with the first line of Pyro's message."""
    require_count(batch_size, "batch_size")
    try:
        batches, sites, plan = planned_batches(model, guide, x, args, batch_size, data_plate, max_elements, memory_mb)
        seed = evaluation_seed(keyed_seed, shard)
        if seed is None:
            return torch.cat([reduce(model, guide, xb, argsb, sites, plan) for xb, argsb in batches])

        def compute(batch: int) -> torch.Tensor:
            return reduce(model, guide, *batches[batch], sites, plan)

        return map_batches(compute, [xb.shape[0] for xb, _ in batches], seed, x.device, shard)
    except ValueError as error:
        if isinstance(error, InputError):
            raise
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(f"the model cannot score x: {reason}") from None


def check_extra_args(x: torch.Tensor, args: tuple) -> None:
    """Labels given as the programs' argument must have one entry per example of ``x``."""
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        raise InputError(f"x must be a tensor of examples (N, ...), got {type(x).__name__}")
    if x.shape[0] == 0:
        raise InputError("x holds no examples: evaluation needs at least one")
    for arg in args:
        if isinstance(arg, torch.Tensor) and arg.dim() == 1 and arg.shape[0] != x.shape[0]:
            raise InputError(
                f"an extra argument has shape {tuple(arg.shape)}, expected ({x.shape[0]},): one label per example of x"
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
    args: Sequence = (),
    data_plate: str | None = None,
    memory_mb: float | None = None,
    keyed_seed: int | None = None,
    shard: bool = True,
) -> torch.Tensor:
    """All ``k`` log importance weights of every example, ``(N, k)``, nats; the draws and chunks are those of
    :func:`iwae_log_likelihood` (same seed, same numbers). Holds ``N x k`` values: for diagnostics that need every
    weight of an example (effective sample size, Pareto k-hat), not for the IWAE mean, which needs one chunk.
    ``keyed_seed``, ``shard``: as in :func:`elbo` (every rank then holds all ``N x k`` weights)."""

    require_count(k, "k")

    def reduce(model, guide, xb, argsb, sites, plan):
        return torch.cat(list(_chunked_log_weights(model, guide, xb, argsb, k, plan, sites)), dim=0).T

    args, keyed = program_args(x, args, y), {"keyed_seed": keyed_seed, "shard": shard}
    return per_example(reduce, model, guide, x, args, batch_size, data_plate, max_elements, memory_mb, **keyed)


def elbo(
    model,
    guide,
    x: torch.Tensor,
    num_particles: int = 100,
    batch_size: int = 256,
    max_elements: int = MAX_ELEMENTS,
    *,
    y: torch.Tensor | None = None,
    args: Sequence = (),
    data_plate: str | None = None,
    memory_mb: float | None = None,
    keyed_seed: int | None = None,
    shard: bool = True,
) -> Estimate:
    """Per-example ELBO, ``mean_s log w_s(x)`` over ``num_particles`` samples, nats per example.

    ``x`` is ``(N, ...)``; examples are processed ``batch_size`` at a time and samples in chunks of bounded memory.
    ``args``: the programs' extra arguments (``model(x, *args)``); ``y=`` is the older spelling of ``args=(y,)``
    (labels of a conditional model: the bound is then on ``log p(x | y)``). ``data_plate``: the plate over the
    examples, when the programs have several of ``N`` (found from a trace otherwise). ``memory_mb``: a budget in MB
    (10^6 bytes) for one pass of samples, instead of ``max_elements`` (see :func:`planned_batches`; the same seed gives
    the same numbers for any budget, up to rounding). ``keyed_seed``: draw each batch's noise from generators seeded
    with ``(keyed_seed, batch)``, the mode that an initialized ``torch.distributed`` group always uses (each rank
    evaluates its block of batches and every rank gets all ``N`` values; ``shard=False`` keeps to this process; see
    :func:`per_example`).
    """

    require_count(num_particles, "num_particles")

    def reduce(model, guide, xb, argsb, sites, plan):
        chunks = _chunked_log_weights(model, guide, xb, argsb, num_particles, plan, sites)
        return sum(lw.sum(0) for lw in chunks) / num_particles

    args, keyed = program_args(x, args, y), {"keyed_seed": keyed_seed, "shard": shard}
    return Estimate.from_values(
        per_example(reduce, model, guide, x, args, batch_size, data_plate, max_elements, memory_mb, **keyed)
    )


def iwae_log_likelihood(
    model,
    guide,
    x: torch.Tensor,
    k: int = 1000,
    batch_size: int = 256,
    max_elements: int = MAX_ELEMENTS,
    *,
    y: torch.Tensor | None = None,
    args: Sequence = (),
    data_plate: str | None = None,
    memory_mb: float | None = None,
    keyed_seed: int | None = None,
    shard: bool = True,
) -> Estimate:
    """Importance-weighted estimate of log p(x) with ``k`` samples per example (the IWAE bound), nats per example.

    ``log (1/k) sum_s w_s``, accumulated with a running ``logsumexp`` over chunks, so ``k = 5000`` needs no more memory
    than one chunk. At ``k = 1`` it is the single-sample ELBO; its expectation grows with ``k`` towards log p(x).
    ``args``, ``y``, ``data_plate``, ``memory_mb``, ``keyed_seed``, ``shard``: as in :func:`elbo` (with labels the
    estimate is of ``log p(x | y)``).
    """

    require_count(k, "k")

    def reduce(model, guide, xb, argsb, sites, plan):
        running = None  # follows the log weights' dtype and device, not x's (x may hold integers)
        for lw in _chunked_log_weights(model, guide, xb, argsb, k, plan, sites):
            chunk = torch.logsumexp(lw, dim=0)
            running = chunk if running is None else torch.logaddexp(running, chunk)
        return running - math.log(k)

    args, keyed = program_args(x, args, y), {"keyed_seed": keyed_seed, "shard": shard}
    return Estimate.from_values(
        per_example(reduce, model, guide, x, args, batch_size, data_plate, max_elements, memory_mb, **keyed)
    )
