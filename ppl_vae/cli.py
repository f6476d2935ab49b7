"""Command line: ``ppl-vae train``, ``ppl-vae evaluate``, ``ppl-vae compare-kl``, and the commands that use a trained
run, ``sample``, ``reconstruct``, ``encode``, ``traverse``, ``interpolate`` (:mod:`ppl_vae.cli_use`) (also
``python -m ppl_vae``).

Bad input ends with one line ``ppl-vae: error: ...`` naming the value and what was expected, and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ppl_vae.cli_use import add_use_commands
from ppl_vae.config import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig
from ppl_vae.errors import InputError
from ppl_vae.report import ReportConfig
from ppl_vae.tables import table

DEFAULTS_TRAIN = TrainConfig()
DEFAULTS_EVAL = EvalConfig()
DEFAULTS_REPORT = ReportConfig()
DEFAULTS_MODEL = {field.name: field.default for field in dataclasses.fields(ModelConfig)}


def parse_hidden(text: str) -> tuple[int, ...]:
    """``"256,128"`` -> ``(256, 128)``; anything else is an :class:`InputError`."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise InputError(f"--hidden {text!r} is empty: expected comma-separated layer widths, e.g. 128 or 256,128")
    try:
        return tuple(int(part) for part in parts)
    except ValueError:
        raise InputError(f"--hidden {text!r}: expected comma-separated integers, e.g. 128 or 256,128") from None


def integer_or_text(text: str) -> int | str:
    """``"2"`` -> ``2``; any other text is returned as it is, for the config check to refuse with the flag's own
    message (one line, where argparse's ``type=int`` would print its usage too)."""
    try:
        return int(text)
    except ValueError:
        return text


