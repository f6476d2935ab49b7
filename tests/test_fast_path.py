"""The fast training path (``TrainConfig.path``) takes the same updates as the plain SVI path: the same seed gives
the same curve and weights (float64, small nets, 2 epochs), for the built-in VAE and users' programs (masks, several
latent sites, labels), every Pyro objective, schedules and per-group rates; a checkpoint of either path resumes on
the other; one optimizer over all parameters steps as Pyro's optimizer per parameter does."""

import copy

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.optim.clipped_adam import ClippedAdam
from small_digits import float64_digits
from torch import nn

from ppl_vae.config import TrainConfig
from ppl_vae.errors import InputError
from ppl_vae.objectives import FastStep, GraphStep, SVIStep, make_step
from ppl_vae.optim import OPTIMIZERS, load_per_parameter_state, per_parameter_state
from ppl_vae.programs import UserProgram
from ppl_vae.run import model_config_for
from ppl_vae.train import fit, seed_everything
from ppl_vae.vae import VAE

pytestmark = pytest.mark.usefixtures("float64")


@pytest.fixture
def data(digits):
    """200 training and 50 test digits in float64 (the last minibatch of 64 is short: 8 images)."""
    return float64_digits(digits, 200, 50)


def train_vae(data, run_dir=None, resume=False, **train):
    """A VAE (z_dim 3, hidden 16) built with seed 0 and trained by ``fit``; its history and final weights."""
    seed_everything(0)
    vae = VAE(model_config_for(data, z_dim=3, hidden=(16,)))
    config = TrainConfig(**{"epochs": 2, "eval_particles": 3, **train})
    history = fit(vae, data, config, run_dir=run_dir, resume=resume, progress=False)
    return history, {key: value.clone() for key, value in vae.state_dict().items()}


def assert_same_run(first, second, rtol=1e-9):
    (history_a, weights_a), (history_b, weights_b) = first, second
    for a, b in zip(history_a, history_b, strict=True):
        for key in ("train_elbo", "test_elbo", "test_elbo_se", "latent_scale"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=rtol), key
    for key, value in weights_a.items():
        torch.testing.assert_close(value, weights_b[key], rtol=rtol, atol=1e-12)


@pytest.mark.parametrize(
    "options",
    [
        {"elbo": "trace"},
        {"elbo": "meanfield", "optim": "adamw"},
        {"elbo": "iwae", "num_particles": 3},
        {"elbo": "stl", "optim": "clipped-adam"},
        {"elbo": "tracegraph", "optim": "sgd", "lr": 0.01},
        {"elbo": "trace", "beta": 2.0, "anneal": "linear", "anneal_epochs": 2, "lr_schedule": "cosine"},
        {"elbo": "trace", "lr_factors": {"decoder": 0.1, "encoder.net.0": 3.0}, "lr_schedule": "exponential"},
    ],
    ids=["trace", "meanfield-adamw", "iwae", "stl-clipped", "tracegraph-sgd", "anneal-cosine", "factors"],
)
def test_the_fast_path_gives_the_plain_paths_curve(data, options):
    fast = train_vae(data, path="fast", **options)
    plain = train_vae(data, path="plain", **options)
    assert_same_run(fast, plain)
    # and the curve depends on the seed: the comparison sees the draws
    other = train_vae(data, path="fast", seed=1, **options)
    assert other[0][-1]["train_elbo"] != pytest.approx(fast[0][-1]["train_elbo"], rel=1e-6)


def test_auto_takes_the_graph_tier_for_pyro_objectives_and_leaves_hand_written_steps_as_they_are(digits):
    vae = VAE(model_config_for(digits, z_dim=2, hidden=(8,)))
    assert isinstance(make_step(vae, TrainConfig()), GraphStep)
    assert type(make_step(vae, TrainConfig(path="fast"))) is FastStep
    assert isinstance(make_step(vae, TrainConfig(path="plain")), SVIStep)
    assert not isinstance(make_step(vae, TrainConfig(elbo="reference-mc")), FastStep | SVIStep)
    for path in ("fast", "graph"):
        with pytest.raises(InputError, match=f"--path {path} applies to the Pyro objectives; --elbo reference-mc"):
            make_step(vae, TrainConfig(elbo="reference-mc", path=path))
    with pytest.raises(InputError, match="--path must be one of auto, graph, fast, plain, got 'quick'"):
        TrainConfig(path="quick")


