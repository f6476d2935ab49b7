"""Users' build functions, as ``ppl-vae train --program user_programs:NAME`` imports them in the tests.

(``tests/`` is on ``sys.path`` under pytest, as for ``idx_files``.) Each ``build(spec)`` sizes its networks from
``spec`` and reads its options from ``spec.args``, refusing options it does not know.
"""

import dataclasses

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_vae import HeadLayer, UserProgram
from ppl_vae.heads import HEADS


def _options(spec, defaults: dict) -> dict:
    unknown = sorted(set(spec.args) - set(defaults))
    if unknown:
        raise ValueError(f"unknown options {unknown}: expected some of {sorted(defaults)}")
    options = {**defaults, **spec.args}
    if options["z_dim"] < 1:
        raise ValueError(f"z_dim must be at least 1, got {options['z_dim']}")
    return options


class Networks(nn.Module):
    """One container for the encoder and the decoder: the program hands ppl_vae a single module."""

    def __init__(self, x_dim: int, z_dim: int, hidden: int):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * z_dim))
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, x_dim))


def build_vae(spec):
    """A Bernoulli VAE under other names than the built-in one: latent "code", observed "pixels", plate "examples";
    it offers ``reconstruct``, ``sample`` and ``decode`` (not ``encode``), and its scale head (``scale_param``,
    ``log_scale`` by default) for the KL lab's heads study."""
    options = _options(spec, {"z_dim": 2, "hidden": 16, "scale_param": "log_scale"})
    z_dim = options["z_dim"]
    nets = Networks(spec.x_dim, z_dim, options["hidden"])
    head = HEADS.get(options["scale_param"])

    def model(x):
        pyro.module("decoder", nets.decoder)
        with pyro.plate("examples", x.shape[0]):
            code = pyro.sample("code", dist.Normal(x.new_zeros(z_dim), 1.0).to_event(1))
            pyro.sample("pixels", dist.Bernoulli(logits=nets.decoder(code)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", nets.encoder)
        loc, h = nets.encoder(x).split(z_dim, dim=-1)
        with pyro.plate("examples", x.shape[0]):
            pyro.sample("code", dist.Normal(loc, head.scale(h)).to_event(1))

    def reconstruct(x):
        loc, _ = nets.encoder(x).split(z_dim, dim=-1)
        return torch.sigmoid(nets.decoder(loc))

    def sample(num_samples):
        return torch.sigmoid(nets.decoder(torch.randn(num_samples, z_dim)))

    def decode(z):
        return torch.sigmoid(nets.decoder(z))

    def rebuild(other_head):
        return build_vae(dataclasses.replace(spec, args={**spec.args, "scale_param": other_head}))

    scale_head = HeadLayer(head.name, "encoder.2", (z_dim, 2 * z_dim), rebuild)
    return UserProgram(
        model, guide, nets, binary=True, reconstruct=reconstruct, sample=sample, scale_head=scale_head, decode=decode
    )


def build_two_level(spec):
    """A two-layer hierarchical VAE: z2 ~ N(0, I), z1 ~ N(mu(z2), sigma(z2)), x ~ Bernoulli(logits(z1)); the guide
    q(z1 | x) q(z2 | z1). Four networks, handed over as a dict; no plotting functions."""
    options = _options(spec, {"z_dim": 2, "top_dim": 1, "hidden": 16})
    z1_dim, z2_dim, hidden = options["z_dim"], options["top_dim"], options["hidden"]

    def mlp(inputs, outputs):
        return nn.Sequential(nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, outputs))

    networks = {
        "p_z1": mlp(z2_dim, 2 * z1_dim),
        "p_x": mlp(z1_dim, spec.x_dim),
        "q_z1": mlp(spec.x_dim, 2 * z1_dim),
        "q_z2": mlp(z1_dim, 2 * z2_dim),
    }

    def normal(net, inputs, size):
        loc, log_scale = net(inputs).split(size, dim=-1)
        return dist.Normal(loc, log_scale.exp()).to_event(1)

    def model(x):
        pyro.module("p_z1", networks["p_z1"])
        pyro.module("p_x", networks["p_x"])
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(z2_dim), 1.0).to_event(1))
            z1 = pyro.sample("z1", normal(networks["p_z1"], z2, z1_dim))
            pyro.sample("x", dist.Bernoulli(logits=networks["p_x"](z1)).to_event(1), obs=x)

    def guide(x):
        pyro.module("q_z1", networks["q_z1"])
        pyro.module("q_z2", networks["q_z2"])
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", normal(networks["q_z1"], x, z1_dim))
            pyro.sample("z2", normal(networks["q_z2"], z1, z2_dim))

    return UserProgram(model, guide, networks, binary=True)


def not_a_program(spec):
    """A build function that returns the wrong thing."""
    return {"model": None, "guide": None}


NOT_CALLABLE = 3
