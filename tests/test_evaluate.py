"""The ELBO and IWAE estimators: exact values on a deterministic guide, limit identities, bounded memory."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppl_vae import InputError, evaluate
from ppl_vae.evaluate import Estimate, elbo, iwae_log_likelihood, log_importance_weights, observed_test_set
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


def test_a_site_outside_the_data_plate_is_refused(small_config):
    vae = VAE(small_config)

    def model_with_global_site(x):
        pyro.sample("w", dist.Normal(0.0, 1.0))
        vae.model(x)

    def guide_with_global_site(x):
        pyro.sample("w", dist.Normal(0.0, 1.0))
        vae.guide(x)

    with pytest.raises(InputError, match="'w' lie outside it"):
        log_importance_weights(model_with_global_site, guide_with_global_site, torch.zeros(3, 64), num_samples=2)
