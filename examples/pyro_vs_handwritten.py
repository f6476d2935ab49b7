"""Is the Pyro VAE as good as the VAE everyone hand-writes? Same networks, same data order, same Adam, same epochs.

Rows (each from the same initial weights for a given seed):
  pyro trace          SVI + Trace_ELBO, log-scale head: Monte Carlo KL
  hand-written mc     torch loss, Monte Carlo KL, log-scale head
  pyro meanfield      SVI + TraceMeanField_ELBO, log-scale head: closed-form KL
  hand-written kl     torch loss, closed-form KL, log-scale head
  classic recipe      torch loss, closed-form KL, log-variance head (the Keras / pytorch-examples VAE)

    python examples/pyro_vs_handwritten.py --epochs 30 --seeds 0,1,2
    python examples/pyro_vs_handwritten.py --data digits28.npz --z-dim 50 --hidden 400
"""

import argparse
import json
import statistics
from pathlib import Path

import ppl_vae
from ppl_vae.train import seed_everything

ROWS = {
    "pyro trace": ("trace", "log_scale"),
    "hand-written mc": ("reference-mc", "log_scale"),
    "pyro meanfield": ("meanfield", "log_scale"),
    "hand-written kl": ("reference-analytic", "log_scale"),
    "classic recipe": ("reference-analytic", "log_var"),
}


def train_row(data, objective, head, args, seed):
    seed_everything(seed)
    vae = ppl_vae.VAE(ppl_vae.model_config_for(data, z_dim=args.z_dim, hidden=args.hidden, scale_param=head))
    config = ppl_vae.TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, elbo=objective, seed=seed)
    history = ppl_vae.fit(vae, data, config, progress=False)
    return [record["test_elbo"] for record in history]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--z-dim", type=int, default=8)
    parser.add_argument("--hidden", type=lambda text: tuple(int(v) for v in text.split(",")), default=(128,))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=None, help="write the curves as JSON here")
    args = parser.parse_args(argv)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    data = ppl_vae.load_dataset(args.data)

    curves = {row: [train_row(data, *ROWS[row], args, seed) for seed in seeds] for row in ROWS}
    marks = sorted({1, min(5, args.epochs), min(10, args.epochs), args.epochs})
    print(
        f"test ELBO, nats per example (mean +- sd over seeds {seeds}), {args.data}, z_dim {args.z_dim}, "
        f"hidden {args.hidden}"
    )
    print(f"{'':18}" + "".join(f"{'epoch ' + str(epoch):>18}" for epoch in marks))
    for row, runs in curves.items():
        cells = []
        for epoch in marks:
            values = [run[epoch - 1] for run in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):>10.2f} +- {spread:4.2f}")
        print(f"{row:18}" + "".join(cells))
    if args.out:
        args.out.write_text(json.dumps({"args": {**vars(args), "out": str(args.out)}, "curves": curves}, indent=1))
    return curves


if __name__ == "__main__":
    main()
