"""MNIST (or Fashion-MNIST, KMNIST) through torchvision: the classic 784-400-50 VAE.

python examples/mnist.py --download                 # fetches MNIST into --data-root (needs a network)
python examples/mnist.py --data-root /data/mnist    # or reads MNIST/raw/*-ubyte files already there
"""

import argparse

import ppl_vae
from ppl_vae.run import default_run_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist", choices=["mnist", "fashion-mnist", "kmnist"])
    parser.add_argument("--data-root", default=None, help="torchvision data folder [~/.cache/ppl_vae/data]")
    parser.add_argument("--download", action="store_true", help="let torchvision download the files")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--k", type=int, default=1000, help="importance samples per test image for log p(x)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="run folder [runs/<data>-<time>]")
    args = parser.parse_args(argv)

    data_config = ppl_vae.DataConfig(name=args.data, root=args.data_root, download=args.download)
    data = ppl_vae.load_dataset(data_config.name, root=data_config.root, download=data_config.download)
    config = ppl_vae.RunConfig(
        model=ppl_vae.model_config_for(data, z_dim=50, hidden=(400,)),
        data=data_config,
        train=ppl_vae.TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=args.device),
        evaluation=ppl_vae.EvalConfig(k=args.k),
    )
    run_dir = args.out or default_run_dir(args.data)
    metrics = ppl_vae.train_run(config, run_dir)
    print(
        f"{args.data}: test ELBO {metrics['test_elbo']:.2f} +- {metrics['test_elbo_se']:.2f}, "
        f"log p(x) {metrics['test_log_likelihood']:.2f} +- {metrics['test_log_likelihood_se']:.2f} nats per example "
        f"(k={metrics['k']}); run folder {run_dir}"
    )
    return metrics


if __name__ == "__main__":
    main()
