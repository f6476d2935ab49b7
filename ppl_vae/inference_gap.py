"""The inference gap split into its amortization and approximation parts (Cremer, Li and Duvenaud 2018).

The amortized guide ``q(z | x)`` (an encoder) falls short of log p(x) by the inference gap ``log p(x) - L[q]``. Fitting
a separate diagonal Normal ``q*_i(z) = Normal(loc_i, scale_i)`` to each example by SVI (the encoder's output as the
starting point, the model fixed) splits it in two::

    log p(x) - L[q]  =  (log p(x) - L[q*])   +   (L[q*] - L[q])
                          approximation gap        amortization gap

The local guide covers every latent site of the program: per example and per site, a diagonal Normal over the
site's value (every element of its event, at every position of the plates around it), pushed through
``biject_to(support)`` when the support is not the real line (a positive scale, a simplex), started from the amortized
guide's mean and standard deviation (Monte Carlo estimates over ``START_DRAWS`` draws, of the unconstrained value,
where the guide has no analytic ones, depends on its other draws, or the support is constrained). Sites with discrete
support are refused: a Normal cannot stand in for them.

The approximation gap is what the Normal family itself costs (``min_q* KL(q* || p(z | x))``); the amortization gap is
what sharing one encoder across examples costs. ``log p(x)`` is estimated with both guides at once: ``k / 2`` draws from
each and the weights ``p(x, z) / (q(z | x) / 2 + q*(z) / 2)`` (the balance heuristic of multiple importance sampling,
an unbiased estimate of p(x) under the even mixture). It is as tight as the better of the two and stays reliable when
one has too light tails, as the mean-field ``q*`` has on a correlated posterior; the paper's larger-of-two-IWAE
estimates can overshoot log p(x) there.

Example::

    gap = inference_gap(vae.model, vae.guide, x_test[:20])
    print(gap.amortization_gap.mean, gap.approximation_gap.mean)     # nats per example
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch.distributions import biject_to, constraints
from torch.distributions.transforms import Transform

from ppl_vae.errors import InputError
from ppl_vae.evaluate import MAX_ELEMENTS, Estimate, check_extra_args, elbo, sample_chunks
from ppl_vae.programs import (
    IMPORTANCE_PLATE,
    ProgramSites,
    importance_traces,
    inspect_programs,
    latent_parents,
    program_args,
    rng_preserved,
    trace_log_prob,
)


@dataclass(frozen=True)
class InferenceGap:
    """Per-example bounds on a subset of examples, nats per example.

    Attributes:
        log_likelihood: log p(x) from ``k`` draws of the even mixture of the amortized and the local guide.
        elbo_amortized: L[q], the ELBO of the amortized guide.
        elbo_local: L[q*], the ELBO of the per-example Normal guides fitted by SVI.
        steps: SVI steps per fit.
        guide_parents: the latent sites on which the amortized guide makes each site depend (only those with any):
            ``{"top": ("bottom",)}`` for q(bottom | x) q(top | bottom). The local guide is mean-field, so where this
            is not empty its family does not contain the amortized one, and the split is not one of two gaps >= 0.
    """

    log_likelihood: Estimate
    elbo_amortized: Estimate
    elbo_local: Estimate
    steps: int
    guide_parents: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def approximation_gap(self) -> Estimate:
        """``log p(x) - L[q*]``: the cost of the variational family."""
        return Estimate.from_values(self.log_likelihood.per_example - self.elbo_local.per_example)

    @property
    def amortization_gap(self) -> Estimate:
        """``L[q*] - L[q]``: the cost of one encoder for every example."""
        return Estimate.from_values(self.elbo_local.per_example - self.elbo_amortized.per_example)

    @property
    def examples(self) -> int:
        return self.log_likelihood.per_example.numel()

    @property
    def warnings(self) -> list[str]:
        """One sentence where the split cannot be read as two gaps >= 0: a guide with dependent latent sites."""
        if not self.guide_parents:
            return []
        dependent = "; ".join(f"q({name} | {', '.join(parents)})" for name, parents in self.guide_parents.items())
        return [
            f"the guide makes latent sites depend on each other ({dependent}) while the per-example guide of the "
            "inference gap is mean-field: its family does not contain the amortized one, so the amortization gap "
            "can be negative and the approximation gap is that of the mean-field family"
        ]

    def to_json(self) -> dict:
        """``report.json`` keys for the gap, nats per example."""
        values = {
            "amortization_gap": self.amortization_gap,
            "approximation_gap": self.approximation_gap,
            "gap_log_likelihood": self.log_likelihood,
            "gap_elbo_amortized": self.elbo_amortized,
            "gap_elbo_local": self.elbo_local,
        }
        out = {name: value.mean for name, value in values.items()}
        out.update({f"{name}_se": value.se for name, value in values.items()})
        out["gap_guide_parents"] = {name: list(parents) for name, parents in self.guide_parents.items()}
        return {**out, "gap_examples": self.examples, "gap_steps": self.steps}


START_DRAWS = 100
"""Draws of the amortized guide for the local guide's starting point where it needs Monte Carlo estimates."""


