"""The IWAE objective against the ELBO: same networks, seed, data order and epochs; only the training objective differs.

    python examples/iwae.py --epochs 30 --num-particles 10 --k 1000 --out runs/iwae

``trace`` maximizes the ELBO (one sample of z per example); ``iwae`` maximizes the importance-weighted bound
``log (1/K) sum_k w_k`` with K = --num-particles samples (Pyro's RenyiELBO with alpha = 0, vectorized). Both are then
judged by the same yardstick: the test log-likelihood estimated with k importance samples, in nats per example.
"""

import argparse
from pathlib import Path

import ppl_vae
from ppl_vae.tables import table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--num-particles", type=int, default=10, help="K, samples per example in the IWAE bound")
    parser.add_argument("--z-dim", type=int, default=8)
    parser.add_argument("--k", type=int, default=1000, help="importance samples per test image for log p(x)")
    parser.add_argument("--out", default="runs/iwae", help="folder for the two run folders")
    args = parser.parse_args(argv)

    data = ppl_vae.load_dataset("digits")
    rows = {"trace": ppl_vae.TrainConfig(epochs=args.epochs, elbo="trace")}
    rows["iwae"] = ppl_vae.TrainConfig(epochs=args.epochs, elbo="iwae", num_particles=args.num_particles)
    metrics = {}
    for name, train in rows.items():
        config = ppl_vae.RunConfig(
            model=ppl_vae.model_config_for(data, z_dim=args.z_dim, hidden=(128,)),
            train=train,
            evaluation=ppl_vae.EvalConfig(k=args.k),
        )
        metrics[name] = ppl_vae.train_run(config, Path(args.out) / name, progress=False)

    rows = [
        [
            f"iwae K={args.num_particles}" if name == "iwae" else "trace (ELBO)",
            f"{m['test_elbo']:.2f} +- {m['test_elbo_se']:.2f}",
            f"{m['test_log_likelihood']:.2f} +- {m['test_log_likelihood_se']:.2f}",
        ]
        for name, m in metrics.items()
    ]
    header = ["objective", "test ELBO, nats per example", "test log p(x), nats per example"]
    print(table(header, rows, style="terminal"))
    gap = metrics["iwae"]["test_log_likelihood"] - metrics["trace"]["test_log_likelihood"]
    print(f"log p(x): iwae - trace = {gap:+.2f} nats per example (k={args.k}, {args.epochs} epochs each)")
    return metrics


if __name__ == "__main__":
    main()
