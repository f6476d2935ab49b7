"""Your own model and guide: a Laplace likelihood on grey levels, in plain Pyro, trained by ppl_vae.fit.

    python examples/custom_model_guide.py --epochs 30

No subclassing: the model and guide below are ordinary Pyro programs that follow the site names of the library
(latent "z", observed "x", plate "data"), register their networks with pyro.module, and are handed to ``fit`` with the
modules that hold their weights. The same evaluation functions as for the built-in VAE then report the test ELBO and
log p(x) with importance sampling.

The model reads the grey levels in [0, 1] as they are (no binarization): p(x | z) = Laplace(loc(z), scale(z)) per
pixel, so log p(x) is a log *density* in nats per example and is not comparable with the Bernoulli models' numbers.
The scale has a floor of 0.05: pixels that are 0 in every image would otherwise let the density grow without bound.
"""

import argparse

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

import ppl_vae

SCALE_FLOOR = 0.05


def laplace_vae(x_dim: int, z_dim: int, hidden: int):
    """The user's model and guide, and the networks they train."""
    encoder = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * z_dim))
    decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * x_dim))

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(z_dim), 1.0).to_event(1))
            loc, h = decoder(z).split(x_dim, dim=-1)
            pyro.sample("x", dist.Laplace(loc, F.softplus(h) + SCALE_FLOOR).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        loc, log_scale = encoder(x).split(z_dim, dim=-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return model, guide, {"encoder": encoder, "decoder": decoder}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--z-dim", type=int, default=8)
    parser.add_argument("--k", type=int, default=1000, help="importance samples per test image for log p(x)")
    parser.add_argument("--out", default=None, help="run folder for checkpoints (none by default)")
    args = parser.parse_args(argv)

    pyro.clear_param_store()  # the networks register under fixed names ("encoder", "decoder")
    data = ppl_vae.load_dataset("digits")
    torch.manual_seed(0)
    model, guide, modules = laplace_vae(data.x_dim, args.z_dim, hidden=128)
    history = ppl_vae.fit(
        model=model,
        guide=guide,
        modules=modules,
        data=data,
        config=ppl_vae.TrainConfig(epochs=args.epochs),
        run_dir=args.out,
        progress=False,
    )
    test_elbo = ppl_vae.elbo(model, guide, data.x_test, num_particles=100)
    log_density = ppl_vae.iwae_log_likelihood(model, guide, data.x_test, k=args.k)
    print(f"test ELBO after epoch 1:  {history[0]['test_elbo']:8.2f} nats per example")
    print(f"test ELBO after epoch {len(history)}: {test_elbo.mean:8.2f} +- {test_elbo.se:.2f} nats per example")
    print(f"test log p(x) (density): {log_density.mean:8.2f} +- {log_density.se:.2f} nats per example (k={args.k})")
    return {"history": history, "test_elbo": test_elbo.mean, "test_log_likelihood": log_density.mean}


if __name__ == "__main__":
    main()
