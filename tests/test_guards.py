"""The guards of the first update: a parameter that would never train stops ``fit`` with an error naming it.

Each case trained silently before, with the parameter frozen at its initial value.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, PyroParam
from torch import nn

from ppl_vae.config import TrainConfig
from ppl_vae.data import Dataset
from ppl_vae.errors import InputError
from ppl_vae.train import fit

D, Z = 6, 2


@pytest.fixture
def data():
    x = torch.bernoulli(torch.full((64, D), 0.5), generator=torch.Generator().manual_seed(0))
    return Dataset("bits", x[:48], x[48:], None, None, (1, 1, D))


def programs(register_decoder: bool = True, decoder: nn.Module | None = None, encoder: nn.Module | None = None):
    """A small Bernoulli VAE; ``register_decoder=False`` forgets ``pyro.module`` for the decoder."""
    encoder = encoder or nn.Linear(D, 2 * Z)
    decoder = decoder or nn.Linear(Z, D)

    def model(x):
        if register_decoder:
            pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(Z), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        loc, log_scale = encoder(x).split(Z, dim=-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return model, guide, {"encoder": encoder, "decoder": decoder}


def train(data, model, guide, modules, **options):
    config = TrainConfig(epochs=1, batch_size=16, eval_particles=2, **options)
    return fit(model=model, guide=guide, modules=modules, data=data, config=config, progress=False)


def test_a_module_the_programs_never_register_stops_training(data):
    model, guide, modules = programs(register_decoder=False)
    with pytest.raises(InputError, match="parameter 'decoder.weight' .* is never registered .* call pyro.module"):
        train(data, model, guide, modules)


def test_a_pyro_param_read_outside_a_pyro_module_method_stops_training(data):
    """A PyroModule's PyroParam read from a plain function is its current value, not a Pyro parameter."""
    noise = PyroModule()
    noise.bias = PyroParam(torch.zeros(D))
    model, guide, modules = programs(decoder=nn.Linear(Z, D))
    decoder = modules["decoder"]

    def model_with_bias(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(Z), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z) + noise.bias).to_event(1), obs=x)

    with pytest.raises(InputError, match="parameter 'noise.bias_unconstrained' .* is never registered"):
        train(data, model_with_bias, guide, {**modules, "noise": noise})


def test_a_pyro_module_name_that_holds_other_parameters_stops_training(data):
    first_model, first_guide, first_modules = programs()
    train(data, first_model, first_guide, first_modules)
    model, guide, modules = programs()  # new networks under the same pyro.module names, same param store
    with pytest.raises(InputError, match="pyro.module name '(encoder|decoder)' already holds other parameters"):
        train(data, model, guide, modules)


class DecoderWithSpare(nn.Module):
    """A decoder holding a layer that its forward never uses."""

    def __init__(self):
        super().__init__()
        self.net, self.spare = nn.Linear(Z, D), nn.Linear(Z, D)

    def forward(self, z):
        return self.net(z)


def test_a_parameter_without_gradient_stops_training(data):
    model, guide, modules = programs(decoder=DecoderWithSpare())
    with pytest.raises(InputError, match="parameter 'decoder.spare.weight' .* received no gradient"):
        train(data, model, guide, modules)


def test_an_lr_factor_that_matches_nothing_stops_training(data):
    model, guide, modules = programs()
    with pytest.raises(InputError, match="lr_factors prefix 'decodr' matches no trained parameter"):
        train(data, model, guide, modules, lr_factors={"decodr": 0.1})


def test_frozen_parameters_are_left_alone(data):
    """A parameter with requires_grad=False is meant to stay as it is: no guard fires, it does not move."""
    model, guide, modules = programs()
    modules["decoder"].bias.requires_grad_(False)
    modules["decoder"].train(False)  # else pyro.module warns that it leaves the bias out of the param store
    before = modules["decoder"].bias.clone()
    train(data, model, guide, modules)
    assert torch.equal(modules["decoder"].bias, before)
