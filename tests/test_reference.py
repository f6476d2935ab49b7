"""The hand-written losses against closed forms and against Pyro, in float64 with fixed noise.

Three ways (see DESIGN.md): exact replay of one ``eps`` through Pyro and through the hand-written loss (tight
tolerance, values and gradients); many particles against the analytic value (a few standard errors); and the closed
forms against ``torch.distributions.kl_divergence``. Changing a sign or a factor 1/2 in any KL formula of
``ppl_vae.reference`` makes the closed-form and the replay tests fail.
"""

import math

import pyro
import pytest
import torch
import torch.distributions as td
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from ppl_vae import reference
from ppl_vae.config import ModelConfig
from ppl_vae.heads import HEADS
from ppl_vae.lab import FixedNoise
from ppl_vae.objectives import TraceSTL_ELBO
from ppl_vae.vae import VAE

HEAD_NAMES = sorted(HEADS)
RTOL = 1e-6  # the tolerance; float64 replay agrees to about 1e-13


@pytest.fixture(autouse=True)
def clean_pyro_state():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def small_vae(head: str, seed: int = 0) -> VAE:
    """z_dim 3, one hidden layer of 16, 8x8 images, float64; biases randomized so KL and gradients are not tiny."""
    pyro.set_rng_seed(seed)
    vae = VAE(ModelConfig(x_dim=64, image_shape=(1, 8, 8), z_dim=3, hidden=(16,), scale_param=head)).double()
    with torch.no_grad():
        for parameter in vae.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return vae


def binary_images(batch: int = 5, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((batch, 64), 0.3, dtype=torch.float64), generator=generator)