@pytest.mark.parametrize("first, second", [("plain", "fast"), ("fast", "plain"), ("plain", "graph")])
def test_a_checkpoint_of_one_path_resumes_on_the_other(data, tmp_path, first, second):
    """Schedule and per-group rates included: the optimizer's moments and the schedule cross in Pyro's format."""
    options = {"lr_schedule": "cosine", "lr_factors": {"decoder": 0.5}, "lr_horizon": 8}
    whole = train_vae(data, path=first, **options)
    pyro.clear_param_store()
    train_vae(data, run_dir=tmp_path, path=first, **{**options, "epochs": 1})
    pyro.clear_param_store()
    resumed = train_vae(data, run_dir=tmp_path, resume=True, path=second, **options)
    assert_same_run(resumed, whole)


def masked_two_site_program(x_dim: int, classes: int = 10) -> UserProgram:
    """A conditional program with two latent sites (z2 -> z1 -> x), labels, and a per-pixel mask that hides the
    first 16 pixels (``Distribution.mask``). The prior's scale of z1 is kept from 0 (softplus + 0.05): with exp, an
    untrained network's tiny scales put the test ELBO near -1e10 and training diverges from there."""
    nets = nn.ModuleDict(
        {
            "encoder": nn.Sequential(nn.Linear(x_dim + classes, 16), nn.ReLU(), nn.Linear(16, 4)),
            "top": nn.Linear(1, 4),
            "bottom": nn.Linear(2, 2),
            "decoder": nn.Sequential(nn.Linear(2 + classes, 16), nn.ReLU(), nn.Linear(16, x_dim)),
        }
    )
    mask = torch.arange(x_dim) >= 16

    def model(x, y):
        pyro.module("nets", nets)
        onehot = nn.functional.one_hot(y, classes).to(x.dtype)
        with pyro.plate("batch", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(1), 1.0).to_event(1))
            loc, log_scale = nets["top"](z2).chunk(2, -1)
            z1 = pyro.sample("z1", dist.Normal(loc, nn.functional.softplus(log_scale) + 0.05).to_event(1))
            logits = nets["decoder"](torch.cat([z1, onehot.expand(*z1.shape[:-1], classes)], -1))
            pyro.sample("x", dist.Bernoulli(logits=logits).mask(mask).to_event(1), obs=x)

    def guide(x, y):
        pyro.module("nets", nets)
        onehot = nn.functional.one_hot(y, classes).to(x.dtype)
        with pyro.plate("batch", x.shape[0]):
            loc, log_scale = nets["encoder"](torch.cat([x, onehot], -1)).chunk(2, -1)
            z1 = pyro.sample("z1", dist.Normal(loc, log_scale.exp()).to_event(1))
            top_loc, top_log_scale = nets["bottom"](z1).chunk(2, -1)
            pyro.sample("z2", dist.Normal(top_loc, top_log_scale.exp()).to_event(1))

    return UserProgram(model, guide, nets, binary=True, labels=True)


@pytest.mark.parametrize("elbo", ["trace", "tracegraph"])
def test_a_users_masked_conditional_program_with_two_latent_sites_trains_alike_on_both_paths(data, elbo):
    runs = []
    for path in ("fast", "plain"):
        pyro.clear_param_store()
        seed_everything(0)
        program = masked_two_site_program(data.x_dim)
        config = TrainConfig(epochs=2, eval_particles=3, elbo=elbo, path=path, lr_factors={"nets.decoder": 0.5})
        history = fit(program, data, config, progress=False)
        runs.append((history, {key: value.clone() for key, value in program.modules.state_dict().items()}))
    assert_same_run(*runs)


