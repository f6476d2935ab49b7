"""β-VAE and KL warm-up: the weight on KL(q(z | x) || p(z)) as a configuration value, not a subclass.

    python examples/beta_vae_annealing.py --epochs 30 --beta 4 --anneal-epochs 10 --out runs/beta

Rows (same networks, seed and data order): the plain ELBO (β = 1); a β-VAE (β = --beta: a tighter pull towards the
prior, a worse ELBO); a linear warm-up of β_t from 0 to 1 over --anneal-epochs epochs; a cyclical warm-up (a ramp over
the first half of every --anneal-epochs epochs). Training weights the latent site "z" of model and guide by β_t; the
test ELBO and log p(x) are always the plain, unweighted ones, in nats per example.
"""

import argparse
from pathlib import Path

import ppl_vae
from ppl_vae.tables import table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--beta", type=float, default=4.0)
    parser.add_argument("--anneal-epochs", type=int, default=10)
    parser.add_argument("--k", type=int, default=1000, help="importance samples per test image for log p(x)")
    parser.add_argument("--out", default="runs/beta", help="folder for one run folder per row")
    args = parser.parse_args(argv)

    data = ppl_vae.load_dataset("digits")
    rows = {
        "beta 1": {},
        f"beta {args.beta:g}": {"beta": args.beta},
        "linear warm-up": {"anneal": "linear", "anneal_epochs": args.anneal_epochs},
        "cyclical warm-up": {"anneal": "cyclical", "anneal_epochs": args.anneal_epochs},
    }
    metrics = {}
    for name, options in rows.items():
        config = ppl_vae.RunConfig(
            model=ppl_vae.model_config_for(data, z_dim=8, hidden=(128,)),
            train=ppl_vae.TrainConfig(epochs=args.epochs, **options),
            evaluation=ppl_vae.EvalConfig(k=args.k),
        )
        metrics[name] = ppl_vae.train_run(config, Path(args.out) / name.replace(" ", "-"), progress=False)

    rows = [
        [
            name,
            f"{m['history'][-1].get('latent_scale', 1.0):.2f}",
            f"{m['test_elbo']:.2f} +- {m['test_elbo_se']:.2f}",
            f"{m['test_log_likelihood']:.2f} +- {m['test_log_likelihood_se']:.2f}",
        ]
        for name, m in metrics.items()
    ]
    header = ["row", "final beta_t", "test ELBO, nats per example", "test log p(x), nats per example"]
    print(table(header, rows, style="terminal"))
    return metrics


if __name__ == "__main__":
    main()