@dataclass(frozen=True)
class LocalSite:
    """One latent site of the local guide: ``z = transform(u)``, ``u ~ Normal(loc, scale)`` element by element.

    Attributes:
        name: the site's name.
        frames: ``(name, size, dim)`` of the plates around the site (the user's, outside in).
        transform: ``biject_to(support)``; ``None`` for a real-valued site (``z = u``).
        event_dim: the event dimensions of ``u``.
        loc, scale: ``u``'s parameters, the shape of the site's value for one draw (for the built-in VAE
            ``(B, z_dim)``).
    """

    name: str
    frames: tuple[tuple[str, int, int], ...]
    transform: Transform | None
    event_dim: int
    loc: torch.Tensor
    scale: torch.Tensor

    def dist(self, loc: torch.Tensor, scale: torch.Tensor) -> dist.TorchDistribution:
        normal = dist.Normal(loc, scale).to_event(self.event_dim)
        return normal if self.transform is None else dist.TransformedDistribution(normal, [self.transform])


def local_guide(sites: list[LocalSite], locs: list[torch.Tensor], scales: list[torch.Tensor]) -> Callable:
    """A non-amortized guide ``guide(x, *args)``: each site of ``sites`` drawn from ``site.dist(loc, scale)`` inside
    its plates, for exactly the examples the parameters were made for."""

    def guide(x: torch.Tensor, *args) -> None:
        plates = {}  # one plate object per name: a plate records its subsample site when it is made
        for site, loc, scale in zip(sites, locs, scales, strict=True):
            with contextlib.ExitStack() as stack:
                for name, size, dim in site.frames:
                    if name not in plates:
                        plates[name] = pyro.plate(name, size, dim=dim)
                    stack.enter_context(plates[name])
                pyro.sample(site.name, site.dist(loc, scale))

    return guide


def _is_real(support) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


def starting_point(model: Callable, guide: Callable, x: torch.Tensor, args: tuple, sites: ProgramSites):
    """The local guide's sites, started from the amortized guide (see the module's docstring): a list of
    :class:`LocalSite`. Raises :class:`~ppl_vae.errors.InputError` for a latent site with discrete support."""
    guide_trace, _, _ = importance_traces(model, guide, x, 1, *args, sites=sites)
    parents = latent_parents(guide, guide_trace, x, *args, sites=sites)
    drawn = None
    local = []
    for name in sites.latent:
        site = guide_trace.nodes[name]
        fn = site["fn"]
        if fn.support.is_discrete:
            raise InputError(
                f"latent site {name!r} has discrete support ({fn.support}): the inference gap fits a Normal per "
                "example to every latent site, so it needs continuous ones"
            )
        transform = None if _is_real(fn.support) else biject_to(fn.support)
        event_dim = fn.event_dim if transform is None else transform.domain.event_dim
        moments = _analytic_moments(fn) if transform is None and not parents[name] else None
        if moments is None:  # Monte Carlo over the unconstrained draws
            if drawn is None:
                drawn, _, _ = importance_traces(model, guide, x, START_DRAWS, *args, sites=sites)
            value = drawn.nodes[name]["value"]
            unconstrained = value if transform is None else transform.inv(value)
            axis = unconstrained.dim() - event_dim + sites.sample_dim
            moments = unconstrained.mean(axis, keepdim=True), unconstrained.std(axis, keepdim=True)
        axis = moments[0].dim() - event_dim + sites.sample_dim  # the sample dimension, of size 1
        loc, scale = (moment.select(axis, 0).detach() for moment in moments)
        frames = tuple(
            (frame.name, frame.size, frame.dim)
            for frame in reversed(site["cond_indep_stack"])
            if frame.vectorized and frame.name != IMPORTANCE_PLATE
        )
        tiny = torch.finfo(scale.dtype).tiny
        local.append(LocalSite(name, frames, transform, event_dim, loc, scale.clamp(min=tiny)))
    return local


