"""Command line: ``ppl-vae train``, ``ppl-vae evaluate``, ``ppl-vae compare-kl``, ``compare`` and ``sweep``
(:mod:`ppl_vae.cli_compare`), and the commands that use a trained run, ``sample``, ``reconstruct``, ``encode``,
``traverse``, ``interpolate`` (:mod:`ppl_vae.cli_use`) (also ``python -m ppl_vae``).

Bad input ends with one line ``ppl-vae: error: ...`` naming the value and what was expected, and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ppl_vae.cli_compare import add_compare_commands
from ppl_vae.cli_use import add_use_commands
from ppl_vae.config import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig
from ppl_vae.errors import InputError
from ppl_vae.interrupt import Interrupted
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
        default=None,
        help="trace | meanfield | jit | iwae | enum | tracegraph | tracegraph-baseline | stl | reference-mc | "
        "reference-analytic | reference-stl [trace; enum for --family m2, joint]",
    )
    train.add_argument(
        "--path",
        default=DEFAULTS_TRAIN.path,
        help="graph | fast | plain | auto: the Pyro objectives' update from a loss traced once per batch shape "
        "(trace, stl, iwae), without SVI (one torch optimizer), or through pyro.infer.SVI; the same numbers every "
        "way [auto: graph where it applies, else fast]",
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
    _add_family_flags(train)
    train.add_argument("--seed", type=int, default=DEFAULTS_TRAIN.seed)
    train.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda [cpu]")
    train.add_argument("--eval-every", type=int, default=DEFAULTS_TRAIN.eval_every, help="test ELBO every N epochs")
    train.add_argument(
        "--val-fraction",
        type=float,
        default=DEFAULTS_TRAIN.val_fraction,
        help="share of the training set held out (from --seed) for the per-epoch ELBO; the test set is then "
        "evaluated once, after training (0: no validation set, the per-epoch ELBO is the test ELBO)",
    )
    train.add_argument(
        "--on-nan",
        default=DEFAULTS_TRAIN.on_nan,
        help="a training step whose loss or gradients are not finite (never applied): stop | skip (and go on)",
    )
    train.add_argument(
        "--max-nan-skips",
        type=int,
        default=DEFAULTS_TRAIN.max_nan_skips,
        help="with --on-nan skip: the most steps a run may skip before it stops",
    )
    _add_evaluation_flags(train)
    train.add_argument("--out", type=Path, default=None, help="run folder [runs/<data>-<time>]")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out (its config.json; --epochs may extend it)"
    )
    _add_trust_flag(train, "--resume")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument(
        "--tensorboard",
        action="store_true",
        help="log every epoch to RUN_DIR/tensorboard (tensorboard --logdir runs/); needs the tensorboard extra",
    )
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
    add_compare_commands(commands)
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


def _add_family_flags(parser: argparse.ArgumentParser) -> None:
    """``--family --labelled --classes --alpha``: the discrete-latent families of :mod:`ppl_vae.semisupervised`."""
    parser.add_argument(
        "--family",
        default=DEFAULTS_MODEL["family"],
        help="vae | m2 (semi-supervised M2: y observed where labelled, enumerated where not) | joint (y enumerated "
        "everywhere, no labels)",
    )
    parser.add_argument(
        "--labelled",
        type=integer_or_text,
        default=None,
        help="--family m2: training examples that keep their label, balanced over classes and chosen from --seed; "
        "all: every one [all]",
    )
    parser.add_argument(
        "--classes", type=integer_or_text, default=None, help="--family joint: values of y [the data's classes]"
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="--family m2: weight of the classification term alpha log q(y | x) [0.1 x training examples]",
    )


def _family_options(args, data) -> dict:
    """The ModelConfig fields that ``--family`` and ``--classes`` set (``family``, ``num_classes``)."""
    if args.family == "vae":
        if args.classes is not None:
            raise InputError(f"--classes {args.classes} is an option of --family joint")
        return {}
    if args.conditional:
        raise InputError(f"--conditional and --family {args.family}: the family's y is a latent, not an input")
    if args.family == "joint":
        classes = args.classes if args.classes is not None else data.num_classes
        if classes == 0:
            raise InputError(f"--family joint on data set {data.name!r} without labels needs --classes C")
        return {"family": "joint", "num_classes": classes}
    if args.classes is not None:
        raise InputError(f"--classes {args.classes}: --family {args.family} takes the data's classes")
    if args.family == "m2" and data.num_classes == 0:
        raise InputError(f"--family m2 needs labels, and data set {data.name!r} has none")
    return {"family": args.family, "num_classes": data.num_classes}


def _labelled(value) -> int | None:
    """``--labelled``: ``all`` (or absent) -> ``None``; a count stays as it is, for the config check."""
    return None if value in (None, "all") else value


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
        elbo=args.elbo or ("enum" if args.family in ("m2", "joint") else DEFAULTS_TRAIN.elbo),
        path=args.path,
        num_particles=args.num_particles,
        beta=args.beta,
        anneal=args.anneal,
        anneal_epochs=args.anneal_epochs,
        seed=args.seed,
        device=args.device or "cpu",
        eval_every=args.eval_every,
        labelled=_labelled(args.labelled),
        alpha=args.alpha,
        val_fraction=args.val_fraction,
        on_nan=args.on_nan,
        max_nan_skips=args.max_nan_skips,
    )
    check_train(train)
    evaluation = EvalConfig(k=args.k, num_particles=args.eval_particles, memory_mb=args.eval_memory_mb)
    options = {name: getattr(args, name) for name in MODEL_FIELDS if getattr(args, name) is not None}
    if args.program is not None:
        given = [f"--{name.replace('_', '-')}" for name in options] + ["--conditional"] * args.conditional
        given += [f"--{name}" for name in ("classes",) if getattr(args, name) is not None]
        given += ["--family"] * (args.family != "vae")
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
    options.update(_family_options(args, data))
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
        config, refused = _resumed_config(load_config(args.out), args, given_options(args.argv))
    else:
        config, refused = _config_from_args(args), ()
    run_dir = args.out or default_run_dir(config.data.name)
    try:
        metrics = train_run(
            config,
            run_dir,
            resume=args.resume,
            progress=not args.no_progress,
            trust_program=args.trust_program,
            tensorboard=args.tensorboard,
            refused=refused,
        )
    except Interrupted as stopped:
        print(f"ppl-vae: {stopped}; continue with: ppl-vae train --resume --out {run_dir}", file=sys.stderr)
        raise SystemExit(stopped.exit_status) from None
    except KeyboardInterrupt:
        kept = Path(run_dir, "checkpoint.pt").is_file()
        then = (
            f"the last checkpoint is kept; continue with: ppl-vae train --resume --out {run_dir}"
            if kept
            else ("nothing was trained")
        )
        print(f"\nppl-vae: interrupted at once: {then}", file=sys.stderr)
        raise SystemExit(130) from None
    print_metrics(metrics)
    print(f"run folder: {run_dir}")


RESUME_FIELDS = {
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "lr": ("train", "lr"),
    "optim": ("train", "optim"),
    "lr_schedule": ("train", "lr_schedule"),
    "lr_decay": ("train", "lr_decay"),
    "elbo": ("train", "elbo"),
    "num_particles": ("train", "num_particles"),
    "beta": ("train", "beta"),
    "anneal": ("train", "anneal"),
    "anneal_epochs": ("train", "anneal_epochs"),
    "seed": ("train", "seed"),
    "device": ("train", "device"),
    "eval_every": ("train", "eval_every"),
    "on_nan": ("train", "on_nan"),
    "max_nan_skips": ("train", "max_nan_skips"),
    "k": ("evaluation", "k"),
    "eval_particles": ("evaluation", "num_particles"),
    "data": ("data", "name"),
    "data_root": ("data", "root"),
    "download": ("data", "download"),
    **{name: ("model", name) for name in MODEL_FIELDS},
}
"""``ppl-vae train`` flags (their ``dest``) and the RunConfig field each sets, for ``--resume``: the flags a user gives
are laid over the run's config.json, and :mod:`ppl_vae.resume` decides which changes are allowed."""


