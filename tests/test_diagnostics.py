"""Diagnostics against ground truth: a linear-Gaussian VAE whose log p(x) and posterior are known in closed form.

    z ~ N(0, I_d),   x = W z + b + sigma * noise          =>   p(x) = N(b, W W^T + sigma^2 I)
    p(z | x) = N(Sigma W^T (x - b) / sigma^2, Sigma),     Sigma = Lambda^-1,  Lambda = I + W^T W / sigma^2

The model and the guides are plain Pyro callables following the package's conventions (sites "z" and "x", plate
"data", .to_event(1)). Everything runs in float64.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppl_vae import cli, plots
from ppl_vae.arviz_export import to_inference_data
from ppl_vae.config import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig
from ppl_vae.diagnostics import diagnose, effective_sample_size, import_arviz, pareto_khat
from ppl_vae.errors import InputError
from ppl_vae.evaluate import Estimate, iwae_log_likelihood
from ppl_vae.inference_gap import inference_gap
from ppl_vae.run import train_run

DOUBLE = torch.float64


class LinearGaussian:
    """The linear-Gaussian VAE with its exact marginal and posterior."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, sigma: float):
        self.weight, self.bias, self.sigma = weight, bias, sigma
        self.x_dim, self.z_dim = weight.shape
        self.precision = torch.eye(self.z_dim, dtype=DOUBLE) + weight.T @ weight / sigma**2  # Lambda
        self.covariance = torch.linalg.inv(self.precision)  # Sigma

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            prior = dist.Normal(torch.zeros(self.z_dim, dtype=DOUBLE), torch.ones(self.z_dim, dtype=DOUBLE))
            z = pyro.sample("z", prior.to_event(1))
            pyro.sample("x", dist.Normal(z @ self.weight.T + self.bias, self.sigma).to_event(1), obs=x)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        covariance = self.weight @ self.weight.T + self.sigma**2 * torch.eye(self.x_dim, dtype=DOUBLE)
        return dist.MultivariateNormal(self.bias, covariance_matrix=covariance).log_prob(x)

    def posterior_mean(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.bias) @ self.weight @ self.covariance / self.sigma**2

    def sample(self, n: int, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.z_dim, generator=generator, dtype=DOUBLE)
        noise = torch.randn(n, self.x_dim, generator=generator, dtype=DOUBLE)
        return z @ self.weight.T + self.bias + self.sigma * noise

    def guide(self, shift: float = 0.0, scale: torch.Tensor | None = None):
        """A diagonal Normal guide around the posterior mean (+ ``shift``), with standard deviations ``scale``
        ``(z_dim,)`` (default: the exact posterior's marginal standard deviations)."""
        scale = self.covariance.diagonal().sqrt() if scale is None else scale

        def guide(x: torch.Tensor) -> None:
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(self.posterior_mean(x) + shift, scale).to_event(1))

        return guide

    def kl_to_posterior(self, x: torch.Tensor, shift: float, scale: torch.Tensor) -> torch.Tensor:
        """KL(N(mean + shift, diag(scale^2)) || p(z | x)) per example, which is log p(x) - ELBO of that guide."""
        q_cov = torch.diag(scale**2)
        trace = torch.trace(self.precision @ q_cov)
        delta = torch.full((self.z_dim,), shift, dtype=DOUBLE)
        mahalanobis = delta @ self.precision @ delta
        log_dets = torch.logdet(self.covariance) - torch.logdet(q_cov)
        return torch.full((x.shape[0],), 0.5 * (trace + mahalanobis - self.z_dim + log_dets).item(), dtype=DOUBLE)


def orthogonal_model(column_norms, x_dim: int = 6, sigma: float = 0.5, seed: int = 0) -> LinearGaussian:
    """W with orthogonal columns of the given norms: the exact posterior is a diagonal Normal."""
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(x_dim, len(column_norms), generator=generator, dtype=DOUBLE))
    bias = torch.randn(x_dim, generator=generator, dtype=DOUBLE)
    return LinearGaussian(basis * torch.tensor(column_norms, dtype=DOUBLE), bias, sigma)


