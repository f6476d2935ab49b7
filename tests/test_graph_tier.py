"""The compiled tier (``--path graph``, the default under ``auto``): the traced loss is the ELBO's (value and
gradients, masks and scales), the graph takes over after its checks and gives the fast path's curve to float
tolerance (float64) for the built-in VAE, users' programs (masks, labels, two latent sites), ``stl``, ``iwae``, β
warm-up and schedules, short last batches included; programs that a graph would freeze wrongly fall back to the fast
path with one warning and the fast path's numbers."""

import random

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from small_digits import float64_digits
from test_fast_path import assert_same_run, masked_two_site_program, train_vae
from torch import nn

from ppl_vae.config import TrainConfig
from ppl_vae.errors import InputError
from ppl_vae.graphs import CompiledLoss, compile_loss
from ppl_vae.objectives import GraphFallbackWarning, make_step
from ppl_vae.programs import UserProgram
from ppl_vae.run import model_config_for
from ppl_vae.train import fit, seed_everything
from ppl_vae.vae import VAE

pytestmark = pytest.mark.usefixtures("float64")


@pytest.fixture
def data(digits):
    """200 training and 50 test digits in float64 (the last minibatch of 64 is short: 8 images)."""
    return float64_digits(digits, 200, 50)


@pytest.fixture
def graph_runs(monkeypatch):
    """Counts the runs of traced graphs (checked runs included)."""
    calls = []
    original = CompiledLoss.__call__

    def counted(self, tensors):
        calls.append(len(tensors))
        return original(self, tensors)

    monkeypatch.setattr(CompiledLoss, "__call__", counted)
    return calls


# 3 epochs of 4 updates (3 of 64 images, 1 of 8): the first update is the fast path's; each shape's first two
# updates run the fast path and the graph (checks), the others the graph alone: 4 checked + 7 graph runs
GRAPH_RUNS_IN_THREE_EPOCHS = 11


@pytest.mark.parametrize(
    "options",
    [
        {"elbo": "trace"},
        {"elbo": "stl", "optim": "clipped-adam"},
        {"elbo": "iwae", "num_particles": 3},
        {"elbo": "trace", "num_particles": 2, "beta": 2.0, "anneal": "linear", "anneal_epochs": 2},
        {"elbo": "trace", "lr_factors": {"decoder": 0.1}, "lr_schedule": "cosine", "optim": "adamw"},
    ],
    ids=["trace", "stl-clipped", "iwae", "particles-anneal", "factors-cosine-adamw"],
)
def test_the_graph_tier_gives_the_fast_paths_curve(data, graph_runs, options):
    graph = train_vae(data, path="graph", epochs=3, **options)
    assert len(graph_runs) == GRAPH_RUNS_IN_THREE_EPOCHS
    pyro.clear_param_store()
    assert_same_run(graph, train_vae(data, path="fast", epochs=3, **options))


def test_auto_compiles_and_gives_the_plain_paths_curve(data, graph_runs):
    auto = train_vae(data, epochs=3)
    assert len(graph_runs) == GRAPH_RUNS_IN_THREE_EPOCHS
    pyro.clear_param_store()
    assert_same_run(auto, train_vae(data, path="plain", epochs=3))


def test_a_users_masked_conditional_program_with_two_latent_sites_trains_alike_compiled(data, graph_runs):
    runs = []
    for path in ("graph", "fast"):
        pyro.clear_param_store()
        seed_everything(0)
        program = masked_two_site_program(data.x_dim)
        config = TrainConfig(epochs=3, eval_every=3, path=path, beta=0.5, lr_factors={"nets.decoder": 0.5})
        history = fit(program, data, config, progress=False)
        runs.append((history, {key: value.clone() for key, value in program.modules.state_dict().items()}))
    assert len(graph_runs) == GRAPH_RUNS_IN_THREE_EPOCHS
    assert_same_run(*runs)


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_the_traced_loss_is_trace_elbos_differentiable_loss_with_masks_and_scales(data, beta):
    """For reparameterized sites the surrogate is Trace_ELBO's differentiable loss: same value, same gradients, the
    same draws (the mask hides 16 pixels; beta scales both latent sites through the step's own scaling)."""
    program = masked_two_site_program(data.x_dim)
    step = make_step(program, TrainConfig(beta=beta))
    x, y = torch.bernoulli(data.x_train[:32]), data.y_train[:32]
    step.prepare(x, y)
    arguments = (x, *step._arguments(x, (y,), None))
    parameters = list(program.modules.parameters())
    with torch.random.fork_rng():
        compiled = compile_loss(step.elbo, step.model, step.guide, parameters, arguments)
    state = torch.get_rng_state()
    expected = Trace_ELBO(max_plate_nesting=1).differentiable_loss(step.model, step.guide, *arguments)
    gradients = torch.autograd.grad(expected, parameters)
    torch.set_rng_state(state)
    loss = compiled([*parameters, *arguments])
    assert loss == pytest.approx(expected.item(), rel=1e-12)
    for parameter, gradient in zip(parameters, gradients, strict=True):
        torch.testing.assert_close(parameter.grad, gradient, rtol=1e-12, atol=1e-12)
    # the simplified graph reads the live parameters: another value gives another loss
    with torch.no_grad():
        parameters[0].add_(0.5)
    torch.set_rng_state(state)
    assert compiled([*parameters, *arguments]) != pytest.approx(loss, rel=1e-6)


