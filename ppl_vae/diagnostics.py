"""Diagnostics of an evaluation: how far the ELBO is from log p(x), whether the importance-sampling estimate of
log p(x) can be trusted, and which latent dimensions the code uses.

For every example ``x_i``, ``k`` draws ``z_s ~ q(z | x_i)`` from the guide give the log importance weights
``log w_is = log p(x_i, z_s) - log q(z_s | x_i)`` (:func:`ppl_vae.evaluate.log_weights_per_example`), and from the
same draws::

    log p(x_i) ~ IWAE_k(x_i) = log (1/k) sum_s w_is           (Burda et al. 2015; a stochastic lower bound)
    ELBO(x_i)  ~ (1/k) sum_s log w_is                          (unbiased for the ELBO of q)
    gap_i      = IWAE_k(x_i) - ELBO(x_i) >= 0                  (Jensen, for the same draws; -> KL(q(z|x_i) || p(z|x_i)))
    ESS_i      = (sum_s w_is)^2 / sum_s w_is^2                 (effective sample size, in [1, k])
    khat_i     = shape of a generalized Pareto fitted to the largest w_is (PSIS, Vehtari et al. 2024, with ArviZ's
                 ``az.psislw``; Yao et al. 2018): < 0.5 good, 0.5 to 0.7 slow, > 0.7 the estimate is unreliable

The latent code, per latent site ``s`` of the guide (any names, any number; see :mod:`ppl_vae.latent_sites`)::

    KL_sj     = mean_i E_q[log q(z_sj | x_i, ...) - log p(z_sj | parents)]     (nats per example, per unit j)
    A_sj      = Var_i(E_q[z_sj | x_i])                        (activity; unit j is active if A_sj > 0.01,
                                                                Burda et al. 2015)

``KL_sj`` is a closed form where one is registered and the site's prior has no latent parent, and a Monte Carlo
estimate from the same ``k`` draws otherwise, with its standard error; for a site whose prior depends on other
latent sites it is an expectation that can be negative (only the sum over every site is a KL). A unit is one element
of the site's event (where both distributions factorize over it; else the whole site is one unit) at one position
of the plates nested in the data plate. With one latent site, ``kl_per_dim`` and ``activity`` are that site's; with
several, their concatenation in the guide's order (and ``latent_sites`` holds them site by site).

The posterior has collapsed when no unit is active or the total KL is below ``COLLAPSE_KL`` nats per example:
the code then says (almost) nothing about ``x``.

Every function takes any Pyro ``model(x, *args)`` / ``guide(x, *args)`` that keep the program contract of
:mod:`ppl_vae.programs` (labels and other extra arguments go in ``args=``, or ``y=``).

Example::

    report = diagnose(vae.model, vae.guide, x_test, k=5000)
    print(report.log_likelihood.mean, report.gap.mean, report.khat_share_above(0.7), report.active_units)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from ppl_vae.errors import InputError
from ppl_vae.eval_shards import (
    evaluation_seed,
    gather_rows,
    keyed_rng,
    owned_batches,
    rows_per_rank,
    world,
)
from ppl_vae.evaluate import MAX_ELEMENTS, Estimate, planned_batches
from ppl_vae.latent_sites import (
    ACTIVE_UNIT_THRESHOLD,
    COLLAPSE_KL,
    DrawSums,
    SiteUsage,
    kl_terms,
    mean_terms,
    plan_sites,
    site_usage,
)
from ppl_vae.programs import importance_traces, latent_parents, program_args, trace_log_weights
from ppl_vae.sharding import derived_seed

KHAT_THRESHOLDS = (0.5, 0.7)
"""Pareto k-hat above 0.5: the importance weights' variance is infinite; above 0.7: the estimate is unreliable."""

MIN_KHAT_SAMPLES = 100
"""Fewest draws per example for a Pareto k-hat: PSIS fits the tail of ``min(k/5, 3 sqrt(k))`` largest weights."""


