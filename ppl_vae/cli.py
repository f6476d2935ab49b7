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

from ppl_vae import cli_use, flags
from ppl_vae.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from ppl_vae.errors import InputError
from ppl_vae.report import ReportConfig
from ppl_vae.tables import table


def parse_hidden(text: str) -> tuple[int, ...]:
    """``"256,128"`` -> ``(256, 128)``; anything else is an :class:`InputError`."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise InputError(f"--hidden {text!r} is empty: expected comma-separated layer widths, e.g. 128 or 256,128")
    try:
        return tuple(int(part) for part in parts)
    except ValueError:
        raise InputError(f"--hidden {text!r}: expected comma-separated integers, e.g. 128 or 256,128") from None


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors (an unknown flag, ``--z-dim x``, a missing ``--a``) are one line,
    ``ppl-vae: error: ...``, and exit status 2, like every other bad input: no usage block (``--help`` has it).
    Subparsers are of the same class (``add_subparsers`` makes them with the parent's)."""

    def error(self, message: str):
        self.exit(2, f"ppl-vae: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``ppl-vae`` parser, every command and flag from the table of :mod:`ppl_vae.flags`."""
    parser = OneLineParser(
        prog="ppl-vae", description="Variational autoencoders with Pyro: train, evaluate, use a trained run."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in flags.commands():
        flags.add_command(subparsers, command).set_defaults(handler=HANDLERS[command.name])
    return parser


PART_FIELDS = ("likelihood", "prior", "guide", "net", "pixel_scale", "prior_components", "rank", "flow_layers")
"""The ModelConfig fields set by the part flags (``--likelihood`` ... ``--flow-layers``)."""

MODEL_FIELDS = ("z_dim", "hidden", "scale_param", "latent_layers", "top_z_dim", *PART_FIELDS)
"""The ModelConfig fields set by ``ppl-vae train``'s model flags; ``None`` (the flag's default) means not given."""


def _config_from_args(args) -> RunConfig:
    from ppl_vae.bounds import check_memory
    from ppl_vae.data import load_dataset
    from ppl_vae.parts import check_model, check_train
    from ppl_vae.run import model_config_for, program_spec_for
    from ppl_vae.user_program import parse_program_args

    # the parts a flag names are checked as soon as their config exists: training's before the data set loads
    train = TrainConfig(
        epochs=TrainConfig.epochs if args.epochs is None else args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optim=args.optim,
        lr_schedule=args.lr_schedule,
        lr_decay=args.lr_decay,
        elbo=args.elbo,
        num_particles=args.num_particles,
        beta=args.beta,
        anneal=args.anneal,
        anneal_epochs=args.anneal_epochs,
        seed=args.seed,
        device=args.device or "cpu",
        eval_every=args.eval_every,
        eval_particles=args.epoch_eval_particles,
    )
    check_train(train)
    evaluation = EvalConfig(k=args.k, num_particles=args.eval_particles)
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
    check_memory(model, train, evaluation, data.x_train.shape[0], data.x_test.shape[0])
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

    evaluation = EvalConfig(k=args.k, num_particles=args.eval_particles)
    report = ReportConfig(gap_examples=args.gap_examples, gap_steps=args.gap_steps, draws=args.draws)
    metrics = evaluate_run(
        args.run_dir, evaluation, device=args.device, report=report, trust_program=args.trust_program
    )
    print_metrics(metrics)
    print()
    print(format_table(metrics["report"]))
    print(f"report: {args.run_dir / 'report.md'}")


def command_compare_kl(args) -> None:
    import time

    from ppl_vae import lab
    from ppl_vae.inputs import require_device

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
    require_device(settings.device)
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


HANDLERS = {
    "train": command_train,
    "evaluate": command_evaluate,
    "compare-kl": command_compare_kl,
    "sample": cli_use.command_sample,
    "reconstruct": cli_use.command_reconstruct,
    "encode": cli_use.command_encode,
    "traverse": cli_use.command_traverse,
    "interpolate": cli_use.command_interpolate,
}
"""The function that runs each command of :func:`ppl_vae.flags.commands`, called with the parsed ``args``."""


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # --help (0) or a flag argparse refuses (2, one line already printed)
        return exit.code or 0
    try:
        args.handler(args)
    except InputError as error:  # its first line: Pyro appends its trace's shapes to an error raised inside a model
        print(f"ppl-vae: error: {(str(error).splitlines() or [''])[0]}", file=sys.stderr)
        return 2
    except FloatingPointError as error:
        print(f"ppl-vae: error: {error}", file=sys.stderr)
        return 1
    return 0
