"""Time per training step of every objective, as a ratio to the hand-written torch step, in one process.

    python benchmarks/step_speed.py --data digits --z-dim 8 --hidden 128 --batch-size 64
    python benchmarks/step_speed.py --data digits28.npz --z-dim 50 --hidden 400 --batch-size 128

Each objective gets a fresh VAE of the same size, warms up, then runs rounds of steps on the same binarized
minibatch; the objectives take turns round by round so that a change in machine load hits them alike. Reported:
the median over rounds of the milliseconds per step, and its ratio to ``reference-mc`` (a plain torch loss with
``torch.optim.Adam``), which is the cost of Pyro's tracing on top of the same arithmetic.
"""

import argparse
import statistics
import time

import torch

import ppl_vae
from ppl_vae.data import binarize_fixed
from ppl_vae.objectives import OBJECTIVES, make_step
from ppl_vae.train import seed_everything

BASELINE = "reference-mc"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--z-dim", type=int, default=8)
    parser.add_argument("--hidden", type=lambda text: tuple(int(v) for v in text.split(",")), default=(128,))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20, help="steps per round")
    parser.add_argument(  # enum needs a guide with sites to enumerate, which the built-in VAE has not
        "--objectives", default=",".join(sorted(set(OBJECTIVES) - {"enum"})), help="comma-separated objective names"
    )
    args = parser.parse_args(argv)

    data = ppl_vae.load_dataset(args.data)
    x = binarize_fixed(data.x_train[: args.batch_size])
    names = [name.strip() for name in args.objectives.split(",")]
    steps = {}
    for name in names:
        seed_everything(0)
        vae = ppl_vae.VAE(ppl_vae.model_config_for(data, z_dim=args.z_dim, hidden=args.hidden))
        steps[name] = make_step(vae, ppl_vae.TrainConfig(elbo=name))
        for _ in range(5):  # warm-up (the jit step compiles here)
            steps[name](x)
    times = {name: [] for name in names}
    for _ in range(args.rounds):
        for name, step in steps.items():
            started = time.perf_counter()
            for _ in range(args.steps):
                step(x)
            times[name].append((time.perf_counter() - started) / args.steps * 1e3)
    baseline = statistics.median(times[BASELINE]) if BASELINE in times else None
    print(
        f"{args.data}, z_dim {args.z_dim}, hidden {args.hidden}, batch {args.batch_size}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'objective':<20} {'ms per step':>12} {'ratio to ' + BASELINE:>24}")
    for name in names:
        median = statistics.median(times[name])
        ratio = f"{median / baseline:24.2f}" if baseline else f"{'':>24}"
        print(f"{name:<20} {median:12.3f} {ratio}")
    return times


if __name__ == "__main__":
    main()
