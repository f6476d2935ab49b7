"""Evaluation per latent site, against ground truth: a two-latent linear-Gaussian model whose log p(x), posterior and
per-site KL terms are exact in closed form.

    z2 ~ N(0, I_2),   z1 | z2 ~ N(A z2, s1^2 I_3),   x | z1 ~ N(B z1 + c, s^2 I_5)          (plate "batch")
    guide: q(z1 | x) = N(m1(x), diag(d1)),   q(z2 | z1, x) = N(F z1 + h(x), diag(d2))     (a joint Gaussian)

The prior of z2 has no latent parent (its KL term has a closed form, averaged over the guide's z1), the prior of z1
has one (its KL term is estimated by Monte Carlo). Everything runs in float64 with fixed seeds.
"""

from __future__ import annotations

import contextlib
import json
import math
from types import SimpleNamespace

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy import integrate

from ppl_vae import plots
from ppl_vae.arviz_export import to_inference_data
from ppl_vae.diagnostics import diagnose
from ppl_vae.errors import InputError
from ppl_vae.evaluate import Estimate, iwae_log_likelihood
from ppl_vae.inference_gap import inference_gap
from ppl_vae.report import format_markdown, format_table

DOUBLE = torch.float64


def _gaussian_kl(mean_q, cov_q, mean_p, precision_p) -> torch.Tensor:
    """KL(N(mean_q, cov_q) || N(mean_p, precision_p^-1)) per row of ``mean_q`` ``(N, n)``."""
    delta = mean_q - mean_p
    n = cov_q.shape[-1]
    quadratic = torch.einsum("ni,ij,nj->n", delta, precision_p, delta)
    return 0.5 * (torch.trace(precision_p @ cov_q) + quadratic - n - torch.logdet(precision_p) - torch.logdet(cov_q))


