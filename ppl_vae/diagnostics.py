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

The latent code, from the guide's distribution at ``"z"`` and the model's prior at ``"z"``::

    KL_j      = mean_i KL(q(z_j | x_i) || p(z_j))              (nats per example, per latent dimension j)
    A_j       = Var_i(E_q[z_j | x_i])                          (activity; dimension j is active if A_j > 0.01,
                                                                Burda et al. 2015)

The posterior has collapsed when no dimension is active or the total KL is below ``COLLAPSE_KL`` nats per example:
the code then says (almost) nothing about ``x``.

Every function takes any Pyro ``model(x)`` / ``guide(x)`` that follows the conventions (sites ``"z"`` and ``"x"``,
plate ``"data"``, ``.to_event(1)``); the KL per dimension needs a factorized guide and prior at ``"z"`` (an
``Independent`` over a distribution whose batch's last dimension is ``z_dim``, with a registered ``kl_divergence``).

Example::

    report = diagnose(vae.model, vae.guide, x_test, k=5000)
    print(report.log_likelihood.mean, report.gap.mean, report.khat_share_above(0.7), report.active_units)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.distributions import Independent, kl_divergence

from ppl_vae.errors import InputError
from ppl_vae.evaluate import MAX_ELEMENTS, Estimate, log_weights_per_example
from ppl_vae.programs import importance_traces

ACTIVE_UNIT_THRESHOLD = 0.01
"""A latent dimension is active when ``Var_x(E_q[z_j | x])`` exceeds this (Burda et al. 2015)."""

COLLAPSE_KL = 0.01
"""Total KL(q(z | x) || p(z)) below this many nats per example counts as a collapsed posterior."""

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


def latent_usage(model: Callable, guide: Callable, x: torch.Tensor, batch_size: int = 256):
    """KL per latent dimension and activity, from the guide's and the prior's distributions at site ``"z"``.

    Returns:
        ``kl_per_dim``: ``(z_dim,)`` mean over examples of ``KL(q(z_j | x) || p(z_j))``, nats per example;
        ``activity``: ``(z_dim,)`` variance over examples of ``E_q[z_j | x]`` (unbiased).
    """
    kl, means = [], []
    for start in range(0, x.shape[0], batch_size):
        guide_trace, model_trace, _ = importance_traces(model, guide, x[start : start + batch_size], 1)
        q_z = _factors(guide_trace.nodes["z"]["fn"], "guide")
        p_z = _factors(model_trace.nodes["z"]["fn"], "model")
        try:
            kl.append(kl_divergence(q_z, p_z)[0])
        except NotImplementedError:
            raise ValueError(
                f"no closed-form KL between the guide's {type(q_z).__name__} and the prior's {type(p_z).__name__} "
                "at site 'z': register one with torch.distributions.kl.register_kl"
            ) from None
        means.append(q_z.mean[0])
    kl_all, means_all = torch.cat(kl).double(), torch.cat(means).double()
    return kl_all.mean(0), means_all.var(0) if means_all.shape[0] > 1 else torch.zeros(means_all.shape[1])


def _factors(fn, where: str):
    """The per-dimension distribution under ``.to_event(1)``: batch ``(..., z_dim)``."""
    if not isinstance(fn, Independent) or fn.reinterpreted_batch_ndims != 1:
        raise ValueError(
            f"the {where}'s site 'z' is a {type(fn).__name__}: the KL per dimension needs a factorized distribution, "
            "e.g. Normal(loc, scale).to_event(1)"
        )
    return fn.base_dist


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
        kl_per_dim: ``(z_dim,)`` KL(q(z_j | x) || p(z_j)) averaged over examples, nats per example.
        activity: ``(z_dim,)`` ``Var_x(E_q[z_j | x])``.
    """

    log_likelihood: Estimate
    elbo: Estimate
    gap: Estimate
    k: int
    khat: torch.Tensor
    ess: torch.Tensor
    kl_per_dim: torch.Tensor
    activity: torch.Tensor

    @property
    def active(self) -> torch.Tensor:
        """``(z_dim,)`` booleans: ``activity > ACTIVE_UNIT_THRESHOLD``."""
        return self.activity > ACTIVE_UNIT_THRESHOLD

    @property
    def active_units(self) -> int:
        return int(self.active.sum())

    @property
    def collapsed(self) -> bool:
        """No active unit, or a total KL below ``COLLAPSE_KL`` nats per example."""
        return self.active_units == 0 or float(self.kl_per_dim.sum()) < COLLAPSE_KL

    def khat_share_above(self, threshold: float) -> float:
        """The share of examples whose k-hat exceeds ``threshold``, in [0, 1]."""
        return float((self.khat > threshold).double().mean())

    @property
    def warnings(self) -> list[str]:
        """One sentence per problem found: a collapsed posterior, unreliable or slow importance sampling."""
        found = []
        if self.collapsed:
            found.append(
                f"posterior collapse: {self.active_units} of {len(self.activity)} latent dimensions active, total KL "
                f"{float(self.kl_per_dim.sum()):.4f} nats per example; the code carries (almost) no information "
                "about x"
            )
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
        }


def diagnose(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    k: int = 1000,
    batch_size: int = 256,
    max_elements: int = MAX_ELEMENTS,
) -> Diagnostics:
    """Importance-sampling and latent-code diagnostics of ``guide`` as a proposal for ``model`` on ``x`` ``(N, D)``.

    Draws ``k`` samples per example once (memory ``N x k`` log weights plus one chunk of decoder output; for
    ``k = 5000`` and 300 examples 12 MB) and derives log p(x), the ELBO, their gap, the ESS and k-hat from them.
    """
    check_samples(k)
    raw = log_weights_per_example(model, guide, x, k, batch_size, max_elements)
    log_weights = raw.double()
    log_likelihood = torch.logsumexp(log_weights, dim=-1) - math.log(k)
    elbo = log_weights.mean(-1)
    kl_per_dim, activity = latent_usage(model, guide, x, batch_size)
    return Diagnostics(
        log_likelihood=Estimate.from_values(log_likelihood),
        elbo=Estimate.from_values(elbo),
        gap=Estimate.from_values(log_likelihood - elbo),
        k=k,
        khat=pareto_khat(raw),
        ess=effective_sample_size(log_weights),
        kl_per_dim=kl_per_dim.cpu(),
        activity=activity.cpu(),
    )
