"""Tests for the training objectives: IWAE (RenyiELBO, alpha=0), beta and KL warm-up through a latent-site scale.

Limit identities are checked by exact replay with the same seed in float64 (IWAE at K=1 is the ELBO; beta=1 is the
plain objective), bounds on average over many seeds (IWAE_K >= ELBO), the beta term against the closed-form KL, and
the warm-up schedules against their formulas, including what the trainer feeds a compiled (jit) step.
"""

import json
import math

import pyro
import pytest
import torch
from pyro.distributions import Normal
from pyro.distributions.kl import kl_divergence
from pyro.infer import Trace_ELBO

from ppl_vae.cli import main
from ppl_vae.config import ModelConfig, RunConfig, TrainConfig
from ppl_vae.data import Dataset, binarize_fixed, load_dataset
from ppl_vae.errors import InputError
from ppl_vae.evaluate import elbo
from ppl_vae.objectives import ANNEALING, latent_scale, make_step
from ppl_vae.run import model_config_for
from ppl_vae.train import fit
from ppl_vae.vae import VAE


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture
def vae(digits):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    return VAE(model_config_for(digits, z_dim=4, hidden=(32,))).double()


@pytest.fixture
def x(digits):
    return binarize_fixed(digits.x_train[:40], seed=1).double()


def loss_and_grads(step, vae, x, beta_t=None, seed=0):
    """``step.loss`` at ``beta_t`` and the gradient of every VAE weight, without an optimizer update."""
    vae.zero_grad(set_to_none=True)
    pyro.set_rng_seed(seed)
    loss = step.loss(x, beta_t=beta_t)
    loss.backward()
    return loss.item(), [parameter.grad.clone() for parameter in vae.parameters()]


def svi_loss_and_grads(step, vae, x, seed=0):
    """The SVI step's own estimator (``loss_and_grads`` of its ELBO: RenyiELBO has no ``differentiable_loss``) and the
    gradient of every VAE weight, without an optimizer update."""
    step.prepare(x)
    vae.zero_grad(set_to_none=True)
    pyro.set_rng_seed(seed)
    loss = step.elbo.loss_and_grads(step.model, step.guide, x)
    return loss, [parameter.grad.clone() for parameter in vae.parameters()]


def evaluate_loss(step, x):
    """The step's estimator of the loss on ``x`` without gradients (what ``SVI.evaluate_loss`` computes)."""
    step.prepare(x)
    with torch.no_grad():
        return step.elbo.loss(step.model, step.guide, x)


JIT_DEPRECATED = pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:FutureWarning")
"""The ``jit`` objective is Pyro's JitTrace_ELBO, built on torch.jit.trace, which torch now flags as deprecated."""


# ---------------------------------------------------------------- IWAE