def _add_evaluation_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--k", type=int, default=DEFAULTS_EVAL.k, help="importance samples per test example for log p(x)"
    )
    parser.add_argument(
        "--eval-particles", type=int, default=DEFAULTS_EVAL.num_particles, help="samples per test example for the ELBO"
    )
    parser.add_argument(
        "--eval-memory-mb",
        type=float,
        default=DEFAULTS_EVAL.memory_mb,
        help="memory budget of one vectorized pass of importance samples, MB; sets the samples per pass from the "
        "measured bytes of one (default: at most 2^24 samples x examples x pixels)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppl-vae", description="Variational autoencoders with Pyro: train, evaluate, use a trained run."
    )
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
    train.add_argument(
        "--program",
        default=None,
        metavar="MODULE:FUNCTION",
        help="train your own model and guide: build(spec) -> ppl_vae.UserProgram (see ppl_vae.user_program); "
        "the built-in VAE's options (--z-dim ... --flow-layers, --conditional) do not apply",
    )
    train.add_argument(
        "--program-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of --program, in spec.args (VALUE read as JSON if it parses, else a string); repeatable",
    )
    train.add_argument("--z-dim", type=int, default=None, help=f"latent dimensions [{DEFAULTS_MODEL['z_dim']}]")
    train.add_argument("--hidden", default=None, help="hidden-layer widths, comma-separated, data side first [128]")
    train.add_argument("--lr", type=float, default=DEFAULTS_TRAIN.lr, help="learning rate (the start of a schedule)")
    _add_optimizer_flags(train)
    train.add_argument(
        "--elbo",
        default=DEFAULTS_TRAIN.elbo,
        help="trace | meanfield | jit | iwae | enum | tracegraph | stl | reference-mc | reference-analytic | "
        "reference-stl",
    )
    train.add_argument(
        "--path",
        default=DEFAULTS_TRAIN.path,
        help="fast | plain | auto: the Pyro objectives' update without SVI (one torch optimizer), or through "
        "pyro.infer.SVI; the same numbers either way [auto: fast]",
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
    train.add_argument(
        "--scale-param", default=None, help="guide scale head: log_scale | log_var | softplus [log_scale]"
    )
    train.add_argument(
        "--latent-layers",
        type=integer_or_text,
        default=None,
        help="1: z; 2: the hierarchical VAE z2 -> z1 -> x, guide q(z1 | x) q(z2 | z1) (use --elbo trace) [1]",
    )
    train.add_argument(
        "--top-z-dim",
        type=integer_or_text,
        default=None,
        help="dimensions of z2 with --latent-layers 2, 1 to --z-dim [z_dim // 2]",
    )
    _add_part_flags(train)
    train.add_argument("--seed", type=int, default=DEFAULTS_TRAIN.seed)
    train.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda [cpu]")
    train.add_argument("--eval-every", type=int, default=DEFAULTS_TRAIN.eval_every, help="test ELBO every N epochs")
    _add_evaluation_flags(train)
    train.add_argument("--out", type=Path, default=None, help="run folder [runs/<data>-<time>]")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out (its config.json; --epochs may extend it)"
    )
    _add_trust_flag(train, "--resume")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(handler=command_train)

    evaluate = commands.add_parser(
        "evaluate", help="reload a run folder and evaluate it", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    evaluate.add_argument("run_dir", type=Path)
    _add_evaluation_flags(evaluate)
    _add_trust_flag(evaluate, "evaluating RUN_DIR")
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument(
        "--gap-examples",
        type=int,
        default=DEFAULTS_REPORT.gap_examples,
        help="test examples for the amortization / approximation gap (a local SVI fit each); 0 skips it",
    )
    evaluate.add_argument(
        "--gap-steps", type=int, default=DEFAULTS_REPORT.gap_steps, help="SVI steps of the per-example Normal guides"
    )
    evaluate.add_argument(
        "--draws",
        type=int,
        default=DEFAULTS_REPORT.draws,
        help="guide draws per test example saved for ArviZ in posterior.nc",
    )
    evaluate.set_defaults(handler=command_evaluate)
    _add_compare_kl(commands)
    add_use_commands(commands)
    return parser


def _add_optimizer_flags(parser: argparse.ArgumentParser) -> None:
    """``--optim --lr-schedule --lr-decay`` (names listed from the registries of :mod:`ppl_vae.optim`)."""
    from ppl_vae.optim import LR_SCHEDULES, OPTIMIZERS

    parser.add_argument("--optim", default=DEFAULTS_TRAIN.optim, help=" | ".join(sorted(OPTIMIZERS)))
    parser.add_argument(
        "--lr-schedule",
        default=DEFAULTS_TRAIN.lr_schedule,
        help=f"{' | '.join(sorted(LR_SCHEDULES))}: over the run's steps (epochs x minibatches, fixed at the start)",
    )
    parser.add_argument(
        "--lr-decay",
        type=float,
        default=DEFAULTS_TRAIN.lr_decay,
        help="final factor of --lr-schedule, in (0, 1]: the learning rate falls to lr x decay at the last step",
    )


PART_FIELDS = ("likelihood", "prior", "guide", "net", "pixel_scale", "prior_components", "rank", "flow_layers")
"""The ModelConfig fields set by the part flags (``--likelihood`` ... ``--flow-layers``)."""

MODEL_FIELDS = ("z_dim", "hidden", "scale_param", "latent_layers", "top_z_dim", *PART_FIELDS)
"""The ModelConfig fields set by ``ppl-vae train``'s model flags; ``None`` (the flag's default) means not given."""


def _add_trust_flag(parser: argparse.ArgumentParser, when: str) -> None:
    parser.add_argument(
        "--trust-program",
        action="store_true",
        help=f"allow {when} to import and run the program a run folder names (see --program); "
        "only for run folders you trust",
    )


def _add_part_flags(parser: argparse.ArgumentParser) -> None:
    """``--likelihood --prior --guide --net`` (their names listed from the registries) and the parts' options."""
    from ppl_vae.guides import GUIDES
    from ppl_vae.likelihoods import LIKELIHOODS
    from ppl_vae.nets import NETS
    from ppl_vae.priors import PRIORS

    default = DEFAULTS_MODEL
    for name, registry in (("likelihood", LIKELIHOODS), ("prior", PRIORS), ("guide", GUIDES), ("net", NETS)):
        parser.add_argument(f"--{name}", default=None, help=f"{' | '.join(sorted(registry))} [{default[name]}]")
    parser.add_argument(
        "--pixel-scale",
        type=float,
        default=None,
        help=f"scale of --likelihood gaussian, laplace [{default['pixel_scale']}]",
    )
    parser.add_argument(
        "--prior-components", type=int, default=None, help=f"K of --prior mog, vamp [{default['prior_components']}]"
    )
    parser.add_argument(
        "--rank", type=int, default=None, help=f"covariance rank of --guide lowrank [{default['rank']}]"
    )
    parser.add_argument(
        "--flow-layers", type=int, default=None, help=f"flows of --guide iaf [{default['flow_layers']}]"
    )


def _config_from_args(args) -> RunConfig:
    from ppl_vae.data import load_dataset
    from ppl_vae.parts import check_model, check_train
    from ppl_vae.run import model_config_for, program_spec_for
    from ppl_vae.user_program import parse_program_args

    # the parts a flag names are checked as soon as their config exists: training's before the data set loads
    train = TrainConfig(
        epochs=DEFAULTS_TRAIN.epochs if args.epochs is None else args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optim=args.optim,
        lr_schedule=args.lr_schedule,
        lr_decay=args.lr_decay,
        elbo=args.elbo,
        path=args.path,
        num_particles=args.num_particles,
        beta=args.beta,
        anneal=args.anneal,
        anneal_epochs=args.anneal_epochs,
        seed=args.seed,
        device=args.device or "cpu",
        eval_every=args.eval_every,
    )
    check_train(train)
    evaluation = EvalConfig(k=args.k, num_particles=args.eval_particles, memory_mb=args.eval_memory_mb)
    options = {name: getattr(args, name) for name in MODEL_FIELDS if getattr(args, name) is not None}
    if args.program is not None:
        given = [f"--{name.replace('_', '-')}" for name in options] + ["--conditional"] * args.conditional
        if given:
            raise InputError(
                f"{', '.join(given)}: --program builds its own model and guide; leave these out (pass the program's "
                "options as --program-arg KEY=VALUE)"
            )
        program_args = parse_program_args(args.program_arg)  # before the data set loads: a typo fails at once
    elif args.program_arg:
        raise InputError("--program-arg needs --program MODULE:FUNCTION: it is an option of your own program")
    if "hidden" in options:
        options["hidden"] = parse_hidden(options["hidden"])
    data_config = DataConfig(name=args.data, root=args.data_root, download=args.download)
    data = load_dataset(data_config.name, root=data_config.root, download=data_config.download)
    if args.program is not None:
        spec = program_spec_for(data, args.program, program_args)
        return RunConfig(program=spec, data=data_config, train=train, evaluation=evaluation)
    model = check_model(model_config_for(data, conditional=args.conditional, **options))
    return RunConfig(model=model, data=data_config, train=train, evaluation=evaluation)


def command_train(args) -> None:
    from ppl_vae.run import default_run_dir, load_config, train_run

    if args.resume:
        if args.out is None:
            raise InputError("--resume needs --out RUN_DIR: the run folder to continue")
        if args.program is not None or args.program_arg:
            raise InputError(
                "--resume continues the program named in the run folder's config.json: leave out --program"
            )
        config = load_config(args.out)
        changes = {"epochs": args.epochs} if args.epochs is not None else {}
        if args.device is not None:
            changes["device"] = args.device
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, **changes))
    else:
        config = _config_from_args(args)
    run_dir = args.out or default_run_dir(config.data.name)
    try:
        metrics = train_run(
            config, run_dir, resume=args.resume, progress=not args.no_progress, trust_program=args.trust_program
        )
    except KeyboardInterrupt:
        print(f"\ninterrupted: continue with  ppl-vae train --resume --out {run_dir}", file=sys.stderr)
        raise SystemExit(130) from None
    print_metrics(metrics)
    print(f"run folder: {run_dir}")