def check_samples(k: int) -> None:
    """Refuse fewer than ``MIN_KHAT_SAMPLES`` importance samples per example (an :class:`InputError` naming ``--k``)."""
    if k < MIN_KHAT_SAMPLES:
        raise InputError(f"--k {k}: the diagnostics need at least {MIN_KHAT_SAMPLES} importance samples per example")


def import_arviz():
    """``import arviz``, without its once-a-day FutureWarning about a coming refactor (nothing this package uses)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning)
        import arviz

    return arviz


def pareto_khat(log_weights: torch.Tensor) -> torch.Tensor:
    """Pareto k-hat of PSIS per example, from ``az.psislw``: ``(N, k)`` log weights -> ``(N,)`` float64.

    Weights that are equal up to rounding (``max - min`` below ``sqrt(eps) * max(1, |log w|)`` of their dtype), as
    with the exact posterior for a guide, have no tail to fit: their k-hat is ``-inf``, the limit of the generalized
    Pareto family towards a point mass (ArviZ would report ``inf``, "no tail samples", the opposite verdict).
    """
    if log_weights.shape[-1] < MIN_KHAT_SAMPLES:
        raise InputError(
            f"Pareto k-hat needs at least {MIN_KHAT_SAMPLES} samples per example, got {log_weights.shape[-1]}"
        )
    az = import_arviz()
    values = log_weights.detach().to("cpu", torch.float64).numpy()
    rounding = math.sqrt(torch.finfo(log_weights.dtype).eps) * np.maximum(1.0, np.abs(values).max(-1))
    varying = values.max(-1) - values.min(-1) > rounding
    khat = np.full(values.shape[:-1], -np.inf)
    if varying.any():
        khat[varying] = az.psislw(values[varying], reff=1.0)[1]
    return torch.from_numpy(khat)


def effective_sample_size(log_weights: torch.Tensor) -> torch.Tensor:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` of the raw weights: ``(N, k)`` -> ``(N,)``, in [1, k]."""
    normalized = torch.softmax(log_weights.double(), dim=-1)
    return 1.0 / normalized.pow(2).sum(-1)


