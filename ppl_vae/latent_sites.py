"""What each latent site of a program carries: its KL term per dimension and the activity of its units.

For a latent site ``s`` with guide distribution ``q_s`` (which may depend on ``x`` and on the guide's other latent
sites) and prior ``p_s`` in the model (which may depend on the model's other latent sites, its parents), the site's
share of ``KL(q(z | x) || p(z)) = E_q[log q(z | x) - log p(z)]`` is::

    KL_s  = E_q[ log q_s(z_s | x, ...) - log p_s(z_s | parents) ]        (nats per example, averaged over examples)

and the sites' terms add up to the KL of the whole code. Per dimension ``j`` (one element of the site's event, at one
position of the plates nested in the data plate; a *unit*) where both distributions factorize over the event, else
for the whole site (one unit per plate position)::

    KL_sj = E_q[ log q_sj(z_sj | ...) - log p_sj(z_sj | parents) ]

It is computed

- in **closed form** (``torch.distributions.kl_divergence``) where one is registered for the pair, the prior has no
  latent parent (checked by shifting the other sites' draws: :func:`ppl_vae.programs.latent_parents`) and no
  mask applies; when the guide's distribution depends on other latent draws (``q(z2 | z1)``) the closed form is
  averaged over the ``k`` importance draws, with its Monte Carlo standard error, otherwise it is exact (SE 0);
- otherwise by **Monte Carlo** over the ``k`` importance draws, masks honoured, with its standard error. For a site
  whose prior depends on other sites the term is an expectation of a log-ratio, **not** a KL divergence of two fixed
  distributions: it can be negative (only the sum over all sites is a KL, >= 0).

The standard error of a per-example average over ``N`` examples and ``k`` draws is
``sqrt(sum_i Var_s(term_is) / k) / N``: the Monte Carlo error for the given examples.

The activity of a unit of a continuous site is ``A_j = Var_i(E_q[z_j | x_i])`` (Burda et al. 2015), with
``E_q[z_j | x]`` the guide's analytic mean (averaged over the guide's other draws when it depends on them) or, for a
guide without one (a flow), the mean of the ``k`` draws. Sites with discrete support have no activity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.distributions.util import scale_and_mask
from torch.distributions import Independent, kl_divergence

from ppl_vae.programs import ProgramSites, site_units

ACTIVE_UNIT_THRESHOLD = 0.01
"""A latent dimension is active when ``Var_x(E_q[z_j | x])`` exceeds this (Burda et al. 2015)."""

COLLAPSE_KL = 0.01
"""Total KL(q(z | x) || p(z)) below this many nats per example counts as a collapsed posterior."""

CLOSED_FORM = "closed form"
MONTE_CARLO = "monte carlo"


@dataclass(frozen=True)
class SiteUsage:
    """One latent site's KL term and activity (see the module's docstring), nats per example.

    Attributes:
        kl_per_dim: ``(U,)`` the KL term per unit, averaged over examples (``U = 1`` where the distributions do not
            factorize over the event: the whole site).
        kl_per_dim_se: ``(U,)`` its Monte Carlo standard error (0 for an exact closed form).
        kl_total_se: the standard error of :attr:`kl_total`.
        kl_method: ``"closed form"`` or ``"monte carlo"``.
        factorized: whether ``kl_per_dim`` is per event element (else one number per plate position).
        activity: ``(U_z,)`` ``Var_x(E_q[z_j | x])`` per unit of the site's value; ``None`` for a discrete site, and
            for a test set of one example (no variance across examples: activity says nothing of collapse then).
    """

    kl_per_dim: torch.Tensor
    kl_per_dim_se: torch.Tensor
    kl_total_se: float
    kl_method: str
    factorized: bool
    activity: torch.Tensor | None

    @property
    def kl_total(self) -> float:
        """The site's KL term, nats per example: the sum of :attr:`kl_per_dim`."""
        return float(self.kl_per_dim.sum())

    @property
    def active(self) -> torch.Tensor | None:
        """``(U_z,)`` booleans ``activity > ACTIVE_UNIT_THRESHOLD``; ``None`` for a discrete site."""
        return None if self.activity is None else self.activity > ACTIVE_UNIT_THRESHOLD

    @property
    def active_units(self) -> int | None:
        return None if self.activity is None else int(self.active.sum())

    @property
    def collapsed(self) -> bool:
        """No active unit (a continuous site), or a KL term below ``COLLAPSE_KL`` nats per example."""
        return self.active_units == 0 or self.kl_total < COLLAPSE_KL

    def to_json(self) -> dict:
        """The site's entry of ``report.json``'s ``latent_sites``: plain numbers and lists."""
        return {
            "kl_per_dim": self.kl_per_dim.tolist(),
            "kl_per_dim_se": self.kl_per_dim_se.tolist(),
            "kl_total": self.kl_total,
            "kl_total_se": self.kl_total_se,
            "kl_method": self.kl_method,
            "kl_factorized": self.factorized,
            "activity": None if self.activity is None else self.activity.tolist(),
            "active_units": self.active_units,
            "units": None if self.activity is None else len(self.activity),
            "collapsed": self.collapsed,
        }


