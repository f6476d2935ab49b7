"""Command line: ``ppl-vae train``, ``ppl-vae evaluate``, ``ppl-vae compare-kl``, ``compare`` and ``sweep``
(:mod:`ppl_vae.cli_compare`), and the commands that use a trained run, ``sample``, ``reconstruct``, ``encode``,
``traverse``, ``interpolate`` (:mod:`ppl_vae.cli_use`) (also ``python -m ppl_vae``).

Bad input ends with one line ``ppl-vae: error: ...`` naming the value and what was expected, and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from ppl_vae import cli_compare, cli_use, flags
from ppl_vae.config import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig
from ppl_vae.errors import InputError
from ppl_vae.interrupt import Interrupted
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


def build_parser(given_only: bool = False) -> argparse.ArgumentParser:
    """The ``ppl-vae`` parser, every command and flag from the table of :mod:`ppl_vae.flags`; ``given_only``: its
    flags without defaults (:func:`given_options`)."""
    parser = OneLineParser(
        prog="ppl-vae", description="Variational autoencoders with Pyro: train, evaluate, use a trained run."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in flags.commands():
        flags.add_command(subparsers, command, given_only).set_defaults(handler=HANDLERS[command.name])
    return parser


PART_FIELDS = ("likelihood", "prior", "guide", "net", "pixel_scale", "prior_components", "rank", "flow_layers")
"""The ModelConfig fields set by the part flags (``--likelihood`` ... ``--flow-layers``)."""

MODEL_FIELDS = ("z_dim", "hidden", "scale_param", "latent_layers", "top_z_dim", *PART_FIELDS)
"""The ModelConfig fields set by ``ppl-vae train``'s model flags; ``None`` (the flag's default) means not given."""


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
        elbo=args.elbo or ("enum" if args.family in ("m2", "joint") else TrainConfig.elbo),
        path=args.path,
        num_particles=args.num_particles,
        beta=args.beta,
        anneal=args.anneal,
        anneal_epochs=args.anneal_epochs,
        seed=args.seed,
        device=args.device or "cpu",
        eval_every=args.eval_every,
        eval_particles=args.epoch_eval_particles,
        labelled=_labelled(args.labelled),
        alpha=args.alpha,
        val_fraction=args.val_fraction,
        on_nan=args.on_nan,
        max_nan_skips=args.max_nan_skips,
        keyed_noise=args.keyed_noise,
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
    check_memory(model, train, evaluation, data.x_train.shape[0], data.x_test.shape[0])
    return RunConfig(model=model, data=data_config, train=train, evaluation=evaluation)


def command_train(args) -> None:
    from ppl_vae import distributed
    from ppl_vae.run import default_run_dir, train_run

    if args.nproc is not None:  # checked here first, so that bad flags are one line, not one per process
        from ppl_vae.launch import check_nproc, launch

        nproc = check_nproc(args.nproc)
        if distributed.launched():
            raise InputError(f"--nproc {nproc} inside torchrun: the processes are torchrun's; leave out --nproc")
        train = _train_config(args)[0].train
        if nproc > 1 or train.keyed_noise:
            from ppl_vae.data_parallel import require_shardable

            why = f"with {nproc} processes" if nproc > 1 else "with --keyed-noise"
            require_shardable(train.elbo, train.path, why)
        raise SystemExit(launch(nproc, args.argv))
    config, refused = _train_config(args)
    run_dir = args.out or default_run_dir(config.data.name)
    try:
        with distributed.process_group(distributed.rank_device(config.train.device)):
            main = distributed.is_main()
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
    if main:
        print_metrics(metrics)
        print(f"run folder: {run_dir}")


def _train_config(args) -> tuple[RunConfig, tuple[str, ...]]:
    """``train``'s RunConfig from the flags (laid over the run's config.json with ``--resume``) and the changes a
    resume must refuse."""
    from ppl_vae.run import load_config

    if args.resume:
        if args.out is None:
            raise InputError("--resume needs --out RUN_DIR: the run folder to continue")
        if args.program is not None or args.program_arg:
            raise InputError(
                "--resume continues the program named in the run folder's config.json: leave out --program"
            )
        return _resumed_config(load_config(args.out), args, given_options(args.argv))
    return _config_from_args(args), ()


RESUME_FIELDS = {flag.dest: flag.sets for flag in flags.command("train").flags if flag.sets is not None}
"""``ppl-vae train`` flags (their ``dest``) and the RunConfig field each sets (:attr:`ppl_vae.flags.Flag.sets`, read
from the one flag table), for ``--resume``: the flags a user gives are laid over the run's config.json, and
:mod:`ppl_vae.resume` decides which changes are allowed."""


def given_options(argv: list[str]) -> set[str]:
    """The ``dest`` of every option that ``argv`` actually gives (not those left at their defaults): ``argv`` parsed
    again by a parser whose flags have no defaults."""
    return set(vars(build_parser(given_only=True).parse_args(argv))) - {"command", "handler", "takes_train_flags"}


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
        sections[section][field] = {"hidden": parse_hidden, "labelled": _labelled}.get(dest, lambda given: given)(value)
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


def command_compare_kl(args) -> None:
    import time

    from ppl_vae import lab
    from ppl_vae.inputs import require_device

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
    head_runs, fresh = lab.heads_design_from_args(args, vae, settings)
    out = args.out or Path("runs") / f"compare-kl-{Path(data.name).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    result = lab.compare_kl(vae, data, settings, heads=args.heads, head_runs=head_runs, fresh=fresh)
    print(lab.write_report(result, out))
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


HANDLERS = {
    "train": command_train,
    "evaluate": command_evaluate,
    "compare-kl": command_compare_kl,
    "sample": cli_use.command_sample,
    "reconstruct": cli_use.command_reconstruct,
    "encode": cli_use.command_encode,
    "traverse": cli_use.command_traverse,
    "interpolate": cli_use.command_interpolate,
    "compare": cli_compare.command_compare,
    "sweep": cli_compare.command_sweep,
}
"""The function that runs each command of :func:`ppl_vae.flags.commands`, called with the parsed ``args``."""


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status: 0 done, 1 training failed (not finite, diverged), 2 bad input, 130
    interrupted (SIGINT) at start-up or in a command other than ``train`` (which handles its own signals, see
    :mod:`ppl_vae.interrupt`), 141 standard output closed by its reader (128 + SIGPIPE, as a shell reports it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args, train_flags = parser.parse_known_args(argv)
        if train_flags and not getattr(args, "takes_train_flags", False):
            parser.parse_args(argv)  # argparse's own one-line message for the flags it does not know, and exit 2
        args.train_flags = train_flags
        args.argv = argv
    except SystemExit as exit:  # --help (0) or a flag argparse refuses (2, one line already printed)
        return exit.code or 0
    except KeyboardInterrupt:
        print("\nppl-vae: interrupted", file=sys.stderr)
        return 130
    try:
        args.handler(args)
    except InputError as error:  # its first line: Pyro appends its trace's shapes to an error raised inside a model
        print(f"ppl-vae: error: {(str(error).splitlines() or [''])[0]}", file=sys.stderr)
        return 2
    except FloatingPointError as error:
        print(f"ppl-vae: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nppl-vae: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ppl-vae train | head`: the reader left; a run folder keeps its last checkpoint
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        print("ppl-vae: output closed (broken pipe), stopped", file=sys.stderr)
        return 141
    return 0