def test_iwae_with_one_particle_is_the_elbo_exactly(vae, x):
    iwae = make_step(vae, TrainConfig(elbo="iwae", num_particles=1))
    trace = make_step(vae, TrainConfig(elbo="trace", num_particles=1))
    for seed in range(3):
        iwae_loss, iwae_grads = svi_loss_and_grads(iwae, vae, x, seed=seed)
        trace_loss, trace_grads = svi_loss_and_grads(trace, vae, x, seed=seed)
        assert iwae_loss == pytest.approx(trace_loss, rel=1e-12)
        for a, b in zip(iwae_grads, trace_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_iwae_with_one_particle_is_the_elbo_in_expectation(vae, x):
    iwae = make_step(vae, TrainConfig(elbo="iwae", num_particles=1))
    repeats = 200
    values = []
    for seed in range(repeats):
        pyro.set_rng_seed(seed)
        values.append(-evaluate_loss(iwae, x) / x.shape[0])
    values = torch.tensor(values)
    particles = 2000
    reference = elbo(vae.model, vae.guide, x, num_particles=particles).mean
    # a single-sample batch ELBO has standard deviation values.std(); the reference averages `particles` of them
    se = values.std().item() * math.sqrt(1 / repeats + 1 / particles)
    assert abs(values.mean().item() - reference) < 4 * se


def test_iwae_bound_is_above_the_elbo_on_average(vae, x):
    """E[IWAE_K] >= E[ELBO] (Burda et al. 2015, Theorem 1); for an untrained guide the gap is many standard errors."""
    iwae = make_step(vae, TrainConfig(elbo="iwae", num_particles=10))
    trace = Trace_ELBO(num_particles=10, vectorize_particles=True, max_plate_nesting=1)
    gaps = []
    for seed in range(60):
        pyro.set_rng_seed(seed)
        iwae_loss = evaluate_loss(iwae, x)
        pyro.set_rng_seed(10_000 + seed)
        gaps.append((trace.loss(vae.model, vae.guide, x) - iwae_loss) / x.shape[0])  # IWAE - ELBO, nats
    gaps = torch.tensor(gaps)
    se = gaps.std().item() / math.sqrt(len(gaps))
    assert gaps.mean().item() > 0.1
    assert gaps.mean().item() > 5 * se


def test_iwae_trains_on_a_conditional_vae(digits):
    pyro.clear_param_store()
    small = Dataset(
        "small", digits.x_train[:128], digits.x_test[:64], digits.y_train[:128], digits.y_test[:64], (1, 8, 8)
    )
    vae = VAE(model_config_for(small, conditional=True, z_dim=2, hidden=(16,)))
    history = fit(vae, small, TrainConfig(elbo="iwae", num_particles=3, epochs=2, batch_size=64), progress=False)
    assert all(math.isfinite(record["train_elbo"]) for record in history)


# ---------------------------------------------------------------- beta


@JIT_DEPRECATED
@pytest.mark.parametrize("name", ["trace", "meanfield", "jit"])
def test_beta_one_is_the_plain_objective(vae, x, name):
    """The scaled program at beta_t = 1 gives the same loss and gradients as the plain one, for the same seed."""
    assert not make_step(vae, TrainConfig(elbo=name, beta=1.0)).latent_scaled
    plain = make_step(vae, TrainConfig(elbo=name))
    config = TrainConfig(elbo=name, anneal="linear", anneal_epochs=2)
    scaled = make_step(vae, config)
    assert scaled.latent_scaled and latent_scale(config, 2.0) == 1.0
    for seed in range(2):
        plain_loss, plain_grads = loss_and_grads(plain, vae, x, seed=seed)
        scaled_loss, scaled_grads = loss_and_grads(scaled, vae, x, beta_t=latent_scale(config, 2.0), seed=seed)
        assert scaled_loss == pytest.approx(plain_loss, rel=1e-13)
        for a, b in zip(scaled_grads, plain_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_beta_multiplies_the_closed_form_kl(vae, x):
    """meanfield: loss(beta) - loss(1) = (beta - 1) sum_b KL(q(z | x_b) || N(0, I)) at the same seed; the decoder,
    which the KL does not touch, gets the same gradient."""
    step = make_step(vae, TrainConfig(elbo="meanfield", beta=3.0))
    loss_1, grads_1 = loss_and_grads(step, vae, x, beta_t=1.0, seed=5)
    loss_3, grads_3 = loss_and_grads(step, vae, x, beta_t=3.0, seed=5)
    with torch.no_grad():
        loc, std = vae.encode(x)
        kl = kl_divergence(Normal(loc, std), Normal(0.0, 1.0)).sum().item()
    assert loss_3 - loss_1 == pytest.approx(2.0 * kl, rel=1e-10)
    names = [name for name, _ in vae.named_parameters()]
    for name, a, b in zip(names, grads_1, grads_3, strict=True):
        if name.startswith("decoder."):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        elif name.startswith("encoder."):
            assert not torch.allclose(a, b)


def test_iwae_refuses_beta_and_annealing(vae):
    for options in ({"beta": 4.0}, {"anneal": "linear"}):
        with pytest.raises(InputError, match="--elbo iwae cannot take --beta .* logsumexp"):
            make_step(vae, TrainConfig(elbo="iwae", **options))


@pytest.mark.parametrize("name", ["reference-mc", "reference-analytic"])
def test_reference_steps_refuse_beta(vae, name):
    with pytest.raises(InputError, match=f"--elbo {name} takes no --beta/--anneal"):
        make_step(vae, TrainConfig(elbo=name, beta=2.0))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"beta": 0.0}, "--beta must be a positive number"),
        ({"beta": -1.0}, "--beta must be a positive number"),
        ({"beta": float("nan")}, "--beta must be a positive number"),
        ({"beta": "4"}, "--beta must be a positive number"),
        ({"anneal_epochs": 0}, "--anneal-epochs must be an integer >= 1"),
    ],
)
def test_bad_beta_and_anneal_are_input_errors(options, message):
    with pytest.raises(InputError, match=message):
        TrainConfig(**options)


def test_old_config_files_still_load():
    config = RunConfig(model=ModelConfig(x_dim=64, image_shape=(1, 8, 8)))
    raw = json.loads(config.to_json())
    for key in ("beta", "anneal", "anneal_epochs"):
        del raw["train"][key]
    del raw["model"]["num_classes"]
    assert RunConfig.from_json(json.dumps(raw)) == config


def test_cli_refuses_iwae_with_annealing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--elbo", "iwae", "--anneal", "linear", "--epochs", "1", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("ppl-vae: error: --elbo iwae cannot take") and "\n" not in error
    assert not out.exists()


