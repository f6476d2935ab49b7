"""Quickstart: train a VAE on scikit-learn's bundled 8x8 digits, evaluate it honestly, save its plots.

    python examples/quickstart.py --epochs 30

Writes a run folder (config.json, checkpoint.pt, metrics.json, four PNGs) and reloads the trained model from it.
"""

import argparse

import ppl_vae
from ppl_vae.run import default_run_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--z-dim", type=int, default=8)
    parser.add_argument("--k", type=int, default=1000, help="importance samples per test image for log p(x)")
    parser.add_argument("--out", default=None, help="run folder [runs/digits-<time>]")
    args = parser.parse_args(argv)

    data = ppl_vae.load_dataset("digits")
    config = ppl_vae.RunConfig(
        model=ppl_vae.model_config_for(data, z_dim=args.z_dim, hidden=(128,)),
        train=ppl_vae.TrainConfig(epochs=args.epochs, batch_size=64, lr=1e-3, elbo="trace"),
        evaluation=ppl_vae.EvalConfig(k=args.k),
    )
    run_dir = args.out or default_run_dir("digits")
    metrics = ppl_vae.train_run(config, run_dir)

    vae = ppl_vae.load(run_dir)  # rebuilt from config.json, weights loaded with weights_only=True
    print(f"test ELBO        {metrics['test_elbo']:8.2f} +- {metrics['test_elbo_se']:.2f} nats per example")
    print(
        f"test log p(x)    {metrics['test_log_likelihood']:8.2f} +- {metrics['test_log_likelihood_se']:.2f} "
        f"nats per example (IWAE, k={metrics['k']})"
    )
    print(f"reloaded a VAE with z_dim={vae.config.z_dim}; plots and metrics are in {run_dir}")
    return metrics


if __name__ == "__main__":
    main()
