"""The program contract (ppl_vae.programs) against Pyro's own ``Trace_ELBO``, the ground truth for what masks, plates
and scales mean: masked sites, ``obs_mask``, several latent sites, nested plates, refusals, extra arguments.

Same-seed checks: with one particle, ``elbo``'s per-example values summed over the examples equal
``-Trace_ELBO().loss`` on the same draws (a recorder checks that both runs drew the same numbers), to 1e-6 in float64.
Many-particle checks: the mean agrees with the average of many ``Trace_ELBO`` losses within 3 standard errors.
"""

import math
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ppl_vae import InputError, elbo, iwae_log_likelihood
from ppl_vae.programs import importance_traces, latent_parents

pytestmark = pytest.mark.usefixtures("float64")

B, D, Z = 5, 4, 2  # examples, observed dimensions (pixels), latent dimensions
KEEP = (True, False, True, True, False)  # a per-example mask: examples 1 and 4 are masked out
GUIDE_SCALE = (0.6, 0.9)  # the standard deviations of gaussian_guide


class DrawRecorder(Messenger):
    """Wraps a guide and keeps, for each call, the values of its latent draws (to check that two runs line up)."""

    def __init__(self):
        super().__init__()
        self.calls: list[dict[str, torch.Tensor]] = []

    def __enter__(self):
        self.calls.append({})
        return super().__enter__()

    def _postprocess_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"] and not site_is_subsample(msg):
            self.calls[-1][msg["name"]] = msg["value"].detach().clone()


class Case(NamedTuple):
    """A model/guide pair on ``x``, with labels ``y`` as their second argument when not None."""

    model: object
    guide: object
    x: torch.Tensor
    y: torch.Tensor | None = None

    @property
    def args(self) -> tuple:
        return () if self.y is None else (self.y,)