@dataclass(frozen=True)
class Diagnostics:
    """The diagnostics of one evaluation (see the module's docstring for the formulas).

    Attributes:
        log_likelihood: IWAE_k estimate of log p(x), nats per example.
        elbo: the ELBO from the same ``k`` draws, nats per example.
        gap: ``log_likelihood - elbo`` per example, nats (>= 0).
        k: importance samples per example.
        khat: ``(N,)`` Pareto k-hat per example (``-inf`` for weights constant up to rounding).
        ess: ``(N,)`` effective sample size per example, in [1, k].
        latent_sites: site name -> :class:`~ppl_vae.latent_sites.SiteUsage` (KL term per unit, its standard error
            and method, activity), in the guide's order.
        kl_per_dim: ``(U,)`` the KL term per unit, nats per example: the single latent site's, or every site's
            in the guide's order.
        activity: ``(U_z,)`` ``Var_x(E_q[z_j | x])``: the single site's, or every continuous site's in order.
    """

    log_likelihood: Estimate
    elbo: Estimate
    gap: Estimate
    k: int
    khat: torch.Tensor
    ess: torch.Tensor
    latent_sites: dict[str, SiteUsage]

    @property
    def kl_per_dim(self) -> torch.Tensor:
        return torch.cat([site.kl_per_dim for site in self.latent_sites.values()])

    @property
    def activity(self) -> torch.Tensor:
        continuous = [site.activity for site in self.latent_sites.values() if site.activity is not None]
        return torch.cat(continuous) if continuous else torch.zeros(0, dtype=torch.float64)

    @property
    def active(self) -> torch.Tensor:
        """``(U_z,)`` booleans: ``activity > ACTIVE_UNIT_THRESHOLD``."""
        return self.activity > ACTIVE_UNIT_THRESHOLD

    @property
    def active_units(self) -> int:
        return int(self.active.sum())

    @property
    def collapsed(self) -> bool:
        """No active unit (where activity was measured), or a total KL below ``COLLAPSE_KL`` nats per example."""
        measured = len(self.activity) > 0
        return (measured and self.active_units == 0) or float(self.kl_per_dim.sum()) < COLLAPSE_KL

    def khat_share_above(self, threshold: float) -> float:
        """The share of examples whose k-hat exceeds ``threshold``, in [0, 1]."""
        return float((self.khat > threshold).double().mean())

    @property
    def warnings(self) -> list[str]:
        """One sentence per problem found: a collapsed posterior (or, with several latent sites, a collapsed site),
        unreliable or slow importance sampling."""
        found = []
        if self.collapsed:
            found.append(
                f"posterior collapse: {self.active_units} of {len(self.activity)} latent dimensions active, total KL "
                f"{float(self.kl_per_dim.sum()):.4f} nats per example; the code carries (almost) no information "
                "about x"
            )
        elif len(self.latent_sites) > 1:
            found += [
                f"latent site {name!r} has collapsed: {site.active_units} of {len(site.activity)} units active, "
                f"KL term {site.kl_total:.4f} nats per example"
                if site.activity is not None
                else f"latent site {name!r} has collapsed: KL term {site.kl_total:.4f} nats per example"
                for name, site in self.latent_sites.items()
                if site.collapsed
            ]
        unreliable, slow = (self.khat_share_above(threshold) for threshold in reversed(KHAT_THRESHOLDS))
        if unreliable > 0:
            found.append(
                f"Pareto k-hat > 0.7 for {unreliable:.1%} of the examples: their log p(x) estimate is unreliable "
                "(the guide's tails are too light); raise --k or improve the guide"
            )
        elif slow > 0:
            found.append(f"Pareto k-hat > 0.5 for {slow:.1%} of the examples: the estimate converges slowly")
        return found

    def to_json(self) -> dict:
        """The ``report.json`` keys: plain numbers and lists, nats per example; a k-hat of ``-inf`` is ``null``."""
        return {
            "log_likelihood": self.log_likelihood.mean,
            "log_likelihood_se": self.log_likelihood.se,
            "elbo": self.elbo.mean,
            "elbo_se": self.elbo.se,
            "gap": self.gap.mean,
            "gap_se": self.gap.se,
            "k": self.k,
            "khat": [value if math.isfinite(value) else None for value in self.khat.tolist()],
            "khat_share_above_0_7": self.khat_share_above(0.7),
            "khat_share_above_0_5": self.khat_share_above(0.5),
            "ess_mean": float(self.ess.mean()),
            "kl_per_dim": self.kl_per_dim.tolist(),
            "activity": self.activity.tolist(),
            "active_units": self.active_units,
            "collapsed": self.collapsed,
            "latent_sites": {name: site.to_json() for name, site in self.latent_sites.items()},
        }


