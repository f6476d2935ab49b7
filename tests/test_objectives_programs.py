"""The training objectives on users' programs: β on latent sites of any name, nested plates, enumeration, TraceGraph,
any Pyro ELBO instance, and the checks of ``meanfield``.

Every number is compared in float64 with the same seed against Pyro's own ELBO or a hand computation from the same
draws (:func:`ppl_vae.programs.trace_programs` leaves the RNG as it was, so a seeded trace sees the draws that the
seeded step sees).
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO
from torch import nn

from ppl_vae.config import TrainConfig
from ppl_vae.data import Dataset
from ppl_vae.errors import InputError
from ppl_vae.lab import FixedNoise
from ppl_vae.objectives import TraceSTL_ELBO, make_step
from ppl_vae.programs import UserProgram, trace_programs
from ppl_vae.train import fit

pytestmark = pytest.mark.usefixtures("float64")

D = 6


def binary_x(batch: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.bernoulli(torch.full((batch, D), 0.5), generator=torch.Generator().manual_seed(seed))


def renamed_latent():
    """A VAE whose latent site is called ``"w"``: p(w) = N(0, I_2), p(x | w) = Bernoulli(logits = decoder(w))."""
    torch.manual_seed(0)
    encoder, decoder = nn.Linear(D, 4), nn.Linear(2, D)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            w = pyro.sample("w", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(w)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        loc, log_scale = encoder(x).split(2, dim=-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("w", dist.Normal(loc, log_scale.exp()).to_event(1))

    return UserProgram(model, guide, {"encoder": encoder, "decoder": decoder}), encoder, decoder


def two_levels(mean_field: bool, top_prior=None):
    """z2 ~ N(0, I_2), z1 ~ N(mid(z2), 1), x ~ Bernoulli(decoder(z1)); guide q(z1 | x) and q(z2 | x) (mean field) or
    q(z2 | z1)."""
    torch.manual_seed(0)
    parts = nn.ModuleDict(
        {"encoder": nn.Linear(D, 4), "top": nn.Linear(D if mean_field else 2, 4), "mid": nn.Linear(2, 2)}
    )
    parts["decoder"] = nn.Linear(2, D)

    def model(x):
        pyro.module("parts", parts)
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", top_prior(x) if top_prior else dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(parts["mid"](z2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=parts["decoder"](z1)).to_event(1), obs=x)

    def guide(x):
        pyro.module("parts", parts)
        loc, log_scale = parts["encoder"](x).split(2, dim=-1)
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(loc, log_scale.exp()).to_event(1))
            loc, log_scale = parts["top"](x if mean_field else z1).split(2, dim=-1)
            pyro.sample("z2", dist.Normal(loc, log_scale.exp()).to_event(1))

    return UserProgram(model, guide, parts)


# ---------------------------------------------------------------- beta on any latent site


def test_beta_weighs_a_renamed_latent_site_as_the_closed_form_says():
    """loss(β) = -sum_b [log p(x_b | w_b) + β (log p(w_b) - log q(w_b | x_b))] at the step's own draw of w. (Before,
    β scaled only a site called "z": the loss was the same at β = 1, 2 and 8.)"""
    programs, encoder, decoder = renamed_latent()
    x = binary_x()
    step = make_step(programs, TrainConfig(beta=2.0))
    losses = []
    for beta in (1.0, 2.0, 8.0):
        pyro.set_rng_seed(3)
        loss = step.loss(x, beta_t=beta).item()
        pyro.set_rng_seed(3)
        w = trace_programs(programs.model, programs.guide, x)[0].nodes["w"]["value"]
        with torch.no_grad():
            loc, log_scale = encoder(x).split(2, dim=-1)
            log_q = torch.distributions.Normal(loc, log_scale.exp()).log_prob(w).sum(-1)
            log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(w).sum(-1)
            log_likelihood = -F.binary_cross_entropy_with_logits(decoder(w), x, reduction="none").sum(-1)
        expected = -(log_likelihood + beta * (log_prior - log_q)).sum().item()
        assert loss == pytest.approx(expected, rel=1e-12)
        losses.append(loss)
    assert len(set(losses)) == 3


def site_terms(programs, x, seed):
    """``log p(z_s | ...) - log q(z_s | ...)`` summed over the batch, per latent site, at the seeded draw."""
    pyro.set_rng_seed(seed)
    guide_trace, model_trace = trace_programs(programs.model, programs.guide, x)
    return {
        name: (
            model_trace.nodes[name]["fn"].log_prob(model_trace.nodes[name]["value"]).sum()
            - guide_trace.nodes[name]["fn"].log_prob(guide_trace.nodes[name]["value"]).sum()
        ).item()
        for name in ("z1", "z2")
    }


@pytest.mark.parametrize("latent_sites", [(), ("z2",)])
def test_beta_weighs_every_latent_site_or_the_named_ones(latent_sites):
    """loss(β) - loss(1) = -(β - 1) sum over the weighted sites of (log p - log q), at the same draws."""
    programs = two_levels(mean_field=True)
    x = binary_x()
    step = make_step(programs, TrainConfig(beta=3.0, latent_sites=latent_sites))
    losses = {}
    for beta in (1.0, 3.0):
        pyro.set_rng_seed(7)
        losses[beta] = step.loss(x, beta_t=beta).item()
    terms = site_terms(programs, x, seed=7)
    weighted = latent_sites or ("z1", "z2")
    assert losses[3.0] - losses[1.0] == pytest.approx(-2.0 * sum(terms[name] for name in weighted), rel=1e-10)


def test_latent_sites_must_be_sites_of_the_guide():
    programs, _, _ = renamed_latent()
    step = make_step(programs, TrainConfig(beta=2.0, latent_sites=("z",)))
    with pytest.raises(InputError, match="latent_sites names 'z', which the guide does not sample: .* 'w'"):
        step(binary_x())


# ---------------------------------------------------------------- nested plates


def pixel_plate():
    """The likelihood in a per-pixel plate nested in the data plate: data at dim -2, pixels at dim -1."""
    torch.manual_seed(0)
    encoder, decoder = nn.Linear(D, 4), nn.Linear(2, D)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))  # (B, 1, 2)
            with pyro.plate("pixels", D, dim=-1):
                pyro.sample("x", dist.Bernoulli(logits=decoder(z).squeeze(-2)), obs=x)  # (..., B, D)

    def guide(x):
        pyro.module("encoder", encoder)
        loc, log_scale = encoder(x).unsqueeze(-2).split(2, dim=-1)
        with pyro.plate("data", x.shape[0], dim=-2):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return UserProgram(model, guide, {"encoder": encoder, "decoder": decoder})


def test_a_nested_plate_trains_with_the_loss_of_pyros_trace_elbo():
    """max_plate_nesting comes from the trace (2 here, was fixed at 1): the step's loss is Pyro's Trace_ELBO with
    max_plate_nesting=2 at the same seed, with three vectorized particles left of both plates."""
    programs = pixel_plate()
    x = binary_x()
    step = make_step(programs, TrainConfig(num_particles=3))
    pyro.set_rng_seed(4)
    loss = step.loss(x).item()
    assert step.sites.max_plate_nesting == 2
    pyro.set_rng_seed(4)
    expected = Trace_ELBO(max_plate_nesting=2, num_particles=3, vectorize_particles=True).loss(
        programs.model, programs.guide, x
    )
    assert loss == pytest.approx(expected, rel=1e-12)
    data = Dataset("bits", binary_x(64, seed=2), binary_x(16, seed=3), None, None, (1, 1, D))
    history = fit(
        model=programs.model,
        guide=programs.guide,
        modules=programs.modules,
        data=data,
        config=TrainConfig(epochs=2, batch_size=16, eval_particles=2),
        progress=False,
    )
    assert all(math.isfinite(record["train_elbo"]) and math.isfinite(record["test_elbo"]) for record in history)


# ---------------------------------------------------------------- enumeration, TraceGraph, any ELBO


def mixture(num_components: int = 2):
    """p(c) = Categorical(softmax(logits)), p(x | c) = N(mu_c, 0.1^2 I); q(c | x) = Categorical(softmax(encoder(x))),
    marked for parallel enumeration."""
    torch.manual_seed(0)
    prior = nn.ParameterDict(
        {"logits": nn.Parameter(torch.randn(num_components)), "mu": nn.Parameter(torch.rand(num_components, D))}
    )
    encoder = nn.Linear(D, num_components)

    def model(x):
        pyro.module("prior", prior)
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(logits=prior["logits"]))
            pyro.sample("x", dist.Normal(prior["mu"][c], 0.1).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Categorical(logits=encoder(x)), infer={"enumerate": "parallel"})

    return UserProgram(model, guide, {"prior": prior, "encoder": encoder}), prior, encoder


def test_enum_sums_the_discrete_latent_exactly():
    """loss = -sum_b sum_c q(c | x_b) [log p(c) + log p(x_b | c) - log q(c | x_b)], whatever the seed."""
    programs, prior, encoder = mixture()
    x = torch.rand(5, D, generator=torch.Generator().manual_seed(1))
    step = make_step(programs, TrainConfig(elbo="enum"))
    with torch.no_grad():
        log_q = encoder(x).log_softmax(-1)  # (B, C)
        log_joint = prior["logits"].log_softmax(-1) + torch.distributions.Normal(prior["mu"], 0.1).log_prob(
            x.unsqueeze(-2)
        ).sum(-1)
        expected = -(log_q.exp() * (log_joint - log_q)).sum().item()
    for seed in (0, 1):
        pyro.set_rng_seed(seed)
        assert step.loss(x).item() == pytest.approx(expected, rel=1e-12)
    assert step.sites.enumerated == ("c",)


def test_enum_refuses_a_guide_that_marks_nothing_for_enumeration():
    programs, _, _ = renamed_latent()
    step = make_step(programs, TrainConfig(elbo="enum"))
    with pytest.raises(InputError, match="--elbo enum sums out .* marks none of 'w'.*use --elbo trace"):
        step(binary_x())


def test_tracegraph_is_pyros_tracegraph_elbo():
    programs, _, _ = renamed_latent()
    x = binary_x()
    step = make_step(programs, TrainConfig(elbo="tracegraph", num_particles=2))
    pyro.set_rng_seed(5)
    expected = TraceGraph_ELBO(max_plate_nesting=1, num_particles=2, vectorize_particles=True).loss(
        programs.model, programs.guide, x
    )
    pyro.set_rng_seed(5)
    assert step(x) == pytest.approx(expected, rel=1e-12)  # the loss before the step's update


def test_fit_trains_with_a_pyro_elbo_instance():
    """fit(..., elbo=TraceEnum_ELBO(...)) on two clusters: the test ELBO climbs."""
    programs, _, _ = mixture()
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.1] * D, [0.9] * D])

    def clusters(n):
        return (centres[torch.arange(n) % 2] + 0.05 * torch.randn(n, D, generator=generator)).clamp(0, 1)

    data = Dataset("clusters", clusters(128), clusters(64), None, None, (1, 1, D))
    history = fit(
        model=programs.model,
        guide=programs.guide,
        modules=programs.modules,
        data=data,
        config=TrainConfig(epochs=6, batch_size=32, lr=0.05, eval_particles=4),
        elbo=TraceEnum_ELBO(max_plate_nesting=1),
        progress=False,
    )
    assert history[-1]["test_elbo"] > history[0]["test_elbo"] + 10 * history[0]["test_elbo_se"]


def test_an_elbo_instance_replaces_the_named_objective_only():
    programs, _, _ = renamed_latent()
    with pytest.raises(InputError, match="pass either elbo= .* or TrainConfig\\(elbo='meanfield'\\), not both"):
        make_step(programs, TrainConfig(elbo="meanfield"), elbo=Trace_ELBO())
    with pytest.raises(InputError, match="elbo= must be a Pyro ELBO instance"):
        make_step(programs, TrainConfig(), elbo=Trace_ELBO)


# ---------------------------------------------------------------- meanfield checks every program


def test_meanfield_refuses_a_guide_that_is_not_mean_field():
    """q(z1 | x) q(z2 | z1): the closed form at z1 would be biased (it trained silently before, with only Pyro's
    site-order warning)."""
    programs = two_levels(mean_field=False)
    step = make_step(programs, TrainConfig(elbo="meanfield"))
    with pytest.raises(InputError, match=r"needs a mean-field guide, but q\(z2 \| z1\) depends on latent site"):
        step(binary_x())


def test_meanfield_refuses_a_latent_site_without_a_closed_form_kl():
    programs = two_levels(mean_field=True, top_prior=lambda x: dist.StudentT(3.0, x.new_zeros(2), 1.0).to_event(1))
    step = make_step(programs, TrainConfig(elbo="meanfield"))
    message = (
        r"closed-form KL\(q \|\| p\) at latent site 'z2', which Pyro lacks for q = Independent\(Normal\) with "
        r"p = Independent\(StudentT\): use --elbo trace"
    )
    with pytest.raises(InputError, match=message):
        step(binary_x())


def test_meanfield_takes_a_mean_field_guide_whose_sites_come_in_another_order():
    """Model order z2, z1; guide order z1, z2: found mean field, so Pyro's site-order warning (an error under pytest)
    is silenced and the step trains."""
    programs = two_levels(mean_field=True)
    x = binary_x()
    step = make_step(programs, TrainConfig(elbo="meanfield"))
    assert all(math.isfinite(step(x)) for _ in range(3))


# ---------------------------------------------------------------- sticking the landing on any program


def detached_call(module: nn.Module, *inputs):
    """``module(*inputs)`` computed with detached copies of its parameters (the inputs keep their gradients)."""
    detached = {name: parameter.detach() for name, parameter in module.named_parameters()}
    return torch.func.functional_call(module, detached, inputs)


def normal_log_q(loc_and_log_scale: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    loc, log_scale = loc_and_log_scale.split(z.shape[-1], dim=-1)
    return torch.distributions.Normal(loc, log_scale.exp()).log_prob(z).sum(-1)


def fixed_noise_loss_and_grads(elbo, program, x, noise: dict, modules: nn.Module):
    """``elbo.differentiable_loss`` (one particle) on ``program`` with the latent sites drawn from the given ``noise``,
    and its gradients w.r.t. ``modules``."""
    guide = program.guide
    for name, eps in noise.items():
        guide = FixedNoise(eps, site=name)(guide)
    loss = elbo.differentiable_loss(program.model, guide, x)
    return loss.detach(), torch.autograd.grad(loss, list(modules.parameters()))


def assert_loss_and_grads(actual, expected, modules):
    torch.testing.assert_close(actual[0], expected.detach(), rtol=1e-9, atol=0.0)
    for got, want in zip(actual[1], torch.autograd.grad(expected, list(modules.parameters())), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_stl_on_two_latent_sites_is_the_elbo_with_log_q_at_detached_parameters():
    """q(z1 | x) q(z2 | z1): log q is evaluated by networks with detached parameters, while z1 and z2 keep their paths
    (also z1's path through q(z2 | z1)), written out by hand with torch.func.functional_call."""
    program = two_levels(mean_field=False)
    parts, x = program.modules, binary_x()
    eps1, eps2 = torch.randn(5, 2), torch.randn(5, 2)
    loc1, log_scale1 = parts["encoder"](x).split(2, -1)
    z1 = loc1 + log_scale1.exp() * eps1
    loc2, log_scale2 = parts["top"](z1).split(2, -1)
    z2 = loc2 + log_scale2.exp() * eps2
    log_p = (
        torch.distributions.Normal(0.0, 1.0).log_prob(z2).sum(-1)
        + torch.distributions.Normal(parts["mid"](z2), 1.0).log_prob(z1).sum(-1)
        - F.binary_cross_entropy_with_logits(parts["decoder"](z1), x, reduction="none").sum(-1)
    )
    log_q = normal_log_q(detached_call(parts["encoder"], x), z1) + normal_log_q(detached_call(parts["top"], z1), z2)
    expected = -(log_p - log_q).sum()
    noise = {"z1": eps1, "z2": eps2}
    actual = fixed_noise_loss_and_grads(TraceSTL_ELBO(max_plate_nesting=1), program, x, noise, parts)
    assert_loss_and_grads(actual, expected, parts)
    trace = fixed_noise_loss_and_grads(Trace_ELBO(max_plate_nesting=1), program, x, noise, parts)
    torch.testing.assert_close(actual[0], trace[0], rtol=1e-12, atol=0.0)  # the same value as Trace_ELBO
    assert max((a - b).abs().max().item() for a, b in zip(actual[1], trace[1], strict=True)) > 1e-3  # not its gradient


def masked_latent():
    """``renamed_latent`` with the latent site of examples 1 and 4 masked out (``poutine.mask``) in model and guide."""
    program, encoder, decoder = renamed_latent()
    keep = torch.tensor([True, False, True, True, False])

    def model(x):
        with poutine.mask(mask=keep):
            program.model(x)

    def guide(x):
        with poutine.mask(mask=keep):
            program.guide(x)

    return UserProgram(model, guide, program.modules), encoder, decoder, keep


def test_stl_honours_masks_as_trace_elbo_does():
    """The masked terms m_b (log p(w_b) - log q(w_b)) leave the loss and the gradient alike; the likelihood is masked
    too (poutine.mask wraps every site), exactly as Pyro's Trace_ELBO masks it."""
    program, encoder, decoder, keep = masked_latent()
    x, eps = binary_x(), torch.randn(5, 2)
    loc, log_scale = encoder(x).split(2, -1)
    w = loc + log_scale.exp() * eps
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(w).sum(-1)
    log_likelihood = -F.binary_cross_entropy_with_logits(decoder(w), x, reduction="none").sum(-1)
    log_q = normal_log_q(detached_call(encoder, x), w)
    expected = -(keep * (log_likelihood + log_p - log_q)).sum()
    actual = fixed_noise_loss_and_grads(TraceSTL_ELBO(max_plate_nesting=1), program, x, {"w": eps}, program.modules)
    assert_loss_and_grads(actual, expected, program.modules)
    trace_loss = Trace_ELBO(max_plate_nesting=1).loss(program.model, FixedNoise(eps, site="w")(program.guide), x)
    assert trace_loss == pytest.approx(expected.item(), rel=1e-12)


def test_stl_refuses_a_latent_site_without_a_reparameterized_sampler():
    program, _, _ = mixture()
    step = make_step(program, TrainConfig(elbo="stl"))
    with pytest.raises(InputError, match="--elbo stl needs reparameterized latent sites, but 'c' is a Categorical"):
        step(torch.rand(5, D))


def test_stl_has_the_expectation_of_trace_elbo_in_value_and_gradient():
    """Independent draws, 40 repetitions of 100 particles each: the mean loss and the mean encoder gradient (projected
    on a fixed direction) of STL and Trace_ELBO agree within 3 standard errors; STL's gradient varies less."""
    program, encoder, _ = renamed_latent()
    x = binary_x()
    direction = torch.randn(sum(p.numel() for p in encoder.parameters()), generator=torch.Generator().manual_seed(9))
    results = {}
    for seed, elbo in ((1, Trace_ELBO), (2, TraceSTL_ELBO)):
        pyro.set_rng_seed(seed)
        estimator = elbo(num_particles=100, vectorize_particles=True, max_plate_nesting=1)
        losses, projections = [], []
        for _ in range(40):
            loss = estimator.differentiable_loss(program.model, program.guide, x)
            grads = torch.autograd.grad(loss, list(encoder.parameters()))
            losses.append(loss.item())
            projections.append(torch.cat([g.flatten() for g in grads]) @ direction)
        results[elbo] = torch.tensor(losses), torch.stack(projections)
    for index in (0, 1):
        trace, stl = results[Trace_ELBO][index], results[TraceSTL_ELBO][index]
        se = math.hypot(trace.std().item(), stl.std().item()) / math.sqrt(40)
        assert abs(trace.mean().item() - stl.mean().item()) < 3 * se
    assert results[TraceSTL_ELBO][1].var() < results[Trace_ELBO][1].var()
