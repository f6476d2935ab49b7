"""Command line: ``ppl-vae train``, ``ppl-vae evaluate`` (also ``python -m ppl_vae``).

Bad input ends with one line ``ppl-vae: error: ...`` naming the value and what was expected, and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ppl_vae.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from ppl_vae.errors import InputError

DEFAULTS_TRAIN = TrainConfig()
DEFAULTS_EVAL = EvalConfig()


def parse_hidden(text: str) -> tuple[int, ...]:
    """``"256,128"`` -> ``(256, 128)``; anything else is an :class:`InputError`."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise InputError(f"--hidden {text!r} is empty: expected comma-separated layer widths, e.g. 128 or 256,128")
    try:
        return tuple(int(part) for part in parts)
    except ValueError:
        raise InputError(f"--hidden {text!r}: expected comma-separated integers, e.g. 128 or 256,128") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ppl-vae", description="Variational autoencoders with Pyro: train, evaluate.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", help="train a VAE into a run folder", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    train.add_argument("--data", default="digits", help="digits | mnist | fashion-mnist | kmnist | path/to/file.npz")
    train.add_argument("--data-root", default=None, help="folder of torchvision data sets")
    train.add_argument("--download", action="store_true", help="let torchvision download the data set")
    train.add_argument(
        "--epochs", type=int, default=None, help=f"passes over the training set [{DEFAULTS_TRAIN.epochs}]"
    )
    train.add_argument("--batch-size", type=int, default=DEFAULTS_TRAIN.batch_size)
    train.add_argument("--z-dim", type=int, default=8, help="latent dimensions")
    train.add_argument("--hidden", default="128", help="hidden-layer widths, comma-separated, data side first")
    train.add_argument("--lr", type=float, default=DEFAULTS_TRAIN.lr, help="Adam learning rate")
    train.add_argument(
        "--elbo", default=DEFAULTS_TRAIN.elbo, help="trace | meanfield | jit | iwae | reference-mc | reference-analytic"
    )
    train.add_argument(
        "--num-particles",
        type=int,
        default=DEFAULTS_TRAIN.num_particles,
        help="samples of z per example in training (K of --elbo iwae)",
    )
    train.add_argument(
        "--beta", type=float, default=DEFAULTS_TRAIN.beta, help="weight of the KL term (beta-VAE when != 1)"
    )
    train.add_argument(
        "--anneal", default=DEFAULTS_TRAIN.anneal, help="KL warm-up multiplying --beta: none | linear | cyclical"
    )
    train.add_argument(
        "--anneal-epochs",
        type=int,
        default=DEFAULTS_TRAIN.anneal_epochs,
        help="epochs of the linear ramp, or of one cycle",
    )
    train.add_argument(
        "--conditional", action="store_true", help="conditional VAE: one-hot labels into encoder and decoder"
    )
    train.add_argument("--scale-param", default="log_scale", help="guide scale head: log_scale | log_var | softplus")
    train.add_argument("--seed", type=int, default=DEFAULTS_TRAIN.seed)
    train.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda [cpu]")
    train.add_argument("--eval-every", type=int, default=DEFAULTS_TRAIN.eval_every, help="test ELBO every N epochs")
    train.add_argument(
        "--k", type=int, default=DEFAULTS_EVAL.k, help="importance samples per test example for log p(x)"
    )
    train.add_argument(
        "--eval-particles",
        type=int,
        default=DEFAULTS_EVAL.num_particles,
        help="samples per test example for the final ELBO",
    )
    train.add_argument("--out", type=Path, default=None, help="run folder [runs/<data>-<time>]")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out (its config.json; --epochs may extend it)"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(handler=command_train)

    evaluate = commands.add_parser(
        "evaluate", help="reload a run folder and evaluate it", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument(
        "--k", type=int, default=DEFAULTS_EVAL.k, help="importance samples per test example for log p(x)"
    )
    evaluate.add_argument(
        "--eval-particles", type=int, default=DEFAULTS_EVAL.num_particles, help="samples per test example for the ELBO"
    )
    evaluate.add_argument("--device", default="cpu")
    evaluate.set_defaults(handler=command_evaluate)
    return parser


def _config_from_args(args) -> RunConfig:
    from ppl_vae.data import load_dataset
    from ppl_vae.run import model_config_for

    train = TrainConfig(
        epochs=DEFAULTS_TRAIN.epochs if args.epochs is None else args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        elbo=args.elbo,
        num_particles=args.num_particles,
        beta=args.beta,
        anneal=args.anneal,
        anneal_epochs=args.anneal_epochs,
        seed=args.seed,
        device=args.device or "cpu",
        eval_every=args.eval_every,
    )
    evaluation = EvalConfig(k=args.k, num_particles=args.eval_particles)
    hidden = parse_hidden(args.hidden)
    data_config = DataConfig(name=args.data, root=args.data_root, download=args.download)
    data = load_dataset(data_config.name, root=data_config.root, download=data_config.download)
    model = model_config_for(
        data, conditional=args.conditional, z_dim=args.z_dim, hidden=hidden, scale_param=args.scale_param
    )
    return RunConfig(model=model, data=data_config, train=train, evaluation=evaluation)


def command_train(args) -> None:
    from ppl_vae.run import default_run_dir, load_config, train_run

    if args.resume:
        if args.out is None:
            raise InputError("--resume needs --out RUN_DIR: the run folder to continue")
        config = load_config(args.out)
        changes = {"epochs": args.epochs} if args.epochs is not None else {}
        if args.device is not None:
            changes["device"] = args.device
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, **changes))
    else:
        config = _config_from_args(args)
    run_dir = args.out or default_run_dir(config.data.name)
    try:
        metrics = train_run(config, run_dir, resume=args.resume, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted: continue with  ppl-vae train --resume --out {run_dir}", file=sys.stderr)
        raise SystemExit(130) from None
    print_metrics(metrics)
    print(f"run folder: {run_dir}")


def command_evaluate(args) -> None:
    from ppl_vae.run import evaluate_run

    metrics = evaluate_run(args.run_dir, EvalConfig(k=args.k, num_particles=args.eval_particles), device=args.device)
    print_metrics(metrics)


def print_metrics(metrics: dict) -> None:
    """A small table of the test metrics, nats per example (of ``log p(x | y)`` for a conditional model)."""
    of = "log p(x | y)" if metrics.get("conditional") else "log p(x)"
    rows = [
        (f"test ELBO ({metrics['elbo_particles']} samples)", metrics["test_elbo"], metrics["test_elbo_se"]),
        (f"test {of} (IWAE, k={metrics['k']})", metrics["test_log_likelihood"], metrics["test_log_likelihood_se"]),
    ]
    print(f"{'metric':<34} {'nats per example':>17} {'std. error':>10}")
    for name, value, se in rows:
        print(f"{name:<34} {value:>17.3f} {se:>10.3f}")
    if "train_elbo" in metrics:
        print(f"{'train ELBO (last epoch)':<34} {metrics['train_elbo']:>17.3f}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except InputError as error:
        print(f"ppl-vae: error: {error}", file=sys.stderr)
        return 2
    except FloatingPointError as error:
        print(f"ppl-vae: error: {error}", file=sys.stderr)
        return 1
    return 0