class TwoLayerGaussian:
    """The model above with its exact marginal, posterior and a Gaussian guide's exact per-site KL terms."""

    def __init__(self, seed: int = 0, s1: float = 0.6, s: float = 0.5):
        generator = torch.Generator().manual_seed(seed)
        self.A = torch.randn(3, 2, generator=generator, dtype=DOUBLE)
        self.B = torch.randn(5, 3, generator=generator, dtype=DOUBLE)
        self.c = torch.randn(5, generator=generator, dtype=DOUBLE)
        self.s1, self.s = s1, s
        # the prior of z = (z1, z2): z1 = A z2 + s1 e  =>  cov [[A A^T + s1^2 I, A], [A^T, I]]
        prior_cov = torch.cat(
            [
                torch.cat([self.A @ self.A.T + s1**2 * torch.eye(3, dtype=DOUBLE), self.A], dim=1),
                torch.cat([self.A.T, torch.eye(2, dtype=DOUBLE)], dim=1),
            ]
        )
        self.precision = torch.linalg.inv(prior_cov)  # of the posterior, below
        self.precision[:3, :3] += self.B.T @ self.B / s**2
        self.covariance = torch.linalg.inv(self.precision)
        self.marginal_cov = self.B @ prior_cov[:3, :3] @ self.B.T + s**2 * torch.eye(5, dtype=DOUBLE)

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("batch", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(torch.zeros(2, dtype=DOUBLE), 1.0).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(z2 @ self.A.T, self.s1).to_event(1))
            pyro.sample("obs", dist.Normal(z1 @ self.B.T + self.c, self.s).to_event(1), obs=x)

    def sample(self, n: int, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        z2 = torch.randn(n, 2, generator=generator, dtype=DOUBLE)
        z1 = z2 @ self.A.T + self.s1 * torch.randn(n, 3, generator=generator, dtype=DOUBLE)
        return z1 @ self.B.T + self.c + self.s * torch.randn(n, 5, generator=generator, dtype=DOUBLE)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        return dist.MultivariateNormal(self.c, covariance_matrix=self.marginal_cov).log_prob(x)

    def posterior_mean(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 5)``: the means of (z1, z2) given x."""
        return torch.cat([(x - self.c) @ self.B / self.s**2, torch.zeros(x.shape[0], 2, dtype=DOUBLE)], -1) @ (
            self.covariance
        )

    def guide_parts(self, spread: float = 1.3, shift: float = 0.1):
        """A guide around the posterior: q(z1 | x) over-dispersed by ``spread``, q(z2 | z1, x) the posterior's
        regression of z2 on z1 with over-dispersed diagonal variances. Returns ``(F, d1, d2, shift)``."""
        cov = self.covariance
        F = cov[3:, :3] @ torch.linalg.inv(cov[:3, :3])
        conditional = cov[3:, 3:] - F @ cov[:3, 3:]
        return F, spread**2 * cov[:3, :3].diagonal(), spread**2 * conditional.diagonal(), shift

    def guide(self, spread: float = 1.3, shift: float = 0.1):
        F, d1, d2, shift = self.guide_parts(spread, shift)

        def guide(x: torch.Tensor) -> None:
            mean = self.posterior_mean(x)
            with pyro.plate("batch", x.shape[0]):
                z1 = pyro.sample("z1", dist.Normal(mean[:, :3] + shift, d1.sqrt()).to_event(1))
                h = mean[:, 3:] - mean[:, :3] @ F.T
                pyro.sample("z2", dist.Normal(z1 @ F.T + h, d2.sqrt()).to_event(1))

        return guide

    def guide_moments(self, x: torch.Tensor, spread: float = 1.3, shift: float = 0.1):
        """The guide's joint mean ``(N, 5)`` and covariance ``(5, 5)`` of (z1, z2)."""
        F, d1, d2, shift = self.guide_parts(spread, shift)
        mean = self.posterior_mean(x)
        m1 = mean[:, :3] + shift
        m2 = m1 @ F.T + mean[:, 3:] - mean[:, :3] @ F.T
        D1 = torch.diag(d1)
        cov = torch.cat([torch.cat([D1, D1 @ F.T], 1), torch.cat([F @ D1, F @ D1 @ F.T + torch.diag(d2)], 1)])
        return torch.cat([m1, m2], -1), cov

    def site_kl_terms(self, x: torch.Tensor, spread: float = 1.3, shift: float = 0.1) -> dict[str, torch.Tensor]:
        """The exact KL term per dimension of each site, averaged over the examples (nats per example):
        ``E_q[log q(z1_j | x) - log p(z1_j | z2)]`` and ``E_q[log q(z2_j | z1, x) - log p(z2_j)]``."""
        _, d1, d2, _ = self.guide_parts(spread, shift)
        mean, cov = self.guide_moments(x, spread, shift)
        M = torch.cat([torch.eye(3, dtype=DOUBLE), -self.A], 1)  # z1 - A z2 = M (z1, z2)
        residual = (mean @ M.T).pow(2) + (M @ cov @ M.T).diagonal()
        z1 = -0.5 * torch.log(2 * math.pi * math.e * d1) + 0.5 * math.log(2 * math.pi * self.s1**2)
        z1 = z1 + residual / (2 * self.s1**2)
        z2 = 0.5 * (mean[:, 3:].pow(2) + cov[3:, 3:].diagonal() - 1) - 0.5 * d2.log()
        return {"z1": z1.mean(0), "z2": z2.mean(0)}

    def kl_to_posterior(self, x: torch.Tensor, spread: float = 1.3, shift: float = 0.1) -> torch.Tensor:
        mean, cov = self.guide_moments(x, spread, shift)
        return _gaussian_kl(mean, cov, self.posterior_mean(x), self.precision)


def test_diagnose_reports_every_latent_site_against_the_closed_forms():
    truth = TwoLayerGaussian()
    x = truth.sample(40, seed=1)
    report = diagnose(truth.model, truth.guide(), x, k=2000)
    assert list(report.latent_sites) == ["z1", "z2"]  # the guide's order
    exact = truth.site_kl_terms(x)
    z1, z2 = report.latent_sites["z1"], report.latent_sites["z2"]
    assert z1.kl_method == "monte carlo" and z2.kl_method == "closed form"
    for site, terms in ((z1, exact["z1"]), (z2, exact["z2"])):
        assert site.kl_per_dim.shape == terms.shape
        assert (site.kl_per_dim_se > 0).all()  # z2: the closed form averaged over the guide's draws of z1
        assert ((site.kl_per_dim - terms).abs() < 4 * site.kl_per_dim_se).all(), (site.kl_per_dim, terms)
        assert abs(site.kl_total - terms.sum().item()) < 4 * site.kl_total_se
    # the sites' terms add up to KL(q(z1, z2 | x) || p(z1, z2)) = E_q[log p(x | z)] - ELBO
    assert report.kl_per_dim.shape == (5,) and report.activity.shape == (5,)
    # activity: Var_x E_q[z1 | x] from the guide's analytic mean (exact); z2's from its draws of z1
    mean, _ = truth.guide_moments(x)
    torch.testing.assert_close(z1.activity, mean[:, :3].var(0), rtol=1e-10, atol=1e-12)
    assert (z2.activity - mean[:, 3:].var(0)).abs().max() < 0.05 * mean[:, 3:].var(0).max()
    assert z1.active_units == 3 and report.active_units == z1.active_units + z2.active_units

    log_marginal = truth.log_marginal(x)
    error = Estimate.from_values(report.log_likelihood.per_example - log_marginal)
    assert abs(error.mean) < 3 * error.se + 1e-3
    elbo_error = Estimate.from_values(report.elbo.per_example - (log_marginal - truth.kl_to_posterior(x)))
    assert abs(elbo_error.mean) < 4 * elbo_error.se + 1e-3
    assert report.khat_share_above(0.7) == 0.0

    sites = report.to_json()["latent_sites"]
    assert set(sites) == {"z1", "z2"} and sites["z1"]["kl_method"] == "monte carlo"
    assert len(sites["z2"]["kl_per_dim"]) == 2 and sites["z2"]["kl_total"] == pytest.approx(z2.kl_total)
    json.dumps(sites)  # plain numbers


def test_iwae_converges_to_the_exact_log_likelihood_of_two_latent_sites():
    truth = TwoLayerGaussian()
    x = truth.sample(30, seed=2)
    exact = truth.log_marginal(x)
    errors = {
        k: Estimate.from_values(iwae_log_likelihood(truth.model, truth.guide(), x, k=k).per_example - exact)
        for k in (1, 3000)
    }
    assert errors[1].mean < -0.1  # the ELBO, clearly below
    assert abs(errors[3000].mean) < 3 * errors[3000].se + 1e-3


def test_monte_carlo_kl_agrees_with_the_closed_form_on_a_normal_prior():
    """A mask of ones changes no number but sends the site to the Monte Carlo path: the same KL both ways."""
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(4, 3, generator=generator, dtype=DOUBLE)
    x = torch.randn(30, 4, generator=generator, dtype=DOUBLE)
    loc = x @ weight * 0.3
    scale = torch.tensor([0.5, 0.8, 1.2], dtype=DOUBLE)

    def model(x, mask):
        with pyro.plate("data", x.shape[0]):
            with pyro.poutine.mask(mask=mask) if mask is not None else contextlib.nullcontext():
                z = pyro.sample("z", dist.Normal(torch.zeros(3, dtype=DOUBLE), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ weight.T, 1.0).to_event(1), obs=x)

    def guide(x, mask):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    closed = diagnose(model, guide, x, k=1000, args=(None,))
    monte_carlo = diagnose(model, guide, x, k=1000, args=(torch.ones(30, dtype=torch.bool),))
    assert closed.latent_sites["z"].kl_method == "closed form"
    assert monte_carlo.latent_sites["z"].kl_method == "monte carlo"
    expected = (0.5 * (loc.pow(2) + scale.pow(2) - 1) - scale.log()).mean(0)
    torch.testing.assert_close(closed.kl_per_dim, expected, rtol=1e-10, atol=1e-12)
    assert (closed.latent_sites["z"].kl_per_dim_se == 0).all()
    error = (monte_carlo.kl_per_dim - expected).abs()
    assert (error < 3 * monte_carlo.latent_sites["z"].kl_per_dim_se).all(), (error, monte_carlo.kl_per_dim)
    torch.testing.assert_close(monte_carlo.activity, closed.activity)  # the guide's analytic mean both times


def test_student_t_prior_gets_a_monte_carlo_kl_per_dimension():
    """No closed form KL(Normal || StudentT): the Monte Carlo term per dimension against quadrature."""
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(12, 2, generator=generator, dtype=DOUBLE)
    loc, scale, df = 0.7 * x, torch.tensor([0.4, 1.5], dtype=DOUBLE), 3.0

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.StudentT(df, torch.zeros(2, dtype=DOUBLE), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    report = diagnose(model, guide, x, k=4000)
    site = report.latent_sites["z"]
    assert site.kl_method == "monte carlo" and report.kl_per_dim.shape == (2,)

    def kl(m: float, s: float) -> float:
        q = dist.Normal(torch.tensor(m, dtype=DOUBLE), s)
        p = dist.StudentT(df, torch.tensor(0.0, dtype=DOUBLE), 1.0)

        def integrand(z: float) -> float:
            z = torch.tensor(z, dtype=DOUBLE)
            return float(q.log_prob(z).exp() * (q.log_prob(z) - p.log_prob(z)))

        return integrate.quad(integrand, m - 12 * s, m + 12 * s)[0]

    expected = torch.tensor(
        [[kl(loc[i, j].item(), scale[j].item()) for j in range(2)] for i in range(12)], dtype=DOUBLE
    ).mean(0)
    assert ((report.kl_per_dim - expected).abs() < 3 * site.kl_per_dim_se).all(), (report.kl_per_dim, expected)
    assert np.isfinite(report.log_likelihood.mean) and report.khat.shape == (12,)


def test_inference_gap_covers_every_latent_site():
    truth = TwoLayerGaussian(s1=1.0, s=2.0)
    x = truth.sample(6, seed=5)
    gap = inference_gap(truth.model, truth.guide(), x, steps=150, lr=0.1, k=2000, elbo_particles=20000)
    # the best diagonal Normal over (z1, z2) has the posterior mean and precisions diag(Lambda)
    approximation = 0.5 * (truth.precision.diagonal().log().sum() - torch.logdet(truth.precision)).item()
    inference = truth.kl_to_posterior(x)
    assert approximation > 0.1 and (inference - approximation).min() > 0.1
    assert gap.amortization_gap.mean > -2 * gap.amortization_gap.se and gap.approximation_gap.mean > -2 * (
        gap.approximation_gap.se
    )
    assert abs(gap.approximation_gap.mean - approximation) < 3 * gap.approximation_gap.se + 0.01
    amortization = (inference - approximation).mean().item()
    assert abs(gap.amortization_gap.mean - amortization) < 3 * gap.amortization_gap.se + 0.01
    error = Estimate.from_values(gap.log_likelihood.per_example - truth.log_marginal(x))
    assert abs(error.mean) < 3 * error.se + 0.01
    # q(z2 | z1, x) is not mean-field: the report says the per-example family does not contain it
    assert gap.guide_parents == {"z2": ("z1",)} and gap.to_json()["gap_guide_parents"] == {"z2": ["z1"]}
    assert len(gap.warnings) == 1 and "q(z2 | z1)" in gap.warnings[0]


def test_inference_gap_refuses_a_discrete_latent_site():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(torch.full((x.shape[0],), 0.5, dtype=DOUBLE)))
            pyro.sample("x", dist.Normal(c, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Bernoulli(torch.sigmoid(x)))

    with pytest.raises(InputError, match="latent site 'c' has discrete support"):
        inference_gap(model, guide, torch.zeros(3, dtype=DOUBLE), steps=2, k=10, elbo_particles=10)


def test_inference_data_has_one_variable_per_site():
    truth = TwoLayerGaussian()
    x = truth.sample(7, seed=6)
    pair = SimpleNamespace(model=truth.model, guide=truth.guide())
    idata = to_inference_data(pair, x, num_samples=150, max_elements=400)  # several sample chunks
    assert set(idata.posterior.data_vars) == {"z1", "z2"}
    assert idata.posterior["z1"].dims == ("chain", "draw", "example", "z1_dim_0")
    assert idata.posterior["z2"].shape == (1, 150, 7, 2)
    assert set(idata.log_likelihood.data_vars) == {"obs"}
    z1 = torch.from_numpy(idata.posterior["z1"].values[0])
    expected = dist.Normal(z1 @ truth.B.T + truth.c, truth.s).log_prob(x).sum(-1)
    torch.testing.assert_close(torch.from_numpy(idata.log_likelihood["obs"].values[0]), expected)
    assert idata.observed_data["obs"].shape == (7, 5)


def test_report_shows_every_latent_site(tmp_path):
    truth = TwoLayerGaussian()
    x = truth.sample(20, seed=7)
    report = diagnose(truth.model, truth.guide(), x, k=200).to_json()
    report.update(test_examples=20, draws=100, warnings=[])
    table = format_table(report)
    assert "latent site 'z1': KL term" in table and "(monte carlo)" in table and "(closed form)" in table
    markdown = format_markdown(report, [], "two-layer")
    assert "### Site `z1`" in markdown and "### Site `z2`" in markdown and "| std. error |" in markdown
    assert "can be negative" in markdown
    path = plots.plot_kl_per_dim(report["latent_sites"], tmp_path / "kl_per_dim.png")
    assert path.stat().st_size > 0


def test_nested_plate_and_masked_pixels_reach_every_evaluation():
    """A per-pixel latent u in a plate nested in the data plate, and pixels masked out of the likelihood."""
    generator = torch.Generator().manual_seed(8)
    x = torch.randn(5, 4, generator=generator, dtype=DOUBLE)
    seen = torch.rand(5, 4, generator=generator) > 0.3  # the pixels that count

    def model(x, seen):
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(torch.zeros(1, 2, dtype=DOUBLE), 1.0).to_event(1))  # (B, 1, 2)
            with pyro.plate("pixels", 4, dim=-1):
                u = pyro.sample("u", dist.Normal(z.sum(-1), 1.0))  # (B, 4): depends on z
                with pyro.poutine.mask(mask=seen):
                    pyro.sample("x", dist.Normal(u, 0.5), obs=x)

    def guide(x, seen):
        with pyro.plate("data", x.shape[0], dim=-2):
            pyro.sample("z", dist.Normal(0.3 * x[:, None, :2], 0.8).to_event(1))
            with pyro.plate("pixels", 4, dim=-1):
                pyro.sample("u", dist.Normal(0.7 * x, 0.6))

    report = diagnose(model, guide, x, k=300, args=(seen,))
    u = report.latent_sites["u"]
    assert u.kl_method == "monte carlo" and u.kl_per_dim.shape == (4,) and u.activity.shape == (4,)
    assert report.latent_sites["z"].kl_method == "closed form" and report.latent_sites["z"].kl_per_dim.shape == (2,)

    idata = to_inference_data(SimpleNamespace(model=model, guide=guide), x, num_samples=100, args=(seen,))
    assert idata.posterior["u"].dims == ("chain", "draw", "example", "pixels")
    assert idata.posterior["z"].dims == ("chain", "draw", "example", "z_dim_0")
    draws = torch.from_numpy(idata.posterior["u"].values[0])  # (100, 5, 4)
    expected = (dist.Normal(draws, 0.5).log_prob(x) * seen).sum(-1)  # masked pixels contribute nothing
    torch.testing.assert_close(torch.from_numpy(idata.log_likelihood["x"].values[0]), expected)

    gap = inference_gap(model, guide, x, steps=100, lr=0.1, k=1000, elbo_particles=2000, args=(seen,))
    assert gap.amortization_gap.mean > -2 * gap.amortization_gap.se
    assert gap.approximation_gap.mean > -2 * gap.approximation_gap.se