def fixed(*shape, seed: int) -> torch.Tensor:
    """Constant weights, the same in every test (default dtype)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(torch.get_default_dtype())


def normal_data(seed: int = 10) -> torch.Tensor:
    return fixed(B, D, seed=seed)


def binary_data(seed: int = 11) -> torch.Tensor:
    return (fixed(B, D, seed=seed) > 0).to(torch.get_default_dtype())


def gaussian_guide(plate: str = "data"):
    """q(z | x) = N(x A, diag(s^2)) inside the plate ``plate``; accepts (and ignores) labels."""
    loc_weights, scale = fixed(D, Z, seed=2), torch.tensor(GUIDE_SCALE)

    def guide(x, y=None):
        with pyro.plate(plate, x.shape[0]):
            pyro.sample("z", dist.Normal(x @ loc_weights, scale).to_event(1))

    return guide


def standard_normal_prior(n: int) -> dist.Distribution:
    return dist.Normal(0.0, 1.0).expand([n, Z]).to_event(1)


def poutine_mask_case(prior_scale: float = 1.0) -> Case:
    """(a) the likelihood of examples 1 and 4 masked out with ``poutine.mask`` (a per-example mask); the prior of ``z``
    under ``poutine.scale(scale=prior_scale)`` (a beta)."""
    decoder, keep = fixed(Z, D, seed=1), torch.tensor(KEEP)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            with poutine.scale(scale=prior_scale):
                z = pyro.sample("z", standard_normal_prior(x.shape[0]))
            with poutine.mask(mask=keep):
                pyro.sample("x", dist.Normal(z @ decoder, 0.5).to_event(1), obs=x)

    return Case(model, gaussian_guide(), normal_data())


def obs_mask_case() -> Case:
    """(b) semi-supervised: labels observed where ``labelled`` (``obs_mask``), imputed by the guide elsewhere; Pyro
    splits the site into ``y_observed`` and ``y_unobserved``, which the guide samples (masked to the unlabelled)."""
    decoder, label_effect, classifier = fixed(Z, D, seed=1), fixed(10, D, seed=3), fixed(D, 10, seed=4)
    loc_weights = fixed(D, Z, seed=2)
    labelled = torch.tensor([True, True, False, True, False])

    def model(x, y):
        with pyro.plate("data", x.shape[0]):
            label = pyro.sample("y", dist.Categorical(logits=torch.zeros(10)), obs=y, obs_mask=labelled)
            z = pyro.sample("z", standard_normal_prior(x.shape[0]))
            pyro.sample("x", dist.Normal(z @ decoder + label_effect[label], 0.5).to_event(1), obs=x)

    def guide(x, y):
        with pyro.plate("data", x.shape[0]):
            with poutine.mask(mask=~labelled):
                pyro.sample("y_unobserved", dist.Categorical(logits=x @ classifier))
            pyro.sample("z", dist.Normal(x @ loc_weights, 0.7).to_event(1))

    return Case(model, guide, normal_data(), y=torch.tensor([3, 1, 0, 7, 0]))  # 0: a placeholder where unlabelled


def distribution_mask_case() -> Case:
    """(c) the likelihood masked per example with ``Distribution.mask``."""
    decoder, keep = fixed(Z, D, seed=1), torch.tensor(KEEP)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", standard_normal_prior(x.shape[0]))
            pyro.sample("x", dist.Normal(z @ decoder, 0.5).to_event(1).mask(keep), obs=x)

    return Case(model, gaussian_guide(), normal_data())


def missing_pixels_case() -> Case:
    """(d) a Bernoulli likelihood over the observed pixels only (a per-pixel mask inside the event)."""
    decoder = fixed(Z, D, seed=1)
    seen = fixed(B, D, seed=5) > -0.5

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", standard_normal_prior(x.shape[0]))
            pyro.sample("x", dist.Bernoulli(logits=z @ decoder).mask(seen).to_event(1), obs=x)

    return Case(model, gaussian_guide(), binary_data())


def hierarchical_case() -> Case:
    """Two latent sites, ``top`` -> ``bottom`` -> x, in a data plate called ``batch``; guide q(bottom | x) q(top |
    bottom)."""
    top_to_bottom, bottom_to_x = fixed(Z, 3, seed=6), fixed(3, D, seed=7)
    x_to_bottom, bottom_to_top = fixed(D, 3, seed=8), fixed(3, Z, seed=9)

    def model(x):
        with pyro.plate("batch", x.shape[0]):
            top = pyro.sample("top", standard_normal_prior(x.shape[0]))
            bottom = pyro.sample("bottom", dist.Normal(top @ top_to_bottom, 0.8).to_event(1))
            pyro.sample("x", dist.Normal(bottom @ bottom_to_x, 0.5).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("batch", x.shape[0]):
            bottom = pyro.sample("bottom", dist.Normal(x @ x_to_bottom, 0.6).to_event(1))
            pyro.sample("top", dist.Normal(bottom @ bottom_to_top, 0.7).to_event(1))

    return Case(model, guide, normal_data())


def pixel_plate_inside_case(x: torch.Tensor | None = None) -> Case:
    """A per-pixel plate at dim -2 nested in the data plate at dim -1: the pixel sites have batch shape (D, B), so the
    model observes ``x.T``. Logits broadcast against the pixel plate: ``(z * W^T[:, None, :]).sum(-1)`` is (D, B) for
    ``z`` (B, Z) and (S, D, B) for ``z`` (S, 1, B, Z) in the importance-sample plate."""
    decoder_t = fixed(Z, D, seed=1).T.unsqueeze(-2)  # (D, 1, Z)
    x = binary_data() if x is None else x

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", standard_normal_prior(x.shape[0]))
            with pyro.plate("pixels", x.shape[1], dim=-2):
                pyro.sample("x", dist.Bernoulli(logits=(z * decoder_t).sum(-1)), obs=x.T)

    return Case(model, gaussian_guide(), x)


def data_plate_at_dim_2_case() -> Case:
    """The data plate (called ``images``) at dim -2 and a per-pixel plate at -1, with missing pixels masked out by
    ``poutine.mask`` inside the pixel plate. ``z`` has batch shape (B, 1)."""
    decoder, loc_weights = fixed(Z, D, seed=1), fixed(D, Z, seed=2)
    seen = fixed(B, D, seed=5) > -0.5

    def model(x):
        with pyro.plate("images", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[0], 1, Z]).to_event(1))
            with pyro.plate("pixels", x.shape[1], dim=-1), poutine.mask(mask=seen):
                pyro.sample("x", dist.Bernoulli(logits=(z @ decoder).squeeze(-2)), obs=x)

    def guide(x):
        with pyro.plate("images", x.shape[0], dim=-2):
            pyro.sample("z", dist.Normal((x @ loc_weights).unsqueeze(-2), 0.7).to_event(1))

    return Case(model, guide, binary_data())


def integer_observations_case() -> Case:
    """Observations that are integers (a Categorical over 3 values per dimension, ``x`` of dtype long), and a
    per-example ``pyro.factor`` on the latent."""
    decoder, loc_weights = fixed(Z, D * 3, seed=1), fixed(D, Z, seed=2)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", standard_normal_prior(x.shape[0]))
            pyro.factor("penalty", -0.5 * z.pow(2).sum(-1))
            logits = (z @ decoder).reshape(z.shape[:-1] + (D, 3))
            pyro.sample("x", dist.Categorical(logits=logits).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.to(loc_weights) @ loc_weights, 0.7).to_event(1))

    return Case(model, guide, torch.randint(0, 3, (B, D), generator=torch.Generator().manual_seed(17)))


MASK_CASES = {
    "poutine_mask": poutine_mask_case,
    "obs_mask": obs_mask_case,
    "distribution_mask": distribution_mask_case,
    "missing_pixels": missing_pixels_case,
}
STRUCTURE_CASES = {
    "hierarchical_top_bottom": hierarchical_case,
    "pixel_plate_inside_data_plate": pixel_plate_inside_case,
    "data_plate_at_dim_-2": data_plate_at_dim_2_case,
    "integer_observations_and_a_factor": integer_observations_case,
}
CASES = MASK_CASES | STRUCTURE_CASES


def one_particle(estimator):
    """``elbo`` with one particle, or IWAE with k = 1 (the same quantity)."""
    if estimator == "elbo":
        return lambda model, guide, x, **options: elbo(model, guide, x, num_particles=1, **options)
    return lambda model, guide, x, **options: iwae_log_likelihood(model, guide, x, k=1, **options)


def same_seed_pair(case: Case, estimate, seed: int = 1) -> tuple[float, float]:
    """(ours, Pyro's) ELBO summed over the examples, from the same seed, after checking that both drew the same
    latent values (ours carry a leading importance-sample dimension of size 1)."""
    recorder = DrawRecorder()
    guide = recorder(case.guide)
    pyro.set_rng_seed(seed)
    ours = estimate(case.model, guide, case.x, y=case.y).per_example.sum().item()
    our_draws = recorder.calls[-1]
    pyro.set_rng_seed(seed)
    theirs = -Trace_ELBO().loss(case.model, guide, case.x, *case.args)
    their_draws = recorder.calls[-1]
    assert our_draws.keys() == their_draws.keys()
    for name, value in their_draws.items():
        assert our_draws[name].numel() == value.numel(), name
        assert torch.equal(our_draws[name].flatten(), value.flatten()), f"the runs drew different values of {name!r}"
    return ours, theirs


@pytest.mark.parametrize("estimator", ["elbo", "iwae_k1"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_one_particle_equals_trace_elbo_on_the_same_draws(name, estimator):
    ours, theirs = same_seed_pair(CASES[name](), one_particle(estimator))
    assert ours == pytest.approx(theirs, abs=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_many_particles_agree_with_trace_elbo_within_standard_errors(name):
    case = CASES[name]()
    runs, particles = 200, 2000
    theirs = torch.tensor([-Trace_ELBO().loss(case.model, case.guide, case.x, *case.args) for _ in range(runs)])
    ours = elbo(case.model, case.guide, case.x, num_particles=particles, y=case.y).per_example.sum().item()
    # both are averages of the same per-particle quantity: variance sigma^2 / runs and sigma^2 / particles
    se = theirs.std().item() * math.sqrt(1 / runs + 1 / particles)
    assert abs(ours - theirs.mean().item()) < 3 * se, (ours, theirs.mean().item(), se)


def test_masked_examples_contribute_nothing():
    """The per-example ELBO of a masked-out example is its latent terms alone: log p(z) - log q(z | x)."""
    case = poutine_mask_case()
    recorder = DrawRecorder()
    values = elbo(case.model, recorder(case.guide), case.x, num_particles=1).per_example
    z = recorder.calls[-1]["z"][0]
    loc_weights, scale = fixed(D, Z, seed=2), torch.tensor(GUIDE_SCALE)
    latent_terms = (dist.Normal(0.0, 1.0).log_prob(z) - dist.Normal(case.x @ loc_weights, scale).log_prob(z)).sum(-1)
    masked = ~torch.tensor(KEEP)
    torch.testing.assert_close(values[masked], latent_terms[masked], rtol=0, atol=1e-12)
    assert not torch.allclose(values[~masked], latent_terms[~masked])


def test_scaled_site_is_ignored_by_evaluation_but_scales_pyros_elbo():
    """``poutine.scale(scale=3)`` around the prior of ``z``: per-example values unchanged (evaluation estimates the
    true joint); Pyro's ELBO moves by exactly (3 - 1) log p(z) at the same draws."""
    plain, scaled = poutine_mask_case(), poutine_mask_case(prior_scale=3.0)
    for estimator in ("elbo", "iwae_k1"):
        pyro.set_rng_seed(2)
        expected = one_particle(estimator)(plain.model, plain.guide, plain.x).per_example
        pyro.set_rng_seed(2)
        torch.testing.assert_close(one_particle(estimator)(scaled.model, scaled.guide, scaled.x).per_example, expected)

    recorder = DrawRecorder()
    guide = recorder(plain.guide)
    pyro_elbos = []
    for case in (plain, scaled):
        pyro.set_rng_seed(3)
        pyro_elbos.append(-Trace_ELBO().loss(case.model, guide, case.x))
    assert torch.equal(recorder.calls[0]["z"], recorder.calls[1]["z"])
    log_prior = dist.Normal(0.0, 1.0).log_prob(recorder.calls[0]["z"]).sum().item()
    assert pyro_elbos[1] - pyro_elbos[0] == pytest.approx(2 * log_prior, abs=1e-9)
    ours, theirs = same_seed_pair(scaled, one_particle("elbo"), seed=3)
    assert theirs == pyro_elbos[1] and ours == pytest.approx(pyro_elbos[0], abs=1e-6)
    assert abs(log_prior) > 1.0  # the scale makes a visible difference


def channels_case(x: torch.Tensor) -> Case:
    """Every site inside two plates: ``data`` over the examples (dim -1) and ``channels`` (dim -2); ``x`` is
    (B, C, D), a latent ``z`` per example and channel."""
    decoder, loc_weights = fixed(Z, D, seed=1), fixed(D, Z, seed=2)

    def model(x):
        with pyro.plate("data", x.shape[0]), pyro.plate("channels", x.shape[1], dim=-2):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[1], x.shape[0], Z]).to_event(1))
            pyro.sample("x", dist.Normal(z @ decoder, 0.5).to_event(1), obs=x.transpose(0, 1))

    def guide(x):
        with pyro.plate("data", x.shape[0]), pyro.plate("channels", x.shape[1], dim=-2):
            pyro.sample("z", dist.Normal(x.transpose(0, 1) @ loc_weights, 0.6).to_event(1))

    return Case(model, guide, x)