# ---------------------------------------------------------------- warm-up schedules


def test_linear_warm_up_ramps_from_zero_to_one_then_stays():
    config = TrainConfig(anneal="linear", anneal_epochs=4)
    times = [0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.5, 100.0]
    assert [latent_scale(config, t) for t in times] == [0.0, 0.125, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    beta = TrainConfig(beta=4.0, anneal="linear", anneal_epochs=4)
    assert [latent_scale(beta, t) for t in times] == [0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 4.0, 4.0]


def test_cyclical_warm_up_repeats_every_cycle():
    config = TrainConfig(anneal="cyclical", anneal_epochs=4)
    first_cycle = [latent_scale(config, t) for t in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 3.5)]
    assert first_cycle == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    times = torch.linspace(0, 4, 41, dtype=torch.float64).tolist()
    for cycle in (1, 2, 7):
        assert [latent_scale(config, t + 4 * cycle) for t in times[:-1]] == pytest.approx(
            [latent_scale(config, t) for t in times[:-1]], abs=1e-12
        )
    assert latent_scale(config, 4.0) == 0.0 and latent_scale(config, 8.0) == 0.0


def test_no_annealing_is_constant_beta():
    assert ANNEALING.get("none")(0.0) == ANNEALING.get("none")(3.7) == 1.0
    assert latent_scale(TrainConfig(beta=2.5), 0.0) == 2.5


@JIT_DEPRECATED
def test_trainer_feeds_the_schedule_to_every_step(digits, monkeypatch):
    """Each minibatch's beta_t is the schedule at the fraction of training done before it; the history records the
    epoch's last one."""
    seen = []

    def recording_make_step(programs, config, **options):
        step = make_step(programs, config, **options)
        call = step.__call__

        class Recorder:
            fixed_batch_shape = step.fixed_batch_shape
            latent_scaled = step.latent_scaled
            state_dict = step.state_dict
            load_state_dict = step.load_state_dict

            def __call__(self, x, *args, beta_t=None):
                seen.append(beta_t)
                return call(x, *args, beta_t=beta_t)

        return Recorder()

    monkeypatch.setattr("ppl_vae.train.make_step", recording_make_step)
    pyro.clear_param_store()
    small = Dataset("small", digits.x_train[:256], digits.x_test[:32], None, None, (1, 8, 8))
    vae = VAE(model_config_for(small, z_dim=2, hidden=(16,)))
    config = TrainConfig(epochs=3, batch_size=64, anneal="linear", anneal_epochs=2, beta=2.0, elbo="jit")
    history = fit(vae, small, config, progress=False)
    expected = [2.0 * min(1.0, (step / 4) / 2) for step in range(12)]  # 4 minibatches per epoch
    assert seen == pytest.approx(expected, abs=1e-7)
    assert [record["latent_scale"] for record in history] == pytest.approx([expected[3], expected[7], expected[11]])


@JIT_DEPRECATED
def test_jit_takes_each_new_beta_without_recompiling(vae, x):
    """The compiled step sees every new beta_t (its loss equals the uncompiled one at that beta_t); it compiles once."""
    config = TrainConfig(elbo="jit", anneal="cyclical", anneal_epochs=2)
    jit = make_step(vae, config)
    eager = make_step(vae, TrainConfig(elbo="trace", anneal="cyclical", anneal_epochs=2))
    jit(x, beta_t=0.3)  # the first call compiles (running the programs more than once)
    losses = []
    for seed, epochs_done in enumerate([0.0, 0.25, 0.5, 1.0, 2.5]):
        beta_t = latent_scale(config, epochs_done)
        pyro.set_rng_seed(seed)
        with torch.no_grad():
            expected = eager.loss(x, beta_t=beta_t).item()
        pyro.set_rng_seed(seed)
        losses.append(jit(x, beta_t=beta_t))  # the loss before this step's update, at this beta_t
        assert losses[-1] == pytest.approx(expected, rel=1e-9)
    assert len(set(losses)) == len(losses)
    assert len(jit.elbo._loss_and_surrogate_loss.compiled) == 1


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--beta", "0"], "--beta must be a positive number, got 0.0"),
        (["--anneal", "cosine"], "--anneal: unknown annealing schedule 'cosine'"),
        (["--anneal", "linear", "--anneal-epochs", "0"], "--anneal-epochs must be an integer >= 1, got 0"),
    ],
)
def test_cli_names_a_bad_beta_or_schedule(tmp_path, capsys, flags, message):
    assert main(["train", *flags, "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"ppl-vae: error: {message}") and "\n" not in error
