"""The ELBO and IWAE estimators: exact values on a deterministic guide, limit identities, bounded memory."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppl_vae import evaluate
from ppl_vae.errors import InputError
from ppl_vae.eval_memory import MB, pass_bytes
from ppl_vae.evaluate import (
    Estimate,
    elbo,
    iwae_log_likelihood,
    log_importance_weights,
    log_weights_per_example,
    observed_test_set,
    sample_chunks,
)
from ppl_vae.reference import bernoulli_log_likelihood, normal_log_density
from ppl_vae.vae import VAE


@pytest.fixture
def test_set(digits):
    return observed_test_set(digits.x_test, binary=True)


def paired_difference(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of the per-example difference ``a - b``."""
    difference = a - b
    return difference.mean().item(), difference.std().item() / math.sqrt(difference.numel())


def test_log_weights_equal_the_joint_minus_guide_density_computed_by_hand(small_config, float64):
    """With a point-mass guide at z0, log w = log p(z0) + log p(x | z0) exactly (log q = 0)."""
    vae = VAE(small_config).double()
    x = torch.bernoulli(torch.full((5, 64), 0.3))
    z0 = torch.randn(5, 4)

    def point_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(z0).to_event(1))

    weights = log_importance_weights(vae.model, point_guide, x, num_samples=3)
    expected = normal_log_density(z0, torch.zeros(4), torch.ones(4)) + bernoulli_log_likelihood(vae.decoder(z0), x)
    assert weights.shape == (3, 5) and weights.dtype == torch.float64
    torch.testing.assert_close(weights, expected.expand(3, 5), rtol=1e-12, atol=1e-12)


def test_iwae_with_one_sample_is_the_elbo_in_expectation(trained_vae, test_set):
    vae = trained_vae
    repeats = 20
    single = iwae_log_likelihood(vae.model, vae.guide, test_set.repeat(repeats, 1), k=1).per_example
    single = single.reshape(repeats, -1).mean(0)  # average of 20 independent one-sample estimates per example
    many = elbo(vae.model, vae.guide, test_set, num_particles=2000).per_example
    mean, se = paired_difference(single, many)
    assert abs(mean) < 3 * se + 1e-3, (mean, se)


def test_iwae_is_above_the_elbo_and_grows_with_k(trained_vae, test_set):
    vae = trained_vae
    repeats = 5

    def iwae(k):  # the average of 5 independent estimates per example, to resolve small differences
        values = iwae_log_likelihood(vae.model, vae.guide, test_set.repeat(repeats, 1), k=k).per_example
        return values.reshape(repeats, -1).mean(0)

    bound = elbo(vae.model, vae.guide, test_set, num_particles=500).per_example
    iwae_3, iwae_300 = iwae(3), iwae(300)
    for larger, smaller in [(iwae_3, bound), (iwae_300, iwae_3)]:
        mean, se = paired_difference(larger, smaller)
        assert mean > 3 * se, (mean, se)


def test_estimates_are_chunked_to_bounded_memory(small_config, test_set, monkeypatch):
    vae = VAE(small_config)
    calls = []
    original = evaluate.log_importance_weights

    def spy(model, guide, x, num_samples, **options):
        calls.append((num_samples, x.shape[0]))
        return original(model, guide, x, num_samples, **options)

    monkeypatch.setattr(evaluate, "log_importance_weights", spy)
    budget = 64 * 100 * 50  # 50 samples of a 100-example batch of 64 pixels
    result = iwae_log_likelihood(vae.model, vae.guide, test_set, k=1234, batch_size=100, max_elements=budget)
    assert all(samples * examples * 64 <= budget for samples, examples in calls)
    assert sum(samples for samples, examples in calls if examples == 100) == 1234 * 3  # three full batches
    assert result.per_example.shape == (300,) and torch.isfinite(result.per_example).all()


def test_standard_error_is_the_spread_over_examples():
    estimate = Estimate.from_values(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert estimate.mean == pytest.approx(2.5)
    assert estimate.se == pytest.approx(torch.tensor([1.0, 2.0, 3.0, 4.0]).std().item() / 2)


class LinearGaussian:
    """z ~ N(0, I_2), x | z ~ N(W z + b, sigma^2 I_4): log p(x) = log N(x; b, W W^T + sigma^2 I) and the posterior
    N(mu(x), Sigma) with Sigma = (I + W^T W / sigma^2)^-1, mu(x) = Sigma W^T (x - b) / sigma^2, in closed form."""

    def __init__(self):
        generator = torch.Generator().manual_seed(0)
        self.weight = torch.randn(4, 2, generator=generator, dtype=torch.float64)
        self.bias = torch.randn(4, generator=generator, dtype=torch.float64)
        self.sigma = 0.5
        precision = torch.eye(2) + self.weight.T @ self.weight / self.sigma**2
        self.posterior_scale_tril = torch.linalg.cholesky(torch.linalg.inv(precision))

    def log_px(self, x):
        covariance = self.weight @ self.weight.T + self.sigma**2 * torch.eye(4)
        return dist.MultivariateNormal(self.bias, covariance).log_prob(x)

    def posterior_mean(self, x):
        scale_tril = self.posterior_scale_tril
        return (x - self.bias) @ self.weight @ (scale_tril @ scale_tril.T) / self.sigma**2

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[0], 2]).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.weight.T + self.bias, self.sigma).to_event(1), obs=x)

    def exact_guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(self.posterior_mean(x), scale_tril=self.posterior_scale_tril))

    def uniform_guide(self, x):
        """A proposal drawn from torch.rand, whose stream is sequential: k draws made in chunks are the same numbers
        as k draws made at once (unlike torch.randn, which fills blocks of 16)."""
        with pyro.plate("data", x.shape[0]):
            loc = self.posterior_mean(x)
            pyro.sample("z", dist.Uniform(loc - 1.5, loc + 1.5).to_event(1))