def test_a_parameter_that_appears_after_the_first_update_joins_the_optimizer(data):
    """As Pyro's wrapper makes an optimizer for a parameter when it first meets it, the fast path adds it then."""
    runs = []
    for path in ("fast", "plain"):
        pyro.clear_param_store()
        seed_everything(0)
        vae = VAE(model_config_for(data, z_dim=2, hidden=(8,)))
        initial = vae.decoder[0].weight.detach().clone()

        def guide(x, vae=vae, initial=initial):
            pyro.module(vae.pyro_name, vae)
            loc, scale = vae.encode(x)
            if not torch.equal(vae.decoder[0].weight, initial):  # from the second update on
                loc = loc + pyro.param("shift", torch.zeros(2))
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

        program = UserProgram(vae.model, guide, vae, binary=True)
        fit(program, data, TrainConfig(epochs=1, eval_every=2, path=path), progress=False)
        runs.append(pyro.param("shift").detach().clone())
    assert runs[0].abs().max() > 0  # it trained
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_one_optimizer_over_all_parameters_steps_as_one_optimizer_per_parameter(name):
    """Adam, AdamW, SGD and ClippedAdam are elementwise: one instance over three tensors (torch's ``foreach`` code
    where it has one) and three single-tensor instances take the same steps from the same gradients; its state, in
    Pyro's per-parameter format, restores into a fresh one that then continues identically."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (3,), (2, 2, 2)]
    together = [torch.randn(shape, generator=generator, requires_grad=True) for shape in shapes]
    apart = [tensor.detach().clone().requires_grad_() for tensor in together]
    options = {} if OPTIMIZERS.get(name) is ClippedAdam else {"foreach": True}
    one = OPTIMIZERS.get(name)(together, lr=0.05, **options)
    several = [OPTIMIZERS.get(name)([tensor], lr=0.05) for tensor in apart]
    for _ in range(5):
        gradients = [torch.randn(shape, generator=generator) for shape in shapes]
        for tensors in (together, apart):
            for tensor, gradient in zip(tensors, gradients, strict=True):
                tensor.grad = gradient.clone()
        one.step()
        for optimizer in several:
            optimizer.step()
    for a, b in zip(together, apart, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        assert not torch.equal(a, torch.zeros_like(a))
    names = ["a", "b", "c"]
    saved = copy.deepcopy(per_parameter_state(one, None, names))  # as a checkpoint holds it: not shared
    for name_, optimizer in zip(names, several, strict=True):
        single = optimizer.state_dict()  # the same layout as Pyro's optimizer of that parameter
        assert {k: set(v) for k, v in saved[name_]["state"].items()} == {k: set(v) for k, v in single["state"].items()}
        assert saved[name_]["param_groups"] == single["param_groups"]
    restored_tensors = [tensor.detach().clone().requires_grad_() for tensor in together]
    restored = OPTIMIZERS.get(name)(restored_tensors, lr=0.05, **options)
    load_per_parameter_state(restored, None, names, saved)
    for tensors, optimizer in ((together, one), (restored_tensors, restored)):
        for tensor in tensors:
            tensor.grad = torch.ones_like(tensor)
        optimizer.step()
    for a, b in zip(together, restored_tensors, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("path", ["fast", "graph"])
def test_two_models_trained_in_turns_in_one_process_keep_their_own_parameters(digits, path):
    """Another model's parameters, registered between this step's updates and holding gradients of their own, do not
    join this step's optimizer (the benchmark's runners take turns in one process)."""
    x = torch.bernoulli(digits.x_train[:16].double())
    vaes = [VAE(model_config_for(digits, z_dim=2, hidden=(8,))) for _ in range(2)]
    steps = [make_step(vae, TrainConfig(path=path)) for vae in vaes]
    for _ in range(4):
        for step in steps:
            step(x)
    for vae, step in zip(vaes, steps, strict=True):
        held = {id(parameter) for group in step.optimizer.param_groups for parameter in group["params"]}
        assert held == {id(parameter) for parameter in vae.parameters()}
    assert all(getattr(step, "off", None) is None for step in steps)