def elementwise(fn) -> tuple | None:
    """``(leaf, mask)``: a distribution with event shape ``()`` whose ``log_prob`` at a value of ``fn`` gives one
    number per element of the event (``Independent``, ``MaskedDistribution`` and ``ExpandedDistribution`` unwrapped),
    and the masks met on the way (``None``, or a boolean tensor broadcastable to ``fn``'s batch + event shape);
    ``None`` when ``fn`` does not factorize over its event (a ``MultivariateNormal``, a flow, a mixture)."""
    if isinstance(fn, MaskedDistribution):
        inner = elementwise(fn.base_dist)
        if inner is None or fn._mask is True:
            return inner
        mask = torch.as_tensor(fn._mask)
        mask = mask.reshape(tuple(mask.shape) + (1,) * fn.event_dim)
        return inner[0], mask if inner[1] is None else mask & inner[1]
    if isinstance(fn, Independent | ExpandedDistribution):
        return elementwise(fn.base_dist)
    return (fn, None) if fn.event_shape == () else None


def _site_mask(site: dict, event_dim: int):
    """The site's ``poutine.mask`` as a tensor broadcastable to its batch + event shape, or ``None``."""
    mask = site["mask"]
    if mask is None or mask is True:
        return None
    mask = torch.as_tensor(mask)
    return mask.reshape(tuple(mask.shape) + (1,) * event_dim)


def _masked(values: torch.Tensor, *masks) -> torch.Tensor:
    for mask in masks:
        if mask is not None:
            values = scale_and_mask(values, mask=mask)
    return values


@dataclass(frozen=True)
class SitePlan:
    """How one site's KL term and mean are computed (decided once, from the first traces: :func:`plan_sites`)."""

    name: str
    factorized: bool
    closed_form: bool
    guide_conditioned: bool
    continuous: bool
    analytic_mean: bool

    @property
    def kl_from_draws(self) -> bool:
        """The KL term varies with the draws (Monte Carlo, or a closed form under a guide that depends on them)."""
        return not self.closed_form or self.guide_conditioned

    @property
    def mean_from_draws(self) -> bool:
        return self.continuous and (not self.analytic_mean or self.guide_conditioned)


def plan_sites(
    guide_trace, model_trace, sites: ProgramSites, model_parents: dict, guide_parents: dict
) -> list[SitePlan]:
    """One :class:`SitePlan` per latent site, from traces of :func:`ppl_vae.programs.importance_traces` and the
    latent sites that each site's distribution depends on in the model and in the guide
    (:func:`ppl_vae.programs.latent_parents`)."""
    plans = []
    for name in sites.latent:
        q_site, p_site = guide_trace.nodes[name], model_trace.nodes[name]
        q_fn, p_fn = q_site["fn"], p_site["fn"]
        q_leaf, p_leaf = elementwise(q_fn), elementwise(p_fn)
        factorized = q_leaf is not None and p_leaf is not None
        masked = (
            _site_mask(q_site, 0) is not None
            or _site_mask(p_site, 0) is not None
            or any(leaf is not None and leaf[1] is not None for leaf in (q_leaf, p_leaf))
        )
        closed_form = not masked and not model_parents[name]
        if closed_form:
            try:
                kl_divergence(q_leaf[0], p_leaf[0]) if factorized else kl_divergence(q_fn, p_fn)
            except NotImplementedError:
                closed_form = False
        continuous = not q_fn.support.is_discrete
        plans.append(
            SitePlan(
                name=name,
                factorized=factorized,
                closed_form=closed_form,
                guide_conditioned=bool(guide_parents[name]),
                continuous=continuous,
                analytic_mean=continuous and _analytic_mean(q_fn) is not None,
            )
        )
    return plans


def _analytic_mean(fn) -> torch.Tensor | None:
    """``fn.mean`` where the distribution has a finite one; ``None`` otherwise (a flow, a Cauchy)."""
    try:
        mean = fn.mean
    except NotImplementedError:
        return None
    return mean if bool(torch.isfinite(mean).all()) else None