def given_options(argv: list[str]) -> set[str]:
    """The ``dest`` of every option that ``argv`` actually gives (not those left at their defaults): ``argv`` parsed
    again with every default suppressed."""
    parser = build_parser()
    for action in parser._subparsers._group_actions:  # the sub-commands' parsers
        for command in action.choices.values():
            for option in command._actions:
                option.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"command", "handler"}


def _resumed_config(stored: RunConfig, args, given: set[str]) -> tuple[RunConfig, tuple[str, ...]]:
    """``stored`` with the values of the ``given`` flags laid over it; and the changes that cannot even be expressed
    as a config of this run (a model flag for a program's run, ``--conditional`` for a run without labels), described
    for the refusal of :func:`ppl_vae.resume.check_resume`."""
    sections = {name: dataclasses.asdict(getattr(stored, name)) for name in ("train", "evaluation", "data")}
    sections["model"] = None if stored.model is None else dataclasses.asdict(stored.model)
    refused = []
    for dest in sorted(given & set(RESUME_FIELDS)):
        section, field = RESUME_FIELDS[dest]
        value = getattr(args, dest)
        if section == "model" and sections["model"] is None:
            refused.append(f"--{dest.replace('_', '-')} (the run trains the program {stored.program.path!r})")
            continue
        sections[section][field] = parse_hidden(value) if dest == "hidden" else value
    if "conditional" in given and (stored.model is None or stored.model.num_classes == 0):
        refused.append("--conditional (the run is not conditional)")
    model = None if sections["model"] is None else ModelConfig(**sections["model"])
    resumed = RunConfig(
        model=model,
        program=stored.program,
        data=DataConfig(**sections["data"]),
        train=TrainConfig(**sections["train"]),
        evaluation=EvalConfig(**sections["evaluation"]),
    )
    return resumed, tuple(refused)


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
    kl.add_argument(
        "--estimators",
        default=None,
        help=f"objectives to compare, comma-separated [{','.join(ESTIMATORS)}; with --family m2 or joint: "
        "enum,tracegraph,tracegraph-baseline]",
    )
    kl.add_argument(
        "--family",
        default="vae",
        help="vae | m2 | joint: with m2 or joint, compare the estimators of the discrete latent y instead (enumerated "
        "or sampled): gradient variance of the classifier, encoder and decoder, test accuracy after --epochs",
    )
    kl.add_argument("--labelled", type=integer_or_text, default=None, help="--family m2: labelled examples [all]")
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

    if args.family != "vae":
        return command_compare_discrete(args)
    settings = lab.LabConfig(
        estimators=tuple(
            name.strip() for name in (args.estimators or ",".join(lab.ESTIMATORS)).split(",") if name.strip()
        ),
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


def command_compare_discrete(args) -> None:
    """``compare-kl --family m2|joint``: :func:`ppl_vae.lab.discrete.compare_discrete` on a fresh program."""
    import json
    import time

    from ppl_vae.data import load_dataset
    from ppl_vae.lab.discrete import DISCRETE_ESTIMATORS, compare_discrete, format_discrete
    from ppl_vae.run import model_config_for
    from ppl_vae.semisupervised import discrete_program
    from ppl_vae.train import seed_everything

    if args.run is not None:
        raise InputError("--family with --run: the discrete comparison starts from a fresh program; leave out --run")
    names = tuple(
        name.strip() for name in (args.estimators or ",".join(DISCRETE_ESTIMATORS)).split(",") if name.strip()
    )
    data = load_dataset(args.data, root=args.data_root, download=args.download)
    args.classes, args.conditional = None, False
    options = {"hidden": parse_hidden(args.hidden)} if args.hidden is not None else {}
    options.update({"z_dim": args.z_dim} if args.z_dim is not None else {}, **_family_options(args, data))
    model = model_config_for(data, **options)
    train = TrainConfig(
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, labelled=_labelled(args.labelled), elbo="enum"
    )
    config = RunConfig(model=model, data=DataConfig(name=args.data, root=args.data_root), train=train)
    if args.repetitions < 2 or args.epochs < 0:
        raise InputError(f"--repetitions {args.repetitions} (>= 2) and --epochs {args.epochs} (>= 0)")
    seed_everything(args.seed)
    result = compare_discrete(discrete_program(model), data, config, names, args.repetitions, args.epochs)
    out = args.out or Path("runs") / f"compare-discrete-{Path(data.name).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare_discrete.json").write_text(json.dumps(result, indent=2))
    text = format_discrete(result)
    (out / "compare_discrete.md").write_text(text + "\n")
    print(text)
    print(f"written: {out}/compare_discrete.json, compare_discrete.md")


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
    if "test_log_likelihood_exact_y" in metrics:  # --family m2 | joint
        exact = (metrics["test_log_likelihood_exact_y"], metrics["test_log_likelihood_exact_y_se"])
        cells.insert(2, [f"test log p(x), summed over y (k={metrics['k']})", f"{exact[0]:.3f}", f"{exact[1]:.3f}"])
    print(table(["metric", "nats per example", "std. error"], cells, style="terminal"))
    accuracies = [name for name in ACCURACY_KEYS if metrics.get(name) is not None]
    if accuracies:
        print(", ".join(f"{name.replace('_', ' ')} {100 * metrics[name]:.1f} %" for name in accuracies))

    if metrics.get("eval_examples_per_second") is not None:
        speed = metrics["eval_examples_per_second"]
        print(f"log p(x) evaluation: {speed:.1f} test examples per second (k={metrics['k']})")


ACCURACY_KEYS = ("test_accuracy", "bayes_accuracy", "baseline_accuracy", "clustering_accuracy")
"""The fractions that ``print_metrics`` shows as percentages (``--family m2 | joint``)."""


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status: 0 done, 1 training failed (not finite, diverged), 2 bad input, 130
    interrupted (SIGINT) at start-up or in a command other than ``train`` (which handles its own signals, see
    :mod:`ppl_vae.interrupt`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args, train_flags = parser.parse_known_args(argv)
        if train_flags and not getattr(args, "takes_train_flags", False):
            parser.parse_args(argv)  # argparse's own message for the flags it does not know, and exit 2
        args.train_flags = train_flags
        args.argv = argv
        args.handler(args)
    except InputError as error:
        print(f"ppl-vae: error: {error}", file=sys.stderr)
        return 2
    except FloatingPointError as error:
        print(f"ppl-vae: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nppl-vae: interrupted", file=sys.stderr)
        return 130
    return 0
