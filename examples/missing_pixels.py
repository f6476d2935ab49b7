"""Missing data: a VAE whose likelihood counts only the observed pixels, trained and evaluated by ppl_vae.

    python examples/missing_pixels.py --epochs 30

A random 25% of the pixels of every image (train and test) is missing, stored as NaN. The program needs no extra
argument: the mask is read from x itself. The likelihood is masked per pixel (``Bernoulli(...).mask(observed)``: a
missing pixel contributes nothing, as in Pyro's ELBOs), the encoder reads the filled-in image and the mask. The ELBO
and log p(x) are then those of the observed pixels only, x_obs: about 48 of 64 per image, nats per example.

The images are binarized once with a fixed seed before the pixels are removed (a NaN cannot be binarized afresh per
minibatch), so ``fit`` runs with ``binarize_data=False``.
"""

import argparse
import dataclasses

import pyro
import pyro.distributions as dist
import torch

import ppl_vae
from ppl_vae.data import binarize_fixed
from ppl_vae.nets import MLP


def remove_pixels(x: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """``x`` with a random ``fraction`` of the pixels of every image set to NaN."""
    generator = torch.Generator().manual_seed(seed)
    missing = torch.rand(x.shape, generator=generator).argsort(dim=1) < round(fraction * x.shape[1])
    return x.masked_fill(missing, float("nan"))


def masked_vae(x_dim: int, z_dim: int, hidden: int = 128):
    encoder = MLP(2 * x_dim, (hidden,), 2 * z_dim)  # [filled-in x | mask] -> [loc | log_scale]
    decoder = MLP(z_dim, (hidden,), x_dim)  # z -> logits

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(z_dim), 1.0).to_event(1))
            likelihood = dist.Bernoulli(logits=decoder(z)).mask(~x.isnan()).to_event(1)
            pyro.sample("x", likelihood, obs=x.nan_to_num())

    def guide(x):
        pyro.module("encoder", encoder)
        loc, log_scale = encoder(torch.cat([x.nan_to_num(), (~x.isnan()).to(x.dtype)], dim=-1)).chunk(2, dim=-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return model, guide, {"encoder": encoder, "decoder": decoder}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--missing", type=float, default=0.25, help="fraction of the pixels of each image missing")
    parser.add_argument("--k", type=int, default=1000, help="importance samples per test image for log p(x_obs)")
    args = parser.parse_args(argv)

    pyro.clear_param_store()
    data = ppl_vae.load_dataset("digits")
    x_train = remove_pixels(binarize_fixed(data.x_train, seed=1), args.missing, seed=2)
    x_test = remove_pixels(ppl_vae.observed_test_set(data.x_test, binary=True), args.missing, seed=3)
    data = dataclasses.replace(data, x_train=x_train, x_test=x_test)
    torch.manual_seed(0)
    model, guide, modules = masked_vae(data.x_dim, z_dim=8)
    config = ppl_vae.TrainConfig(epochs=args.epochs)
    ppl_vae.fit(model=model, guide=guide, modules=modules, data=data, config=config, progress=False)
    test_elbo = ppl_vae.elbo(model, guide, x_test, num_particles=100)
    log_px = ppl_vae.iwae_log_likelihood(model, guide, x_test, k=args.k)
    observed = (~x_test.isnan()).sum(1).float().mean()
    print(f"observed pixels per test image: {observed:.1f} of {data.x_dim}")
    print(f"test ELBO of x_obs      {test_elbo.mean:8.2f} +- {test_elbo.se:.2f} nats per example")
    print(f"test log p(x_obs)       {log_px.mean:8.2f} +- {log_px.se:.2f} nats per example (IWAE, k={args.k})")
    return {"test_elbo": test_elbo.mean, "test_log_likelihood": log_px.mean}


if __name__ == "__main__":
    main()