def loss_and_grads(vae: VAE, loss: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    parameters = list(vae.parameters())
    return loss.detach(), list(torch.autograd.grad(loss, parameters, allow_unused=True, materialize_grads=True))


def assert_same(pyro_result, reference_result):
    (pyro_loss, pyro_grads), (ref_loss, ref_grads) = pyro_result, reference_result
    torch.testing.assert_close(pyro_loss, ref_loss, rtol=RTOL, atol=0.0)
    for pyro_grad, ref_grad in zip(pyro_grads, ref_grads, strict=True):
        torch.testing.assert_close(pyro_grad, ref_grad, rtol=RTOL, atol=1e-10)


# --- closed forms ----------------------------------------------------------------------------------------------------
def test_closed_form_kls_match_torch():
    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(4, 6, 5, dtype=torch.float64, generator=generator)
    log_scale = 0.8 * torch.randn(4, 6, 5, dtype=torch.float64, generator=generator)
    scale = log_scale.exp()
    expected = td.kl_divergence(td.Normal(loc, scale), td.Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(reference.kl_from_scale(loc, scale), expected, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(reference.kl_from_log_scale(loc, log_scale), expected, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(reference.kl_from_log_var(loc, 2 * log_scale), expected, rtol=1e-12, atol=0.0)


def test_log_densities_match_torch():
    generator = torch.Generator().manual_seed(2)
    z, loc = torch.randn(2, 7, 4, dtype=torch.float64, generator=generator)
    scale = torch.rand(7, 4, dtype=torch.float64, generator=generator) + 0.1
    expected = td.Normal(loc, scale).log_prob(z).sum(-1)
    torch.testing.assert_close(reference.normal_log_density(z, loc, scale), expected, rtol=1e-12, atol=0.0)
    logits, x = (
        torch.randn(7, 9, dtype=torch.float64, generator=generator),
        (torch.rand(7, 9, generator=generator) > 0.5),
    )
    expected = td.Bernoulli(logits=logits).log_prob(x.double()).sum(-1)
    torch.testing.assert_close(reference.bernoulli_log_likelihood(logits, x.double()), expected, rtol=1e-12, atol=0.0)


def test_kl_is_zero_only_at_the_prior():
    zeros = torch.zeros(2, 3, dtype=torch.float64)
    for kl in (reference.kl_from_log_scale(zeros, zeros), reference.kl_from_log_var(zeros, zeros)):
        torch.testing.assert_close(kl, torch.zeros(2, dtype=torch.float64))
    assert (reference.kl_from_scale(zeros + 0.1, torch.ones(2, 3, dtype=torch.float64)) > 0).all()


def test_monte_carlo_kl_term_averages_to_the_closed_form():
    """``E_eps[log q(z) - log p(z)] = KL``: 200,000 draws, within 3 standard errors."""
    generator = torch.Generator().manual_seed(0)
    loc = torch.tensor([0.5, -1.0, 0.2], dtype=torch.float64)
    scale = torch.tensor([0.3, 1.5, 0.9], dtype=torch.float64)
    z = loc + scale * torch.randn(200_000, 3, dtype=torch.float64, generator=generator)
    terms = reference.normal_log_density(z, loc, scale) - reference.normal_log_density(z, 0 * z, 1 + 0 * z)
    se = terms.std().item() / math.sqrt(terms.numel())
    assert abs(terms.mean().item() - reference.kl_from_scale(loc, scale).item()) < 3 * se


# --- exact replay: the same eps through Pyro and through the hand-written loss --------------------------------------
def pyro_loss(vae, elbo, x, eps):
    return loss_and_grads(vae, elbo.differentiable_loss(vae.model, FixedNoise(eps)(vae.guide), x))


def reference_loss(vae, elbo_fn, x, eps, head):
    return loss_and_grads(vae, -elbo_fn(vae.encoder.net, vae.decoder, x, eps, head=head).mean(0).sum())


@pytest.mark.parametrize("num_particles", [1, 4])
@pytest.mark.parametrize("head", HEAD_NAMES)
def test_meanfield_equals_hand_written_analytic_loss(head, num_particles):
    vae, x = small_vae(head), binary_images()
    eps = torch.randn(num_particles, x.shape[0], 3, dtype=torch.float64)
    elbo = TraceMeanField_ELBO(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)
    assert_same(pyro_loss(vae, elbo, x, eps), reference_loss(vae, reference.elbo_analytic_kl, x, eps, head))


@pytest.mark.parametrize("num_particles", [1, 4])
@pytest.mark.parametrize("head", HEAD_NAMES)
def test_trace_equals_hand_written_monte_carlo_loss(head, num_particles):
    vae, x = small_vae(head), binary_images()
    eps = torch.randn(num_particles, x.shape[0], 3, dtype=torch.float64)
    elbo = Trace_ELBO(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)
    assert_same(pyro_loss(vae, elbo, x, eps), reference_loss(vae, reference.elbo_monte_carlo_kl, x, eps, head))


@pytest.mark.parametrize("num_particles", [1, 4])
@pytest.mark.parametrize("head", HEAD_NAMES)
def test_stl_elbo_equals_hand_written_stl_loss(head, num_particles):
    """Pyro's path (TraceSTL_ELBO, any program) and the classic loss with detached (loc, scale): same value, same
    gradients, for the same eps."""
    vae, x = small_vae(head), binary_images()
    eps = torch.randn(num_particles, x.shape[0], 3, dtype=torch.float64)
    elbo = TraceSTL_ELBO(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)
    assert_same(pyro_loss(vae, elbo, x, eps), reference_loss(vae, reference.elbo_stl, x, eps, head))


def test_replay_without_particle_plate():
    """The plain ``Trace_ELBO()`` (no vectorized particles) with eps ``(B, z_dim)`` is the same loss."""
    vae, x = small_vae("log_var"), binary_images()
    eps = torch.randn(x.shape[0], 3, dtype=torch.float64)
    assert_same(
        pyro_loss(vae, Trace_ELBO(), x, eps),
        reference_loss(vae, reference.elbo_monte_carlo_kl, x, eps[None], "log_var"),  # one particle
    )


def test_analytic_and_monte_carlo_losses_differ_by_the_kl_error_only():
    """Same eps: ``ELBO_mc - ELBO_analytic = KL - (log q - log p)`` at that eps, and nothing else."""
    vae, x = small_vae("log_scale"), binary_images()
    eps = torch.randn(1, x.shape[0], 3, dtype=torch.float64)
    net, decoder = vae.encoder.net, vae.decoder
    difference = reference.elbo_monte_carlo_kl(net, decoder, x, eps) - reference.elbo_analytic_kl(
        net, decoder, x, eps, head="log_scale"
    )
    loc, scale = vae.encode(x)
    z = loc + scale * eps
    kl_error = reference.kl_from_scale(loc, scale) - (
        reference.normal_log_density(z, loc, scale) - reference.normal_log_density(z, 0 * z, 1 + 0 * z)
    )
    torch.testing.assert_close(difference, kl_error, rtol=1e-10, atol=1e-12)
    assert kl_error.abs().max() > 1e-3  # the two estimators really differ draw by draw


# --- many particles against the analytic value -------------------------------------------------------------------
def test_trace_elbo_with_many_particles_converges_to_the_analytic_elbo():
    """Pyro's Trace_ELBO (Monte Carlo KL) and TraceMeanField_ELBO (closed form), 20 x 200 vectorized particles each:
    the means agree within 3 standard errors, and the standard error is far below the KL itself."""
    vae, x = small_vae("log_scale"), binary_images()
    options = {"num_particles": 200, "vectorize_particles": True, "max_plate_nesting": 1}
    pyro.set_rng_seed(3)
    with torch.no_grad():
        mc = torch.tensor([Trace_ELBO(**options).loss(vae.model, vae.guide, x) for _ in range(20)])
        analytic = torch.tensor([TraceMeanField_ELBO(**options).loss(vae.model, vae.guide, x) for _ in range(20)])
        loc, scale = vae.encode(x)
    se = math.hypot(mc.std().item() / math.sqrt(20), analytic.std().item() / math.sqrt(20))
    assert abs(mc.mean().item() - analytic.mean().item()) < 3 * se
    assert se < 0.05 * reference.kl_from_scale(loc, scale).sum().item()


# --- sticking the landing -----------------------------------------------------------------------------------------
def test_stl_has_the_monte_carlo_value_and_drops_only_the_score_term():
    """``grad_mc - grad_stl = grad_phi sum log q(z_fixed; loc(phi), scale(phi))``, exactly; decoder gradients equal."""
    vae, x = small_vae("softplus"), binary_images()
    eps = torch.randn(2, x.shape[0], 3, dtype=torch.float64)
    mc_loss, mc_grads = reference_loss(vae, reference.elbo_monte_carlo_kl, x, eps, "softplus")
    stl_loss, stl_grads = reference_loss(vae, reference.elbo_stl, x, eps, "softplus")
    torch.testing.assert_close(stl_loss, mc_loss, rtol=1e-12, atol=0.0)
    loc, scale = vae.encode(x)
    z_fixed = (loc + scale * eps).detach()
    _, score = loss_and_grads(vae, reference.normal_log_density(z_fixed, loc, scale).mean(0).sum())
    names = [name for name, _ in vae.named_parameters()]
    for name, mc_grad, stl_grad, score_grad in zip(names, mc_grads, stl_grads, score, strict=True):
        torch.testing.assert_close(mc_grad - stl_grad, score_grad, rtol=1e-9, atol=1e-12)
        if name.startswith("decoder"):
            torch.testing.assert_close(mc_grad, stl_grad, rtol=0.0, atol=0.0)
    assert max(grad.abs().max().item() for grad in score) > 1e-2  # the dropped term is not negligible here


@pytest.mark.parametrize("elbo", ["stl", "reference-stl"])
def test_stl_objectives_train_through_the_registry(elbo):
    from ppl_vae.config import TrainConfig
    from ppl_vae.objectives import make_step

    vae, x = small_vae("log_scale"), binary_images(batch=16)
    before = [parameter.detach().clone() for parameter in vae.parameters()]
    step = make_step(vae, TrainConfig(elbo=elbo, lr=1e-2))
    losses = [step(x) for _ in range(30)]
    assert sum(losses[-5:]) < sum(losses[:5])
    assert all(not torch.equal(a, b) for a, b in zip(before, vae.parameters(), strict=True))