def correlated_model(seed: int = 1) -> LinearGaussian:
    """W with correlated columns: the exact posterior is a Normal with a full covariance."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(5, 2, generator=generator, dtype=DOUBLE)
    weight[:, 1] += 0.8 * weight[:, 0]
    return LinearGaussian(weight, torch.randn(5, generator=generator, dtype=DOUBLE), 0.7)


@pytest.fixture(autouse=True)
def _fresh():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)


def test_iwae_converges_to_the_exact_log_likelihood_and_the_elbo_stays_below():
    truth = correlated_model()
    x = truth.sample(40, seed=2)
    # an over-dispersed diagonal guide (variance above every eigenvalue of Sigma): bounded importance weights
    scale = torch.full((2,), 1.3 * torch.linalg.eigvalsh(truth.covariance).max().sqrt().item(), dtype=DOUBLE)
    guide = truth.guide(shift=0.2, scale=scale)
    exact = truth.log_marginal(x)
    errors = {k: iwae_log_likelihood(truth.model, guide, x, k=k).per_example - exact for k in (1, 10, 5000)}
    means = {k: Estimate.from_values(error) for k, error in errors.items()}
    assert means[1].mean < means[10].mean < means[5000].mean  # IWAE_k grows with k ...
    assert abs(means[5000].mean) < 3 * means[5000].se + 1e-3  # ... to log p(x), within standard errors
    assert means[1].mean < -0.1  # at k = 1 it is the ELBO, clearly below

    report = diagnose(truth.model, guide, x, k=5000)
    elbo_error = report.elbo.per_example - (exact - truth.kl_to_posterior(x, 0.2, scale))
    assert abs(elbo_error.mean()) < 4 * elbo_error.std() / math.sqrt(len(x)) + 1e-3  # ELBO = log p(x) - KL(q || p)
    assert (report.elbo.per_example < exact).all()
    assert (report.gap.per_example >= 0).all()
    assert report.khat_share_above(0.5) == 0.0  # bounded weights: k-hat well below 0.5


def test_diagnose_replays_iwae_log_likelihood_with_the_same_seed():
    truth = correlated_model()
    x = truth.sample(12, seed=3)
    guide = truth.guide(shift=0.3)
    pyro.set_rng_seed(7)
    report = diagnose(truth.model, guide, x, k=300, max_elements=1000)  # several chunks
    pyro.set_rng_seed(7)
    iwae = iwae_log_likelihood(truth.model, guide, x, k=300, max_elements=1000)
    torch.testing.assert_close(report.log_likelihood.per_example, iwae.per_example, rtol=0, atol=1e-10)


def test_exact_posterior_gives_zero_gap_small_khat_and_full_ess():
    truth = orthogonal_model([2.0, 1.0, 0.5])
    x = truth.sample(30, seed=4)
    report = diagnose(truth.model, truth.guide(), x, k=200)
    torch.testing.assert_close(report.log_likelihood.per_example, truth.log_marginal(x), rtol=0, atol=1e-9)
    torch.testing.assert_close(report.gap.per_example, torch.zeros(30, dtype=DOUBLE), rtol=0, atol=1e-9)
    assert (report.khat < 0.5).all() and report.khat_share_above(0.5) == 0.0
    torch.testing.assert_close(report.ess, torch.full((30,), 200.0, dtype=DOUBLE))
    assert report.to_json()["khat"] == [None] * 30  # -inf (constant weights) is null in JSON


def test_narrow_guide_has_khat_above_0_7():
    truth = orthogonal_model([2.0, 1.0])
    x = truth.sample(40, seed=5)
    narrow = truth.guide(scale=0.25 * truth.covariance.diagonal().sqrt())
    # under q the weights grow like exp(c |z|^2): a Pareto tail of shape 1 - 0.25^2 = 0.94
    report = diagnose(truth.model, narrow, x, k=2000)
    # each k-hat from the ~130 largest of 2000 weights has a standard error of about 0.17: ~8 % fall below 0.7
    assert report.khat_share_above(0.7) >= 0.75
    assert abs(report.khat.median().item() - 0.94) < 0.1
    assert report.ess.mean() < 0.1 * 2000
    assert any("k-hat > 0.7" in warning for warning in report.warnings)


def test_khat_and_ess_of_known_weights():
    generator = torch.Generator().manual_seed(0)
    # log weights -0.8 log U, U uniform: Pareto weights U^(-0.8) with tail shape 0.8 exactly
    uniform = torch.rand(20, 4000, generator=generator, dtype=DOUBLE)
    khat = pareto_khat(-0.8 * uniform.log())
    assert abs(khat.mean().item() - 0.8) < 3 * khat.std().item() / math.sqrt(20) + 0.02
    equal = torch.zeros(2, 100, dtype=DOUBLE)
    one_heavy = torch.cat([torch.full((1, 1), 50.0, dtype=DOUBLE), torch.zeros(1, 99, dtype=DOUBLE)], dim=1)
    torch.testing.assert_close(effective_sample_size(equal), torch.full((2,), 100.0, dtype=DOUBLE))
    assert effective_sample_size(one_heavy).item() == pytest.approx(1.0, abs=1e-12)
    two_levels = torch.tensor([[0.0] * 50 + [math.log(3.0)] * 50], dtype=DOUBLE)  # (50 + 150)^2 / (50 + 450) = 80
    assert effective_sample_size(two_levels).item() == pytest.approx(80.0, rel=1e-12)
    with pytest.raises(InputError, match="at least 100"):
        pareto_khat(torch.zeros(3, 50))


def test_active_units_count_the_informative_dimensions():
    truth = orthogonal_model([2.0, 0.0, 1.0, 0.0])  # dimensions 1 and 3 leave x untouched
    x = truth.sample(200, seed=6)
    report = diagnose(truth.model, truth.guide(), x, k=100)
    assert report.active_units == 2
    assert report.active.tolist() == [True, False, True, False]
    loc = truth.posterior_mean(x)
    scale = truth.covariance.diagonal().sqrt()
    expected = (0.5 * (loc.pow(2) + scale.pow(2) - 1 - 2 * scale.log())).mean(0)  # closed form, per dimension
    torch.testing.assert_close(report.kl_per_dim, expected, rtol=1e-10, atol=1e-12)
    assert report.kl_per_dim[[1, 3]].abs().max() < 1e-12 and not report.collapsed
    torch.testing.assert_close(report.activity, loc.var(0), rtol=1e-10, atol=1e-12)


def test_collapsed_posterior_is_flagged():
    truth = orthogonal_model([0.0, 0.0])  # x carries nothing about z: the exact posterior is the prior
    x = truth.sample(50, seed=7)
    report = diagnose(truth.model, truth.guide(), x, k=100)
    assert report.active_units == 0 and report.collapsed and report.to_json()["collapsed"] is True
    assert report.warnings and "posterior collapse" in report.warnings[0]


def test_inference_gap_splits_into_the_closed_form_parts():
    truth = correlated_model()
    x = truth.sample(6, seed=8)
    # an amortized guide that is shifted and over-dispersed (its variance covers every direction of Sigma)
    shift, scale = 0.15, torch.full((2,), 1.3 * torch.linalg.eigvalsh(truth.covariance).max().sqrt().item())
    scale = scale.to(DOUBLE)
    gap = inference_gap(truth.model, truth.guide(shift, scale), x, steps=300, k=4000, elbo_particles=4000)
    # the best diagonal Normal has the posterior mean and precisions diag(Lambda): KL = 0.5 (sum log L_jj - log|L|)
    approximation = 0.5 * (truth.precision.diagonal().log().sum() - torch.logdet(truth.precision)).item()
    inference = truth.kl_to_posterior(x, shift, scale)[0].item()
    assert approximation > 0.1 and inference - approximation > 0.5
    # the true gaps are the same for every example: the spread over examples is the estimation noise
    assert abs(gap.approximation_gap.mean - approximation) < 3 * gap.approximation_gap.se + 0.01
    assert abs(gap.amortization_gap.mean - (inference - approximation)) < 3 * gap.amortization_gap.se + 0.01
    error = Estimate.from_values(gap.log_likelihood.per_example - truth.log_marginal(x))
    assert abs(error.mean) < 3 * error.se + 0.01 and error.per_example.abs().max() < 0.1
    assert set(gap.to_json()) >= {"amortization_gap", "approximation_gap", "gap_examples"}
    assert gap.guide_parents == {} and gap.warnings == []  # a mean-field guide: the split is two gaps >= 0


@pytest.mark.filterwarnings(
    "ignore:Passing a dict or None as alias_mapping:DeprecationWarning"
)  # ArviZ 0.23 + mpl 3.11
def test_inference_data_has_the_dimensions_it_claims(tmp_path):
    az = import_arviz()
    truth = orthogonal_model([2.0, 1.0, 0.5], x_dim=5)
    x = truth.sample(7, seed=9)
    scale = torch.full((3,), 0.8, dtype=DOUBLE)
    pair = SimpleNamespace(model=truth.model, guide=truth.guide(scale=scale))
    idata = to_inference_data(pair, x, num_samples=120, max_elements=500)  # several sample chunks
    z = idata.posterior["z"]
    assert z.dims == ("chain", "draw", "example", "latent") and z.shape == (1, 120, 7, 3)
    assert idata.log_likelihood["x"].dims == ("chain", "draw", "example")
    weights = idata.importance_weights
    assert weights["log_weight"].shape == (1, 120, 7)
    assert weights["pareto_k"].dims == ("example",) and weights["ess"].shape == (7,)
    assert idata.observed_data["x"].shape == (7, 5)

    # the stored numbers are the model's and the guide's densities at the stored draws
    draws = torch.from_numpy(z.values[0])
    log_likelihood = dist.Normal(draws @ truth.weight.T + truth.bias, truth.sigma).log_prob(x).sum(-1)
    log_prior = dist.Normal(0.0, 1.0).log_prob(draws).sum(-1)
    log_q = dist.Normal(truth.posterior_mean(x), scale).log_prob(draws).sum(-1)
    torch.testing.assert_close(torch.from_numpy(idata.log_likelihood["x"].values[0]), log_likelihood)
    torch.testing.assert_close(torch.from_numpy(weights["log_weight"].values[0]), log_likelihood + log_prior - log_q)

    summary = az.summary(idata, var_names=["z"], kind="stats")
    assert len(summary) == 7 * 3
    mean_error = torch.tensor(summary["mean"].values).reshape(7, 3) - truth.posterior_mean(x)
    assert mean_error.abs().max() < 5 * 0.8 / math.sqrt(120)  # the draws' means are the guide's means
    axes = az.plot_posterior(idata, var_names=["z"], coords={"example": [0]})
    assert axes.size == 3
    assert plots.plot_khat(weights["pareto_k"].values, tmp_path / "khat.png", k=120).is_file()

    path = tmp_path / "posterior.nc"
    idata.to_netcdf(str(path))
    loaded = az.from_netcdf(str(path))
    assert set(loaded.groups()) == {"posterior", "log_likelihood", "importance_weights", "observed_data"}
    assert (loaded.posterior["z"].values == z.values).all()


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A one-epoch digits run with a 2-D code (for the manifold)."""
    run_dir = tmp_path_factory.mktemp("run")
    pyro.clear_param_store()
    config = RunConfig(
        model=ModelConfig(x_dim=64, image_shape=(1, 8, 8), z_dim=2),
        data=DataConfig(name="digits"),
        train=TrainConfig(epochs=1, eval_particles=2),
        evaluation=EvalConfig(k=100, num_particles=10),
    )
    train_run(config, run_dir, progress=False)
    return run_dir