def command_evaluate(args) -> None:
    from ppl_vae.report import format_table
    from ppl_vae.run import evaluate_run

    evaluation = EvalConfig(k=args.k, num_particles=args.eval_particles, memory_mb=args.eval_memory_mb)
    report = ReportConfig(gap_examples=args.gap_examples, gap_steps=args.gap_steps, draws=args.draws)
    metrics = evaluate_run(
        args.run_dir, evaluation, device=args.device, report=report, trust_program=args.trust_program
    )
    print_metrics(metrics)
    print()
    print(format_table(metrics["report"]))
    print(f"report: {args.run_dir / 'report.md'}")


def _add_compare_kl(commands) -> None:
    from ppl_vae.lab import ESTIMATORS, LabConfig

    lab = LabConfig()
    kl = commands.add_parser(
        "compare-kl",
        help="Monte Carlo vs analytic KL: ELBO, gradient variance, time, training curves (and scale heads)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    kl.add_argument("--data", default="digits", help="digits | mnist | fashion-mnist | kmnist | path/to/file.npz")
    kl.add_argument("--data-root", default=None, help="folder of torchvision data sets")
    kl.add_argument("--download", action="store_true", help="let torchvision download the data set")
    kl.add_argument("--run", type=Path, default=None, help="study the trained VAE of this run folder (and its data)")
    _add_trust_flag(kl, "--run")
    kl.add_argument("--z-dim", type=int, default=None, help="latent dimensions of a fresh VAE [8]")
    kl.add_argument("--hidden", default=None, help="hidden-layer widths of a fresh VAE, comma-separated [128]")
    kl.add_argument("--scale-param", default=None, help="head of a fresh VAE: log_scale | log_var | softplus")
    kl.add_argument("--net", default=None, help="network of a fresh VAE [mlp]")
    kl.add_argument(
        "--latent-layers",
        type=integer_or_text,
        default=None,
        help="latent layers of a fresh VAE: 1 (z) or 2 (z2 -> z1 -> x); the classic losses take 1 [1]",
    )
    kl.add_argument(
        "--top-z-dim", type=integer_or_text, default=None, help="dimensions of z2 with --latent-layers 2 [z_dim // 2]"
    )
    kl.add_argument("--estimators", default=",".join(ESTIMATORS), help="objectives to compare, comma-separated")
    kl.add_argument("--repetitions", type=int, default=lab.repetitions, help="R: evaluations at fixed parameters")
    kl.add_argument("--epochs", type=int, default=lab.epochs, help="E: training epochs per estimator (0: none)")
    kl.add_argument("--batch-size", type=int, default=lab.batch_size, help="fixed minibatch and training batch")
    kl.add_argument("--lr", type=float, default=lab.lr, help="Adam learning rate")
    kl.add_argument("--num-particles", type=int, default=lab.num_particles, help="samples of z per example")
    kl.add_argument("--seed", type=int, default=lab.seed)
    kl.add_argument("--device", default=lab.device)
    kl.add_argument("--heads", action="store_true", help="also train each scale head under MC and analytic KL")
    kl.add_argument("--out", type=Path, default=None, help="output folder [runs/compare-kl-<data>-<time>]")
    kl.set_defaults(handler=command_compare_kl)


def command_compare_kl(args) -> None:
    import time

    from ppl_vae import lab

    settings = lab.LabConfig(
        estimators=tuple(name.strip() for name in args.estimators.split(",") if name.strip()),
        repetitions=args.repetitions,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        num_particles=args.num_particles,
        seed=args.seed,
        device=args.device,
    )
    options = {name: getattr(args, name) for name in ("z_dim", "scale_param", "net", "latent_layers", "top_z_dim")}
    options["hidden"] = parse_hidden(args.hidden) if args.hidden is not None else None
    vae, data = lab.prepare(
        run_dir=args.run,
        trust_program=args.trust_program,
        data_name=args.data,
        data_root=args.data_root,
        download=args.download,
        seed=args.seed,
        **{key: value for key, value in options.items() if value is not None},
    )
    out = args.out or Path("runs") / f"compare-kl-{Path(data.name).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    print(lab.write_report(lab.compare_kl(vae, data, settings, heads=args.heads), out))
    print(f"written: {out}/compare_kl.json, compare_kl.md, compare_kl.png")


def print_metrics(metrics: dict) -> None:
    """A small table of the test metrics, nats per example (of ``log p(x | y)`` for a conditional model)."""
    of = "log p(x | y)" if metrics.get("conditional") else "log p(x)"
    rows = [
        (f"test ELBO ({metrics['elbo_particles']} samples)", metrics["test_elbo"], metrics["test_elbo_se"]),
        (f"test {of} (IWAE, k={metrics['k']})", metrics["test_log_likelihood"], metrics["test_log_likelihood_se"]),
    ]
    cells = [[name, f"{value:.3f}", f"{se:.3f}"] for name, value, se in rows]
    if "train_elbo" in metrics:
        cells.append(["train ELBO (last epoch)", f"{metrics['train_elbo']:.3f}", ""])
    print(table(["metric", "nats per example", "std. error"], cells, style="terminal"))
    if metrics.get("eval_examples_per_second") is not None:
        speed = metrics["eval_examples_per_second"]
        print(f"log p(x) evaluation: {speed:.1f} test examples per second (k={metrics['k']})")


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