def _analytic_moments(fn) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(fn.mean, fn.stddev)`` where the distribution has finite ones; ``None`` otherwise."""
    try:
        moments = fn.mean, fn.stddev
    except NotImplementedError:
        return None
    return moments if all(bool(torch.isfinite(moment).all()) for moment in moments) else None


def fit_local_guide(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    steps: int = 300,
    lr: float = 0.05,
    num_particles: int = 16,
    *,
    args: tuple = (),
    sites: ProgramSites | None = None,
) -> Callable:
    """Fit a local guide (a diagonal Normal per example and latent site, see :func:`starting_point`) to the examples
    ``x`` by SVI on ``Trace_ELBO``; returns it as a Pyro program ``guide(x, *args)`` for exactly these examples.

    Adam on every ``(loc, log scale)`` only, with a cosine-decaying learning rate so the last steps settle; the
    model's parameters are not changed (gradients are taken with respect to the local parameters alone). The
    examples' ELBOs are summed, so each example's parameters follow their own ELBO.
    """
    sites = sites or inspect_programs(model, guide, x, *args)
    local = starting_point(model, guide, x, args, sites)
    locs = [site.loc.clone().requires_grad_(True) for site in local]
    log_scales = [site.scale.log().clone().requires_grad_(True) for site in local]
    parameters = [tensor for pair in zip(locs, log_scales, strict=True) for tensor in pair]
    optimizer = torch.optim.Adam(parameters, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    objective = Trace_ELBO(
        num_particles=num_particles, vectorize_particles=True, max_plate_nesting=sites.max_plate_nesting
    )
    for _ in range(steps):
        loss = objective.differentiable_loss(model, local_guide(local, locs, [s.exp() for s in log_scales]), x, *args)
        for tensor, grad in zip(parameters, torch.autograd.grad(loss, parameters), strict=True):
            tensor.grad = grad
        optimizer.step()
        schedule.step()
    return local_guide(local, [loc.detach() for loc in locs], [s.detach().exp() for s in log_scales])


def mixture_log_likelihood(
    model: Callable,
    guides: list[Callable],
    x: torch.Tensor,
    k: int,
    max_elements: int = MAX_ELEMENTS,
    *,
    args: tuple = (),
    sites: ProgramSites | None = None,
) -> torch.Tensor:
    """log p(x) per example ``(N,)`` from ``k // len(guides)`` draws of each guide, weighted by the even mixture::

        log (1 / k) sum_{g, s} p(x, z_gs) / ((1 / G) sum_h q_h(z_gs | x)),   z_gs ~ q_g

    Every guide is evaluated at every draw by replaying it on the draw's trace; ``args`` go to every program.
    """
    shape = (x.shape[0],)
    running = torch.full(shape, -math.inf, dtype=x.dtype, device=x.device)
    per_guide = max(1, k // len(guides))
    sites = sites or inspect_programs(model, guides[0], x, *args)
    for source in guides:
        for size in sample_chunks(x, per_guide, max_elements):
            source_trace, model_trace, _ = importance_traces(model, source, x, size, *args, sites=sites)
            log_q = []
            for other in guides:
                with torch.no_grad(), pyro.plate(IMPORTANCE_PLATE, size, dim=sites.sample_dim):
                    replayed = poutine.trace(poutine.replay(other, trace=source_trace)).get_trace(x, *args)
                log_q.append(trace_log_prob(replayed, sites, (size, *shape)))
            log_mixture = torch.logsumexp(torch.stack(log_q), dim=0) - math.log(len(guides))
            log_weights = trace_log_prob(model_trace, sites, (size, *shape)) - log_mixture
            running = torch.logaddexp(running, torch.logsumexp(log_weights, dim=0))
    return running - math.log(per_guide * len(guides))


def inference_gap(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    steps: int = 300,
    lr: float = 0.05,
    num_particles: int = 16,
    k: int = 1000,
    elbo_particles: int = 1000,
    *,
    args: Sequence = (),
    y: torch.Tensor | None = None,
    data_plate: str | None = None,
) -> InferenceGap:
    """Amortization and approximation gaps of ``guide`` on the examples ``x`` ``(N, ...)`` (keep ``N`` small: one SVI
    fit of ``steps`` steps for all of them together).

    ``k`` importance samples per example for log p(x) (half from each guide), ``elbo_particles`` for each ELBO.
    ``args``: the programs' extra arguments (``y=`` is the older spelling of ``args=(y,)``: labels, and the gaps
    are then those of ``log p(x | y)``); ``data_plate``: the plate over the examples, when there are several of
    ``N``. Every latent site must be continuous (an :class:`~ppl_vae.errors.InputError` otherwise).
    """
    args = program_args(x, args, y)
    check_extra_args(x, args)
    sites = inspect_programs(model, guide, x, *args, data_plate=data_plate)
    with rng_preserved(x.device):  # the gap's own draws stay those of a run without this look
        guide_trace, _, _ = importance_traces(model, guide, x, 2, *args, sites=sites)
        parents = latent_parents(guide, guide_trace, x, *args, sites=sites)
    local = fit_local_guide(model, guide, x, steps, lr, num_particles, args=args, sites=sites)
    # the local guide's parameters cover exactly these examples, in one batch
    # (and the whole computation stays in this process: the fit is local, so the ELBOs are not sharded either)
    whole = {"batch_size": x.shape[0], "args": args, "data_plate": sites.data_plate, "shard": False}
    log_likelihood = mixture_log_likelihood(model, [guide, local], x, k, args=args, sites=sites)
    return InferenceGap(
        log_likelihood=Estimate.from_values(log_likelihood),
        elbo_amortized=elbo(model, guide, x, num_particles=elbo_particles, **whole),
        elbo_local=elbo(model, local, x, num_particles=elbo_particles, **whole),
        steps=steps,
        guide_parents={name: tuple(found) for name, found in parents.items() if found},
    )