def test_estimates_equal_log_px_exactly_when_the_guide_is_the_exact_posterior(float64):
    """With q(z | x) = p(z | x), every log weight is log p(x): the ELBO and IWAE are log p(x) for any number of
    samples and any chunking. A biased average (a wrong divisor, an added constant, a dropped or mis-normalized chunk)
    shows up here."""
    problem = LinearGaussian()
    x = torch.randn(6, 4)
    exact = problem.log_px(x)
    budget = 3 * 3 * 4  # chunks of 3 samples for a batch of 3 examples of 4 dimensions
    assert list(sample_chunks(x[:3], 13, budget)) == [3, 3, 3, 3, 1]
    for max_elements in (budget, 2**20):
        estimates = [
            elbo(problem.model, problem.exact_guide, x, num_particles=7, batch_size=3, max_elements=max_elements),
            iwae_log_likelihood(problem.model, problem.exact_guide, x, k=13, batch_size=3, max_elements=max_elements),
        ]
        for estimate in estimates:
            torch.testing.assert_close(estimate.per_example, exact, rtol=0, atol=1e-10)
            assert estimate.mean == pytest.approx(exact.mean().item(), abs=1e-10)


def test_chunked_iwae_equals_one_chunk_on_the_same_draws(float64):
    """k = 13 samples in chunks of 4, 4, 4, 1 give the same IWAE and ELBO as one chunk of 13 (same seed, same draws),
    and the IWAE is log mean exp of the k weights that log_weights_per_example returns."""
    problem = LinearGaussian()
    x = torch.randn(5, 4)
    budget = 4 * 5 * 4
    assert list(sample_chunks(x, 13, budget)) == [4, 4, 4, 1]

    def seeded(estimator, **options):
        pyro.set_rng_seed(7)
        return estimator(problem.model, problem.uniform_guide, x, **options)

    chunked = seeded(iwae_log_likelihood, k=13, max_elements=budget).per_example
    weights = seeded(log_weights_per_example, k=13, max_elements=budget)
    assert weights.shape == (5, 13) and weights.std(1).min() > 0.1  # the weights differ: chunking matters
    torch.testing.assert_close(seeded(iwae_log_likelihood, k=13).per_example, chunked, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.logsumexp(weights, 1) - math.log(13), chunked, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        seeded(elbo, num_particles=13, max_elements=budget).per_example, weights.mean(1), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(seeded(elbo, num_particles=13).per_example, weights.mean(1), rtol=0, atol=1e-12)


def test_a_memory_budget_bounds_the_bytes_of_every_pass(small_config, test_set, monkeypatch):
    """The passes that a budget allows allocate no more than the budget (counted by the same dispatch mode on the
    passes themselves, not on the probes); a smaller budget takes more, smaller passes; one below a single sample of
    one example is refused in one line."""
    vae = VAE(small_config)
    x = test_set[:40]
    passes = {}
    original = evaluate.log_importance_weights

    def spy(model, guide, xb, num_samples, **options):
        passes.setdefault((xb.shape[0], num_samples), (xb, options["sites"]))
        return original(model, guide, xb, num_samples, **options)

    monkeypatch.setattr(evaluate, "log_importance_weights", spy)
    largest = {}
    for budget_mb in (0.2, 0.8):
        passes.clear()
        iwae_log_likelihood(vae.model, vae.guide, x, k=40, batch_size=30, memory_mb=budget_mb)
        largest[budget_mb] = max(num_samples for examples, num_samples in passes if examples == 30)
        assert largest[budget_mb] < 40  # several passes per batch
        for (_, num_samples), (xb, sites) in passes.items():
            assert pass_bytes(vae.model, vae.guide, xb, (), num_samples, sites) <= budget_mb * MB
    assert largest[0.2] < largest[0.8]
    with pytest.raises(InputError, match=r"--eval-memory-mb 1e-05 is below the .* MB that one importance sample"):
        iwae_log_likelihood(vae.model, vae.guide, x, k=10, memory_mb=1e-5)


@pytest.mark.parametrize("batch_size", [20, 7])
def test_the_numbers_do_not_depend_on_the_memory_budget(small_config, test_set, float64, batch_size):
    """Same seed, budgets from several passes per batch to one: the same per-example IWAE, ELBO and log weights (the
    passes draw whole blocks of samples, so the draws are the same numbers; only the sums' rounding differs), also
    for batches whose draws per sample (7 x 4) are not a whole block of 16."""
    vae = VAE(small_config).double()
    x = test_set[:28].double()

    def seeded(estimator, budget_mb, **options):
        pyro.set_rng_seed(11)
        return estimator(vae.model, vae.guide, x, batch_size=batch_size, memory_mb=budget_mb, **options)

    weights = seeded(log_weights_per_example, None, k=100)
    assert weights.std(1).min() > 0.1  # the draws matter
    for budget_mb in (0.4, 100.0):  # several passes per batch (of 7 or 16+ samples), one pass
        torch.testing.assert_close(seeded(log_weights_per_example, budget_mb, k=100), weights, rtol=0, atol=1e-10)
        iwae = seeded(iwae_log_likelihood, budget_mb, k=100).per_example
        torch.testing.assert_close(iwae, torch.logsumexp(weights, 1) - math.log(100), rtol=0, atol=1e-10)
        bound = seeded(elbo, budget_mb, num_particles=100).per_example
        torch.testing.assert_close(bound, weights.mean(1), rtol=0, atol=1e-10)
