"""A two-layer hierarchical VAE written by hand in Pyro, with its own site names, trained by ppl_vae.fit.

    python examples/hierarchical_vae.py --epochs 30

    model:  top ~ N(0, I),  bottom ~ Normal(loc(top), scale(top)),  pixels ~ Bernoulli(logits(bottom))
    guide:  bottom ~ q(bottom | x),  top ~ q(top | bottom)      (q(top | .) reads the *sampled* bottom)

The workbench asks only for the program contract: one plate over the examples (here "images"), observed sites with
obs= ("pixels"), latent sites drawn by the guide ("top", "bottom": any names). The built-in VAE has this model under
the names z2, z1, x: ``ppl-vae train --latent-layers 2``. The same program in a run folder, from the repository root
(``build`` below)::

    ppl-vae train --program examples.hierarchical_vae:build --epochs 30 --out runs/hierarchical
    ppl-vae evaluate runs/hierarchical --trust-program        # report.json: KL and active units per latent site
"""

import argparse

import pyro
import pyro.distributions as dist
import torch

import ppl_vae
from ppl_vae.cli import print_metrics
from ppl_vae.nets import MLP
from ppl_vae.run import evaluate_vae


def normal(net, inputs):
    """Normal(loc, exp(log_scale)) over the last dimension, from ``net(inputs) = [loc | log_scale]``."""
    loc, log_scale = net(inputs).chunk(2, dim=-1)
    return dist.Normal(loc, log_scale.exp()).to_event(1)


def hierarchical_vae(x_dim: int, bottom: int, top: int, hidden: int = 128):
    """The user's model and guide, and the networks they train."""
    nets = {
        "encoder": MLP(x_dim, (hidden,), 2 * bottom),  # q(bottom | x)
        "up": MLP(bottom, (hidden,), 2 * top),  # q(top | bottom)
        "down": MLP(top, (hidden,), 2 * bottom),  # p(bottom | top)
        "decoder": MLP(bottom, (hidden,), x_dim),  # p(pixels | bottom): logits
    }

    def model(x):
        pyro.module("down", nets["down"])
        pyro.module("decoder", nets["decoder"])
        with pyro.plate("images", x.shape[0]):
            z_top = pyro.sample("top", dist.Normal(x.new_zeros(top), 1.0).to_event(1))
            z_bottom = pyro.sample("bottom", normal(nets["down"], z_top))
            pyro.sample("pixels", dist.Bernoulli(logits=nets["decoder"](z_bottom)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", nets["encoder"])
        pyro.module("up", nets["up"])
        with pyro.plate("images", x.shape[0]):
            z_bottom = pyro.sample("bottom", normal(nets["encoder"], x))
            pyro.sample("top", normal(nets["up"], z_bottom))

    return model, guide, nets


def build(spec: ppl_vae.ProgramSpec) -> ppl_vae.UserProgram:
    """The same program for a run folder: ``ppl-vae train --program examples.hierarchical_vae:build``
    (``--program-arg bottom_dim=8 --program-arg top_dim=4 --program-arg hidden=128`` are the defaults)."""
    options = {"bottom_dim": 8, "top_dim": 4, "hidden": 128, **spec.args}
    model, guide, nets = hierarchical_vae(spec.x_dim, options["bottom_dim"], options["top_dim"], options["hidden"])

    def encode(x):  # E_q[bottom | x], for latent.png
        return nets["encoder"](x).chunk(2, dim=-1)[0]

    def reconstruct(x):  # pixel means of p(x | bottom = E_q[bottom | x])
        return nets["decoder"](encode(x)).sigmoid()

    def sample(n):  # pixel means of p(x | bottom), bottom ~ p(bottom | top), top ~ N(0, I)
        top = torch.randn(n, options["top_dim"], device=next(nets["down"].parameters()).device)
        return nets["decoder"](normal(nets["down"], top).sample()).sigmoid()

    return ppl_vae.UserProgram(model, guide, nets, binary=True, encode=encode, reconstruct=reconstruct, sample=sample)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--bottom-dim", type=int, default=8)
    parser.add_argument("--top-dim", type=int, default=4)
    parser.add_argument("--k", type=int, default=1000, help="importance samples per test image for log p(x)")
    args = parser.parse_args(argv)

    pyro.clear_param_store()  # the networks register under fixed names
    data = ppl_vae.load_dataset("digits")
    torch.manual_seed(0)
    model, guide, nets = hierarchical_vae(data.x_dim, args.bottom_dim, args.top_dim)
    program = ppl_vae.UserProgram(model, guide, nets, binary=True)  # the likelihood reads 0/1 pixels
    # --elbo trace: Monte Carlo KL at both sites
    ppl_vae.fit(program, data, ppl_vae.TrainConfig(epochs=args.epochs), progress=False)
    metrics = evaluate_vae(program, data, ppl_vae.EvalConfig(k=args.k))  # test ELBO and IWAE log p(x)
    print_metrics(metrics)
    return metrics


if __name__ == "__main__":
    main()
