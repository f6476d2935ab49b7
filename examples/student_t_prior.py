"""A VAE with a heavy-tailed Student-t prior p(z), in plain Pyro, trained and evaluated by ppl_vae.

    python examples/student_t_prior.py --epochs 30 --df 3

    model:  z ~ StudentT(df, 0, 1) per dimension,  x ~ Bernoulli(logits(z))
    guide:  z ~ Normal(loc(x), scale(x))

KL(Normal || StudentT) has no closed form, so the objective is Pyro's Trace_ELBO with the Monte Carlo KL
(``--elbo trace``, the default; ``meanfield`` has nothing to use here). The evaluation needs no KL at all: the ELBO
and log p(x) are importance-sampling estimates over the guide's draws.
"""

import argparse

import pyro
import pyro.distributions as dist
import torch

import ppl_vae
from ppl_vae.cli import print_metrics
from ppl_vae.nets import MLP
from ppl_vae.run import evaluate_vae


def student_t_vae(x_dim: int, z_dim: int, df: float, hidden: int = 128):
    encoder = MLP(x_dim, (hidden,), 2 * z_dim)  # x -> [loc | log_scale]
    decoder = MLP(z_dim, (hidden,), x_dim)  # z -> logits

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.StudentT(df, x.new_zeros(z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        loc, log_scale = encoder(x).chunk(2, dim=-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return model, guide, {"encoder": encoder, "decoder": decoder}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--df", type=float, default=3.0, help="degrees of freedom of the prior (large: Normal)")
    parser.add_argument("--z-dim", type=int, default=8)
    parser.add_argument("--k", type=int, default=1000, help="importance samples per test image for log p(x)")
    args = parser.parse_args(argv)

    pyro.clear_param_store()
    data = ppl_vae.load_dataset("digits")
    torch.manual_seed(0)
    model, guide, modules = student_t_vae(data.x_dim, args.z_dim, args.df)
    program = ppl_vae.UserProgram(model, guide, modules, binary=True)  # the likelihood reads 0/1 pixels
    ppl_vae.fit(program, data, ppl_vae.TrainConfig(epochs=args.epochs), progress=False)
    metrics = evaluate_vae(program, data, ppl_vae.EvalConfig(k=args.k))  # test ELBO and IWAE log p(x)
    print(f"Student-t prior, df = {args.df:g}")
    print_metrics(metrics)
    return metrics


if __name__ == "__main__":
    main()