def kl_terms(plan: SitePlan, guide_trace, model_trace, sites: ProgramSites, shape: tuple[int, int]) -> torch.Tensor:
    """The KL term of one site per draw, example and unit: ``(S, B, U)``, nats (see the module's docstring)."""
    q_site, p_site = guide_trace.nodes[plan.name], model_trace.nodes[plan.name]
    q_fn, p_fn, value = q_site["fn"], p_site["fn"], q_site["value"]
    event_dim = q_fn.event_dim if plan.factorized else 0
    if plan.closed_form:
        if plan.factorized:
            terms = kl_divergence(elementwise(q_fn)[0], elementwise(p_fn)[0])
        else:
            terms = kl_divergence(q_fn, p_fn)
    elif plan.factorized:
        (q_leaf, q_mask), (p_leaf, p_mask) = elementwise(q_fn), elementwise(p_fn)
        log_q = _masked(q_leaf.log_prob(value), q_mask, _site_mask(q_site, event_dim))
        log_p = _masked(p_leaf.log_prob(value), p_mask, _site_mask(p_site, event_dim))
        terms = log_q - log_p
    else:
        log_q = _masked(q_fn.log_prob(value), _site_mask(q_site, 0))
        log_p = _masked(p_fn.log_prob(value), _site_mask(p_site, 0))
        terms = log_q - log_p
    # the value's batch shape, and its event shape where the terms are per element
    full = value.shape[: value.dim() - q_fn.event_dim] + value.shape[value.dim() - event_dim :]
    return site_units(terms.expand(full), event_dim, plan.name, sites, shape)


def mean_terms(plan: SitePlan, guide_trace, sites: ProgramSites, shape: tuple[int, int]) -> torch.Tensor:
    """``E_q[z | x, draws of the guide's other sites]`` per draw, example and unit ``(S, B, U_z)``: the analytic
    mean, or the draw itself where there is none."""
    site = guide_trace.nodes[plan.name]
    fn, value = site["fn"], site["value"]
    mean = fn.mean if plan.analytic_mean else value
    return site_units(mean.expand(value.shape), fn.event_dim, plan.name, sites, shape)


@dataclass
class DrawSums:
    """Sums over draws of per-example values, batch by batch of examples (every batch gets the same number of draws),
    accumulated in float64: ``add(values, batch)`` with ``values`` ``(S, B, U)`` for the examples of batch number
    ``batch``."""

    count: int = 0
    sums: list = field(default_factory=list)
    squares: list = field(default_factory=list)

    def add(self, values: torch.Tensor, batch: int) -> None:
        values = values.detach().double()
        total, square = values.sum(0), values.pow(2).sum(0)
        if batch == len(self.sums):
            self.sums.append(total)
            self.squares.append(square)
        else:
            self.sums[batch] = self.sums[batch] + total
            self.squares[batch] = self.squares[batch] + square
        if batch == 0:
            self.count += values.shape[0]

    def mean(self) -> torch.Tensor:
        """``(N, U)``: the mean over draws of every example."""
        return torch.cat(self.sums) / self.count

    def standard_error(self) -> torch.Tensor:
        """``(U,)``: the Monte Carlo standard error of ``mean().mean(0)``, ``sqrt(sum_i Var_s / k) / N``."""
        if self.count < 2:
            return torch.zeros(self.sums[0].shape[-1], dtype=torch.float64, device=self.sums[0].device)
        sums, squares = torch.cat(self.sums), torch.cat(self.squares)
        variance = ((squares - sums.pow(2) / self.count) / (self.count - 1)).clamp(min=0.0)
        return (variance.sum(0) / self.count).sqrt() / sums.shape[0]


def site_usage(plan: SitePlan, kl: DrawSums, kl_total: DrawSums, means: DrawSums) -> SiteUsage:
    """The :class:`SiteUsage` of a site from its sums over draws of the KL terms per unit, of their totals and of the
    means (unused for a discrete site)."""
    exact = not plan.kl_from_draws
    kl_per_dim = kl.mean().mean(0)
    activity = None
    if plan.continuous:
        per_example = means.mean()
        activity = per_example.var(0) if per_example.shape[0] > 1 else None  # one example: no variance to measure
    return SiteUsage(
        kl_per_dim=kl_per_dim.cpu(),
        kl_per_dim_se=torch.zeros_like(kl_per_dim).cpu() if exact else kl.standard_error().cpu(),
        kl_total_se=0.0 if exact else float(kl_total.standard_error()[0]),
        kl_method=CLOSED_FORM if plan.closed_form else MONTE_CARLO,
        factorized=plan.factorized,
        activity=None if activity is None else activity.double().cpu(),
    )