def test_evaluate_command_writes_the_report(digits_run, capsys):
    arguments = ["evaluate", str(digits_run), "--k", "100", "--eval-particles", "10", "--gap-examples", "2"]
    assert cli.main([*arguments, "--gap-steps", "20", "--draws", "100"]) == 0
    out = capsys.readouterr().out
    assert "nats per example" in out and "amortization gap" in out and "active units" in out
    for name in ("report.json", "report.md", "posterior.nc", "khat.png", "kl_per_dim.png", "gap_histogram.png"):
        assert (digits_run / name).is_file(), name
    assert (digits_run / "manifold.png").is_file()
    report = json.loads((digits_run / "report.json").read_text())
    assert len(report["khat"]) == 300 and len(report["kl_per_dim"]) == 2 and report["k"] == 100
    site = report["latent_sites"]["z"]  # the single site's keys are the top-level ones
    assert site["kl_per_dim"] == report["kl_per_dim"] and site["activity"] == report["activity"]
    assert site["kl_method"] == "closed form" and site["kl_per_dim_se"] == [0.0, 0.0]
    assert site["active_units"] == report["active_units"] and site["kl_total"] == pytest.approx(sum(site["kl_per_dim"]))
    assert report["log_likelihood"] >= report["elbo"] and report["gap"] >= 0
    assert {"amortization_gap", "approximation_gap", "khat_share_above_0_7", "ess_mean", "collapsed"} <= set(report)
    assert "| log p(x) (IWAE, k=100) |" in (digits_run / "report.md").read_text()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--gap-examples", "-1"], "--gap-examples must be an integer >= 0"),
        (["--gap-examples", "301"], "exceeds the 300 test examples"),
        (["--draws", "10"], "--draws must be an integer >= 100"),
        (["--k", "20"], "at least 100 importance samples"),
    ],
)
def test_evaluate_command_rejects_bad_flags(digits_run, capsys, flags, message):
    assert cli.main(["evaluate", str(digits_run), "--eval-particles", "2", "--gap-examples", "0", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ppl-vae: error: ") and message in err and err.count("\n") == 1