def test_two_plates_of_as_many_entries_need_the_data_plate_named():
    """With as many channels as examples, both plates hold every site: refused without ``data_plate=``; named, the
    numbers are Pyro's, and example i's value depends on ``x[i]`` only (not on channel i)."""
    case = channels_case(fixed(4, 4, D, seed=12))
    with pytest.raises(InputError, match=r"several plates of 4 examples \(channels, data\): name the data plate"):
        elbo(case.model, case.guide, case.x, num_particles=1)

    def named(model, guide, x, **options):
        return elbo(model, guide, x, num_particles=1, data_plate="data", **options)

    ours, theirs = same_seed_pair(case, named)
    assert ours == pytest.approx(theirs, abs=1e-6)

    moved = case.x.clone()
    moved[0] += 1.0  # example 0, every channel
    pyro.set_rng_seed(4)
    before = elbo(case.model, case.guide, case.x, num_particles=1, data_plate="data").per_example
    pyro.set_rng_seed(4)
    after = elbo(case.model, case.guide, moved, num_particles=1, data_plate="data").per_example
    assert after[0] != before[0] and torch.equal(after[1:], before[1:])


def test_a_plate_that_holds_only_some_sites_is_not_a_candidate():
    """A pixel plate of as many entries as examples, around the observed site only, leaves no ambiguity."""
    case = pixel_plate_inside_case(x=(fixed(D, D, seed=12) > 0).to(torch.get_default_dtype()))
    ours, theirs = same_seed_pair(case, one_particle("elbo"))
    assert ours == pytest.approx(theirs, abs=1e-6)


