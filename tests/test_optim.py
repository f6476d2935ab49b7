"""Optimizers, learning-rate schedules and per-group learning rates (ppl_vae.optim), through the training steps.

The schedules are checked against their formulas, and the rates the steps' optimizers actually use against them; a
group's parameters are checked to move by exactly ``-lr * factor * gradient`` under SGD (float64, same seed).
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from ppl_vae.config import TrainConfig
from ppl_vae.data import binarize_fixed
from ppl_vae.objectives import make_step
from ppl_vae.optim import OPTIMIZERS, group_factor, lr_factor, parameter_name
from ppl_vae.programs import UserProgram, as_user_program
from ppl_vae.vae import VAE

pytestmark = pytest.mark.usefixtures("float64")


def test_schedules_follow_their_formulas_and_stay_at_the_end():
    steps = [0, 5, 10, 15]
    assert [lr_factor("none", 0.1, 10)(t) for t in steps] == [1.0, 1.0, 1.0, 1.0]
    assert [lr_factor("exponential", 0.1, 10)(t) for t in steps] == pytest.approx([1.0, 0.1**0.5, 0.1, 0.1])
    assert [lr_factor("cosine", 0.1, 10)(t) for t in steps] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    assert lr_factor("cosine", 0.1, 10)(2) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * 0.2)) / 2)


def test_the_longest_matching_prefix_gives_the_factor():
    factors = (("decoder", 0.1), ("decoder.0", 0.5))
    assert group_factor(factors, "decoder.0.weight") == 0.5
    assert group_factor(factors, "decoder.2.bias") == 0.1
    assert group_factor(factors, "decoder") == 0.1
    assert group_factor(factors, "decoder2.bias") == 1.0
    assert group_factor(factors, "encoder.net.0.weight") == 1.0


def user_programs():
    """A user's Bernoulli VAE whose pyro.module names are the keys of its modules dict."""
    torch.manual_seed(0)
    encoder, decoder = nn.Linear(64, 8), nn.Linear(4, 64)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(4), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        loc, log_scale = encoder(x).split(4, dim=-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return UserProgram(model, guide, {"encoder": encoder, "decoder": decoder})


@pytest.fixture
def x(digits):
    return binarize_fixed(digits.x_train[:32], seed=1).double()


@pytest.mark.parametrize(("which", "elbo"), [("vae", "trace"), ("vae", "reference-mc"), ("user", "trace")])
def test_each_group_moves_with_its_own_learning_rate(small_config, x, which, elbo):
    """SGD: theta' = theta - lr * factor(name) * gradient, with factor 0.25 for the decoder and 1 for the encoder
    (names without the VAE's process-specific Pyro prefix; a user's dotted pyro.module names)."""
    programs = as_user_program(VAE(small_config).double()) if which == "vae" else user_programs()
    modules = programs.modules
    config = TrainConfig(optim="sgd", lr=0.1, elbo=elbo, lr_factors={"decoder": 0.25})
    step = make_step(programs, config)
    before = {name: p.detach().clone() for name, p in modules.named_parameters()}
    pyro.set_rng_seed(3)
    step.loss(x).backward()
    grads = {name: p.grad.clone() for name, p in modules.named_parameters()}
    modules.zero_grad(set_to_none=True)
    pyro.set_rng_seed(3)
    step(x)
    for name, parameter in modules.named_parameters():
        factor = 0.25 if name.startswith("decoder.") else 1.0
        torch.testing.assert_close(parameter.detach(), before[name] - 0.1 * factor * grads[name], rtol=1e-9, atol=1e-12)
    assert all(not torch.equal(p, before[name]) for name, p in modules.named_parameters())


@pytest.mark.parametrize("elbo, path", [("trace", "plain"), ("trace", "fast"), ("reference-mc", "auto")])
@pytest.mark.parametrize("schedule", ["exponential", "cosine"])
def test_every_update_uses_the_scheduled_rate(small_config, x, elbo, path, schedule):
    """After k updates the optimizers hold lr * factor * schedule(k), past the horizon too."""
    vae = VAE(small_config).double()
    config = TrainConfig(
        lr=0.01, elbo=elbo, lr_schedule=schedule, lr_decay=0.2, lr_horizon=4, lr_factors={"decoder": 0.5}, path=path
    )
    step = make_step(vae, config)
    schedule_factor = lr_factor(schedule, 0.2, 4)
    for k in range(1, 7):
        step(x)
        if path == "plain":  # Pyro: one optimizer (in a scheduler) per parameter
            store = pyro.get_param_store()
            rates = {
                parameter_name(store.param_name(p), vae.pyro_name): scheduler.optimizer.param_groups[0]["lr"]
                for p, scheduler in step.optim.optim_objs.items()
            }
        else:  # the fast path and the hand-written steps: one torch optimizer, a group per factor
            rates = {
                name: group["lr"]
                for group in step.optimizer.param_groups
                for name, p in vae.named_parameters()
                if any(p is q for q in group["params"])
            }
        assert len(rates) == len(list(vae.parameters()))
        for name, rate in rates.items():
            factor = 0.5 if name.startswith("decoder.") else 1.0
            assert rate == pytest.approx(0.01 * factor * schedule_factor(k), rel=1e-12), (k, name)


@pytest.mark.parametrize("optim", sorted(OPTIMIZERS))
def test_every_optimizer_lowers_the_loss(small_config, x, optim):
    vae = VAE(small_config).double()
    step = make_step(vae, TrainConfig(optim=optim, lr=1e-3 if optim == "sgd" else 1e-2, num_particles=4))
    losses = [step(x) for _ in range(20)]
    assert all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-5:]) < sum(losses[:5])
