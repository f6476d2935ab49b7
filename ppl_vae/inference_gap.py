"""The inference gap split into its amortization and approximation parts (Cremer, Li and Duvenaud 2018).

The amortized guide ``q(z | x)`` (an encoder) falls short of log p(x) by the inference gap ``log p(x) - L[q]``. Fitting
a separate diagonal Normal ``q*_i(z) = Normal(loc_i, scale_i)`` to each example by SVI (the encoder's output as the
starting point, the model fixed) splits it in two::

    log p(x) - L[q]  =  (log p(x) - L[q*])   +   (L[q*] - L[q])
                          approximation gap        amortization gap

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

import math
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from ppl_vae.evaluate import MAX_ELEMENTS, Estimate, elbo, sample_chunks
from ppl_vae.programs import IMPORTANCE_PLATE, importance_traces, inspect_programs, trace_log_prob


@dataclass(frozen=True)
class InferenceGap:
    """Per-example bounds on a subset of examples, nats per example.

    Attributes:
        log_likelihood: log p(x) from ``k`` draws of the even mixture of the amortized and the local guide.
        elbo_amortized: L[q], the ELBO of the amortized guide.
        elbo_local: L[q*], the ELBO of the per-example Normal guides fitted by SVI.
        steps: SVI steps per fit.
    """

    log_likelihood: Estimate
    elbo_amortized: Estimate
    elbo_local: Estimate
    steps: int

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
        return {**out, "gap_examples": self.examples, "gap_steps": self.steps}


def normal_guide(loc: torch.Tensor, scale: torch.Tensor) -> Callable[[torch.Tensor], None]:
    """A non-amortized guide: ``z ~ Normal(loc, scale).to_event(1)`` in plate ``"data"``, with ``loc`` and ``scale``
    ``(N, z_dim)`` for exactly the ``N`` examples it is called with."""

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    return guide


def fit_local_guide(
    model: Callable, guide: Callable, x: torch.Tensor, steps: int = 300, lr: float = 0.05, num_particles: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit ``Normal(loc_i, scale_i)`` to each example of ``x`` ``(N, D)`` by SVI on ``Trace_ELBO``; returns ``loc``
    and ``scale`` ``(N, z_dim)``.

    Starts from the mean and standard deviation of ``guide``'s ``"z"``; Adam on ``(loc, log scale)`` only, with a
    cosine-decaying learning rate so the last steps settle; the model's parameters are not changed (gradients are
    taken with respect to the local parameters alone). The examples' ELBOs are summed, so each example's parameters
    follow their own ELBO.
    """
    guide_trace, _, _ = importance_traces(model, guide, x, 1)
    start = guide_trace.nodes["z"]["fn"]
    loc = start.mean[0].detach().clone().requires_grad_(True)
    log_scale = start.stddev[0].detach().log().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([loc, log_scale], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    objective = Trace_ELBO(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)
    for _ in range(steps):
        loss = objective.differentiable_loss(model, normal_guide(loc, log_scale.exp()), x)
        loc.grad, log_scale.grad = torch.autograd.grad(loss, [loc, log_scale])
        optimizer.step()
        schedule.step()
    return loc.detach(), log_scale.detach().exp()


def mixture_log_likelihood(
    model: Callable, guides: list[Callable], x: torch.Tensor, k: int, max_elements: int = MAX_ELEMENTS
) -> torch.Tensor:
    """log p(x) per example ``(N,)`` from ``k // len(guides)`` draws of each guide, weighted by the even mixture::

        log (1 / k) sum_{g, s} p(x, z_gs) / ((1 / G) sum_h q_h(z_gs | x)),   z_gs ~ q_g

    Every guide is evaluated at every draw by replaying it on the draw's trace.
    """
    shape = (x.shape[0],)
    running = torch.full(shape, -math.inf, dtype=x.dtype, device=x.device)
    per_guide = max(1, k // len(guides))
    sites = inspect_programs(model, guides[0], x)
    for source in guides:
        for size in sample_chunks(x, per_guide, max_elements):
            source_trace, model_trace, _ = importance_traces(model, source, x, size, sites=sites)
            log_q = []
            for other in guides:
                with torch.no_grad(), pyro.plate(IMPORTANCE_PLATE, size, dim=sites.sample_dim):
                    replayed = poutine.trace(poutine.replay(other, trace=source_trace)).get_trace(x)
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
) -> InferenceGap:
    """Amortization and approximation gaps of ``guide`` on the examples ``x`` ``(N, D)`` (keep ``N`` small: one SVI
    fit of ``steps`` steps for all of them together).

    ``k`` importance samples per example for log p(x) (half from each guide), ``elbo_particles`` for each ELBO.
    """
    loc, scale = fit_local_guide(model, guide, x, steps, lr, num_particles)
    local = normal_guide(loc, scale)
    whole = {"batch_size": x.shape[0]}  # the local guide's parameters cover exactly these examples, in one batch
    return InferenceGap(
        log_likelihood=Estimate.from_values(mixture_log_likelihood(model, [guide, local], x, k)),
        elbo_amortized=elbo(model, guide, x, num_particles=elbo_particles, **whole),
        elbo_local=elbo(model, local, x, num_particles=elbo_particles, **whole),
        steps=steps,
    )