def refusal_cases() -> dict[str, tuple[Case, str]]:
    """Programs that break the contract, with the part of the one-line message that names the fix."""
    decoder = fixed(Z, D, seed=1)
    guide = gaussian_guide()

    def likelihood(z, x):
        pyro.sample("x", dist.Normal(z @ decoder, 0.5).to_event(1), obs=x)

    def global_model(x):
        shift = pyro.sample("shift", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            likelihood(pyro.sample("z", standard_normal_prior(x.shape[0])) + shift, x)

    def global_guide(x):
        pyro.sample("shift", dist.Normal(0.0, 0.5))
        guide(x)

    def subsampled_model(x):
        with pyro.plate("data", x.shape[0], subsample_size=2) as index:
            likelihood(pyro.sample("z", standard_normal_prior(2)), x[index])

    def subsampled_guide(x):
        with pyro.plate("data", x.shape[0], subsample_size=2) as index:
            pyro.sample("z", dist.Normal(x[index] @ fixed(D, Z, seed=2), 0.6).to_event(1))

    def model_with_subsampled_pixels(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", standard_normal_prior(x.shape[0]))
            with pyro.plate("pixels", x.shape[1], subsample_size=2, dim=-2) as index:
                logits = (z * decoder.T[index].unsqueeze(-2)).sum(-1)  # (2, B), or (S, 2, B) under importance samples
                pyro.sample("x", dist.Normal(logits, 0.5), obs=x[:, index].T)

    def model_with_unguided_site(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", standard_normal_prior(x.shape[0]))
            noise = pyro.sample("noise", dist.Normal(0.0, 1.0))
            likelihood(z + noise.unsqueeze(-1), x)

    def model_without_observation(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", standard_normal_prior(x.shape[0]))

    x = normal_data()
    return {
        "global_latent": (Case(global_model, global_guide, x), r"'shift' lie outside it.*pyro\.plate\('data'"),
        "subsampled_data_plate": (
            Case(subsampled_model, subsampled_guide, x),
            r"subsamples 2 of 5: .*pyro\.plate\('data', x\.shape\[0\]\) without subsample_size",
        ),
        "subsampled_pixel_plate": (
            Case(model_with_subsampled_pixels, guide, x),
            r"the plate 'pixels' subsamples 2 of 4: .*pyro\.plate\('pixels', 4\) without subsample_size",
        ),
        "unguided_model_latent": (
            Case(model_with_unguided_site, guide, x),
            r"the model samples 'noise' but the guide does not",
        ),
        "no_observed_site": (Case(model_without_observation, guide, x), r"no observed site: pass the data as obs=x"),
        "zero_examples": (Case(poutine_mask_case().model, guide, torch.zeros(0, D)), r"x holds no examples"),
        "labels_of_the_wrong_length": (
            Case(obs_mask_case().model, obs_mask_case().guide, x, y=torch.zeros(B + 1, dtype=torch.long)),
            r"shape \(6,\), expected \(5,\): one label per example",
        ),
    }


@pytest.mark.parametrize("name", sorted(refusal_cases()))
def test_contract_breaks_are_refused_in_one_line_naming_the_fix(name):
    case, fix = refusal_cases()[name]
    for estimate in (elbo, iwae_log_likelihood):
        with pytest.raises(InputError, match=fix) as error:
            estimate(case.model, case.guide, case.x, y=case.y)
        assert "\n" not in str(error.value)


def test_extra_arguments_are_sliced_per_example_and_passed_unchanged_otherwise():
    """``model(x, y, seen, decoder, noise)``: labels ``y`` (N,) and a pixel mask ``seen`` (N, D) go with their
    examples when the evaluation batches them; ``decoder`` (Z, D) and ``noise`` (a float) go to every batch as they
    are. With a point-mass guide at z0 = x A + E[y], log w = log p(z0) + sum over seen pixels of log p(x | z0, y)
    exactly, whatever the batching."""
    n = 7
    x, y = fixed(n, D, seed=13), torch.tensor([0, 2, 1, 2, 0, 1, 1])
    seen = fixed(n, D, seed=14) > -0.3
    loc_weights, label_codes, label_effect = fixed(D, Z, seed=2), fixed(3, Z, seed=15), fixed(3, D, seed=16)

    def model(x, y, seen, decoder, noise):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", standard_normal_prior(x.shape[0]))
            loc = z @ decoder + label_effect[y]
            pyro.sample("x", dist.Normal(loc, noise).mask(seen).to_event(1), obs=x)

    def guide(x, y, seen, decoder, noise):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(x @ loc_weights + label_codes[y]).to_event(1))

    decoder, noise = fixed(Z, D, seed=1), 0.5
    z0 = x @ loc_weights + label_codes[y]
    expected = dist.Normal(0.0, 1.0).log_prob(z0).sum(-1) + (
        dist.Normal(z0 @ decoder + label_effect[y], noise).log_prob(x) * seen
    ).sum(-1)
    args = (y, seen, decoder, noise)
    for batch_size in (n, 3, 2):
        for estimate in (elbo, iwae_log_likelihood):
            values = estimate(model, guide, x, 4, batch_size=batch_size, args=args).per_example
            torch.testing.assert_close(values, expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- which latent sites a site's distribution depends on


def two_site_guide(link=None, *, masked: bool = False, own_noise: bool = False):
    """q(u | x) q(s | x, link(u)): ``link=None`` is mean field. ``masked``: q(s | ...) masked out everywhere with
    ``Distribution.mask(False)``; ``own_noise``: the guide adds noise of its own (torch's RNG, not a sample site) to the
    loc of s, as dropout would."""
    x_to_u, x_to_s = fixed(D, Z, seed=20), fixed(D, Z, seed=21)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            u = pyro.sample("u", dist.Normal(x @ x_to_u, 0.8).to_event(1))
            loc = x @ x_to_s + (0.0 if link is None else link(u))
            if own_noise:
                loc = loc + 0.1 * torch.randn_like(loc)
            q_s = dist.Normal(loc, 0.7).to_event(1)
            pyro.sample("s", q_s.mask(False) if masked else q_s)

    return guide


def two_site_model(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("u", standard_normal_prior(x.shape[0]))
        s = pyro.sample("s", standard_normal_prior(x.shape[0]))
        pyro.sample("x", dist.Normal(s @ fixed(Z, D, seed=1), 0.5).to_event(1), obs=x)


def parents_of(program, guide, model=two_site_model, x=None, num_samples: int = 4):
    """``latent_parents(program, ...)`` on a fresh importance trace of ``guide``, checking that it leaves the RNG."""
    x = normal_data() if x is None else x
    guide_trace, _, sites = importance_traces(model, guide, x, num_samples)
    state = torch.get_rng_state()
    parents = latent_parents(program, guide_trace, x, sites=sites)
    assert torch.equal(torch.get_rng_state(), state)
    return parents


def weights() -> torch.Tensor:
    return fixed(Z, Z, seed=22)


LINKS = {
    "linear": lambda u: u @ weights(),
    # the sign of u: a comparison, so the autograd graph from u to q(s | u) is cut
    "through a comparison": lambda u: (u > 0).to(u.dtype) @ weights(),
    # an index computed from u: no gradient path either
    "through an index": lambda u: weights()[(u[..., 0] > 0).long()],
}


@pytest.mark.parametrize("link", sorted(LINKS))
def test_latent_parents_see_dependence_through_any_operation(link):
    guide = two_site_guide(LINKS[link])
    assert parents_of(guide, guide) == {"u": (), "s": ("u",)}


def test_latent_parents_of_a_mean_field_guide_are_none_even_with_noise_of_its_own():
    """Noise drawn with torch's RNG inside the guide (dropout) is the same in every replay: no false dependence."""
    for own_noise in (False, True):
        guide = two_site_guide(own_noise=own_noise)
        assert parents_of(guide, guide) == {"u": (), "s": ()}


def test_latent_parents_see_a_masked_out_site_and_the_model_side():
    guide = two_site_guide(LINKS["linear"], masked=True)
    assert parents_of(guide, guide) == {"u": (), "s": ("u",)}
    case = hierarchical_case()
    assert parents_of(case.model, case.guide, model=case.model) == {"bottom": ("top",), "top": ()}
    assert parents_of(case.guide, case.guide, model=case.model) == {"bottom": (), "top": ("bottom",)}


def test_latent_parents_see_a_discrete_parent():
    """q(c | x) Categorical, q(z | c) = N(codes[c], 1): an integer parent, which has no gradient to follow."""
    classifier, codes = fixed(D, 3, seed=23), fixed(3, Z, seed=24)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Categorical(logits=torch.zeros(3)))
            z = pyro.sample("z", standard_normal_prior(x.shape[0]))
            pyro.sample("x", dist.Normal(z @ fixed(Z, D, seed=1), 0.5).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(logits=0.1 * x @ classifier))
            pyro.sample("z", dist.Normal(codes[c], 1.0).to_event(1))

    assert parents_of(guide, guide, model=model) == {"c": (), "z": ("c",)}
    assert parents_of(model, guide, model=model) == {"c": (), "z": ()}


def test_latent_parents_count_every_site_when_nothing_can_be_shifted():
    """One draw of one example: no shift reveals anything, so each site counts as depending on the other."""
    guide = two_site_guide()
    parents = parents_of(guide, guide, x=normal_data()[:1], num_samples=1)
    assert parents == {"u": ("s",), "s": ("u",)}