def diagnose(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    k: int = 1000,
    batch_size: int = 256,
    max_elements: int = MAX_ELEMENTS,
    *,
    args: Sequence = (),
    y: torch.Tensor | None = None,
    data_plate: str | None = None,
    memory_mb: float | None = None,
    keyed_seed: int | None = None,
    shard: bool = True,
) -> Diagnostics:
    """Importance-sampling and latent-code diagnostics of ``guide`` as a proposal for ``model`` on ``x`` ``(N, ...)``.

    Draws ``k`` samples per example once (memory ``N x k`` log weights plus one chunk of decoder output; for
    ``k = 5000`` and 300 examples 12 MB) and derives log p(x), the ELBO, their gap, the ESS, k-hat and the Monte Carlo
    KL terms from them (the same draws as :func:`ppl_vae.evaluate.iwae_log_likelihood` with the same seed). Closed
    forms and analytic means that do not depend on the draws are then read from one draw per example.

    ``args``: the programs' extra arguments (``model(x, *args)``); ``y=`` is the older spelling of ``args=(y,)``
    (labels of a conditional model: the numbers are then of ``log p(x | y)``). ``data_plate``: the plate over the
    examples, when the programs have several of ``N``. ``memory_mb``: a budget in MB for one pass of samples instead
    of ``max_elements`` (see :func:`ppl_vae.evaluate.planned_batches`).

    ``keyed_seed``, ``shard``: keyed and sharded, as :func:`ppl_vae.evaluate.elbo` (see :mod:`ppl_vae.eval_shards`): in
    an initialized ``torch.distributed`` group each rank draws the weights of its block of batches, computes their
    per-example summaries (k-hat included: ArviZ's PSIS fit is per example) and its examples' sums for the KL terms and
    activities; every rank then holds the summaries and the sums of all ``N`` examples (never the ``N x k`` weights),
    and returns the same :class:`Diagnostics` as one process with the same ``keyed_seed``.
    """
    check_samples(k)
    chunking, keyed = (max_elements, memory_mb), (keyed_seed, shard)
    raw, latent_sites, gather = _draw(
        model, guide, x, k, batch_size, chunking, program_args(x, args, y), data_plate, keyed
    )
    local, error = None, None
    try:
        if raw is not None:
            weights = raw.double()
            log_likelihood, khat = torch.logsumexp(weights, dim=-1) - math.log(k), pareto_khat(raw).to(weights.device)
            local = torch.stack([log_likelihood, weights.mean(-1), khat, effective_sample_size(weights)], dim=-1)
    except Exception as caught:  # raised by the gather, here and (its message) on every other rank
        error = caught
    log_likelihood, elbo, khat, ess = gather(local, error).T.contiguous()
    return Diagnostics(
        log_likelihood=Estimate.from_values(log_likelihood),
        elbo=Estimate.from_values(elbo),
        gap=Estimate.from_values(log_likelihood - elbo),
        k=k,
        khat=khat.cpu(),
        ess=ess,
        latent_sites=latent_sites,
    )


def latent_usage(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    k: int = 1000,
    batch_size: int = 256,
    max_elements: int = MAX_ELEMENTS,
    *,
    args: Sequence = (),
    y: torch.Tensor | None = None,
    data_plate: str | None = None,
    memory_mb: float | None = None,
    keyed_seed: int | None = None,
    shard: bool = True,
) -> dict[str, SiteUsage]:
    """Only :attr:`Diagnostics.latent_sites` of :func:`diagnose` (the same draws, the same numbers for the same seed),
    without the importance-sampling summaries (and without importing ArviZ): site name ->
    :class:`~ppl_vae.latent_sites.SiteUsage`, in the guide's order. ``k`` draws per example, at least 1; ``keyed_seed``,
    ``shard``: as in :func:`diagnose`."""
    if k < 1:
        raise InputError(f"k {k}: expected an integer >= 1")
    chunking, keyed = (max_elements, memory_mb), (keyed_seed, shard)
    return _draw(model, guide, x, k, batch_size, chunking, program_args(x, args, y), data_plate, keyed)[1]