def unruly_program(x_dim: int, kind: str) -> UserProgram:
    """A VAE whose guide does what a graph cannot replay: ``item`` (a Python float of the data), ``random`` (Python's
    RNG), ``counter`` (a Python value that changes at every call)."""
    nets = nn.ModuleDict({"encoder": nn.Linear(x_dim, 4), "decoder": nn.Linear(2, x_dim)})
    calls = [0]

    def model(x):
        pyro.module("nets", nets)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=nets["decoder"](z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("nets", nets)
        loc, log_scale = nets["encoder"](x).chunk(2, -1)
        if kind == "item":
            factor = 1.0 + x.mean().item()
        elif kind == "random":
            factor = 1.0 + random.random()
        else:
            calls[0] += 1
            factor = 1.0 + calls[0] % 3
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, factor * log_scale.exp()).to_event(1))

    return UserProgram(model, guide, nets, binary=True)


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("item", "tracing the programs failed: RuntimeError: It appears that you're trying to get value out of a"),
        ("random", "the programs draw from Python's random or NumPy"),
        ("counter", "the traced graph's loss .* differs from the programs'"),
    ],
)
def test_programs_a_graph_would_freeze_fall_back_to_the_fast_path_once_with_its_numbers(data, kind, reason):
    runs = []
    for path in ("graph", "fast"):
        pyro.clear_param_store()
        seed_everything(0)
        program = unruly_program(data.x_dim, kind)
        config = TrainConfig(epochs=2, eval_every=2, eval_particles=3, path=path)
        if path == "graph":
            with pytest.warns(
                GraphFallbackWarning, match=f"compiled training tier is off for this run \\({reason}"
            ) as caught:
                history = fit(program, data, config, progress=False)
            assert len(caught) == 1
        else:
            history = fit(program, data, config, progress=False)
        runs.append((history, {key: value.clone() for key, value in program.modules.state_dict().items()}))
    if kind != "counter":  # tracing runs the guide once more, which moves the counter: the paths differ from there
        assert_same_run(*runs)


def test_path_graph_refuses_objectives_it_does_not_compile_and_auto_takes_the_fast_path_for_them(data):
    vae = VAE(model_config_for(data, z_dim=2, hidden=(8,)))
    x = torch.bernoulli(data.x_train[:16])
    step = make_step(vae, TrainConfig(elbo="tracegraph", path="graph"))
    with pytest.raises(InputError, match="--path graph compiles --elbo trace, stl and iwae; TraceGraph_ELBO is not"):
        step(x)
    step = make_step(vae, TrainConfig(elbo="meanfield"))
    step(x)
    step(x)
    assert step.off.startswith("TraceMeanField_ELBO is not compiled") and not step.graphs


def discrete_program(x_dim: int) -> UserProgram:
    """A mixture of two pixel means chosen by a discrete latent ``c`` (no reparameterized sampler)."""
    nets = nn.ModuleDict({"encoder": nn.Linear(x_dim, 1), "decoder": nn.Embedding(2, x_dim)})

    def model(x):
        pyro.module("nets", nets)
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(x.new_full((x.shape[0],), 0.5)))
            pyro.sample("x", dist.Bernoulli(logits=nets["decoder"](c.long())).to_event(1), obs=x)

    def guide(x):
        pyro.module("nets", nets)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Bernoulli(logits=nets["encoder"](x).squeeze(-1)))

    return UserProgram(model, guide, nets, binary=True)


def test_a_score_function_site_takes_the_fast_path_silently_under_auto_and_with_a_warning_under_graph(data):
    x = torch.bernoulli(data.x_train[:16])
    step = make_step(discrete_program(data.x_dim), TrainConfig())
    for _ in range(3):
        step(x)
    assert step.off == "latent site 'c' has no reparameterized sampler: its score-function gradient is not compiled"
    step = make_step(discrete_program(data.x_dim), TrainConfig(path="graph"))
    step(x)
    with pytest.warns(GraphFallbackWarning, match="latent site 'c' has no reparameterized sampler"):
        step(x)
