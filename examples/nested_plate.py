"""A VAE whose likelihood is written per pixel, in a plate nested inside the data plate, trained by ppl_vae.

    python examples/nested_plate.py --epochs 30

    with pyro.plate("data", B, dim=-2):          # the examples
        z ~ N(0, I)                              # batch (B, 1), event (z_dim,)
        with pyro.plate("pixels", D, dim=-1):    # every pixel its own site entry: no .to_event
            x ~ Bernoulli(logits(z))             # batch (B, D)

The same model as the built-in VAE, with the pixels as a plate instead of an event dimension: its ELBO and log p(x)
are the same quantities. The programs now have two plate dimensions (``max_plate_nesting = 2``), found from a trace;
the workbench puts its own plates of samples and particles to the left of both.
"""

import argparse

import pyro
import pyro.distributions as dist
import torch

import ppl_vae
from ppl_vae.cli import print_metrics
from ppl_vae.nets import MLP
from ppl_vae.run import evaluate_vae


def nested_plate_vae(x_dim: int, z_dim: int, hidden: int = 128):
    encoder = MLP(x_dim, (hidden,), 2 * z_dim)  # x -> [loc | log_scale]
    decoder = MLP(z_dim, (hidden,), x_dim)  # z -> logits

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(x.new_zeros(1, z_dim), 1.0).to_event(1))  # (..., B, 1, z_dim)
            with pyro.plate("pixels", x.shape[1], dim=-1):
                pyro.sample("x", dist.Bernoulli(logits=decoder(z).squeeze(-2)), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        loc, log_scale = encoder(x).unsqueeze(-2).chunk(2, dim=-1)  # (B, 1, z_dim) each
        with pyro.plate("data", x.shape[0], dim=-2):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return model, guide, {"encoder": encoder, "decoder": decoder}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--z-dim", type=int, default=8)
    parser.add_argument("--k", type=int, default=1000, help="importance samples per test image for log p(x)")
    args = parser.parse_args(argv)

    pyro.clear_param_store()
    data = ppl_vae.load_dataset("digits")
    torch.manual_seed(0)
    model, guide, modules = nested_plate_vae(data.x_dim, args.z_dim)
    program = ppl_vae.UserProgram(model, guide, modules, binary=True)  # the likelihood reads 0/1 pixels
    ppl_vae.fit(program, data, ppl_vae.TrainConfig(epochs=args.epochs), progress=False)
    metrics = evaluate_vae(program, data, ppl_vae.EvalConfig(k=args.k))  # test ELBO and IWAE log p(x)
    print_metrics(metrics)
    return metrics


if __name__ == "__main__":
    main()