def _draw(
    model,
    guide,
    x: torch.Tensor,
    k: int,
    batch_size: int,
    chunking: tuple,
    args: tuple,
    data_plate,
    keyed: tuple[int | None, bool] = (None, True),
) -> tuple[torch.Tensor | None, dict[str, SiteUsage], Callable]:
    """This rank's ``(n, k)`` log importance weights of :func:`diagnose` (every example's in a single process;
    ``None`` for a rank without a batch), each latent site's usage over every example, from the same draws, and
    ``gather(rows)``, which gathers per-example rows of this rank's examples into ``(N, ...)`` on every rank.
    ``chunking``: ``(max_elements, memory_mb)`` of the passes; ``keyed``: ``(keyed_seed, shard)`` (see
    :mod:`ppl_vae.eval_shards`: batch ``b`` draws under ``(seed, 0, b)``, its one-draw pass under ``(seed, 1, b)``)."""
    batches, sites, passes = planned_batches(model, guide, x, args, batch_size, data_plate, *chunking)
    seed = evaluation_seed(*keyed)
    shard = keyed[1]
    rank, world_size = world(shard)
    owned = owned_batches(len(batches), rank, world_size)
    counts = rows_per_rank([xb.shape[0] for xb, _ in batches], world_size)

    def noise(batch: int, stream: int):
        return nullcontext() if seed is None else keyed_rng(derived_seed(seed, stream, batch), x.device)

    def plan(guide_trace, model_trace, xb, argsb):
        model_parents = latent_parents(model, guide_trace, xb, *argsb, sites=sites)
        guide_parents = latent_parents(guide, guide_trace, xb, *argsb, sites=sites)
        return plan_sites(guide_trace, model_trace, sites, model_parents=model_parents, guide_parents=guide_parents)

    plans, log_weights, error = None, [], None
    kl = {name: DrawSums() for name in sites.latent}
    kl_total = {name: DrawSums() for name in sites.latent}
    means = {name: DrawSums() for name in sites.latent}

    def accumulate(plan, guide_trace, model_trace, batch, shape, once):
        if plan.kl_from_draws != once:
            terms = kl_terms(plan, guide_trace, model_trace, sites, shape)
            kl[plan.name].add(terms, batch)
            kl_total[plan.name].add(terms.sum(-1, keepdim=True), batch)
        if plan.continuous and plan.mean_from_draws != once:
            means[plan.name].add(mean_terms(plan, guide_trace, sites, shape), batch)

    try:
        if owned.start != 0 or not owned:  # the plans of every rank: from batch 0's first pass, as on rank 0
            xb, argsb = batches[0]
            with noise(0, 0):
                traces = importance_traces(model, guide, xb, next(passes.sizes(xb, k)), *argsb, sites=sites)
            plans = plan(*traces[:2], xb, argsb)
        for local, batch in enumerate(owned):
            xb, argsb = batches[batch]
            chunks = []
            with noise(batch, 0):
                for size in passes.sizes(xb, k):
                    guide_trace, model_trace, _ = importance_traces(model, guide, xb, size, *argsb, sites=sites)
                    chunks.append(trace_log_weights(guide_trace, model_trace, sites))
                    if plans is None:
                        plans = plan(guide_trace, model_trace, xb, argsb)
                    for site in plans:
                        accumulate(site, guide_trace, model_trace, local, (size, xb.shape[0]), once=False)
            log_weights.append(torch.cat(chunks, dim=0).T)
        if any(not site.kl_from_draws or (site.continuous and not site.mean_from_draws) for site in plans):
            for local, batch in enumerate(owned):  # what does not depend on the draws, from one draw
                xb, argsb = batches[batch]
                with noise(batch, 1):
                    guide_trace, model_trace, _ = importance_traces(model, guide, xb, 1, *argsb, sites=sites)
                for site in plans:
                    accumulate(site, guide_trace, model_trace, local, (1, xb.shape[0]), once=True)
    except Exception as caught:  # raised by the first gather, here and (its message) on every other rank
        error = caught

    def gather(rows: torch.Tensor | None, failure: Exception | None = None) -> torch.Tensor | None:
        return gather_rows(rows, counts, x.device, shard, failure)

    def gathered(sums: DrawSums, count: int) -> DrawSums:
        rows = [gather(torch.cat(part) if part else None, error) for part in (sums.sums, sums.squares)]
        return DrawSums(count=count, sums=rows[:1], squares=rows[1:])

    usage = {}
    for site in plans or ():
        draws = k if site.kl_from_draws else 1
        site_means = gathered(means[site.name], k if site.mean_from_draws else 1) if site.continuous else DrawSums()
        usage[site.name] = site_usage(
            site, gathered(kl[site.name], draws), gathered(kl_total[site.name], draws), site_means
        )
    if plans is None:  # failed before the first plan: the failure's first gather raises it
        gather(None, error)
    return torch.cat(log_weights) if log_weights else None, usage, gather
