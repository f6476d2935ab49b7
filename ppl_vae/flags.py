"""Every flag of every command, in one table: its name, how its text is read, its default and its help.

:func:`commands` returns the table, one :class:`Command` per subcommand with its :class:`Flag` entries in the order
``--help`` lists them; :func:`add_command` turns one into an argparse subparser. Defaults come from the schema (the
dataclasses of :mod:`ppl_vae.config`, :class:`~ppl_vae.report.ReportConfig`, :class:`~ppl_vae.lab.LabConfig`), never
from a copy, and ``--help`` shows each exactly once, as ``(default: ...)`` at the end of the flag's line.

A flag's value lands in ``args.<dest>`` (the name without dashes, ``-`` -> ``_``: ``--z-dim`` -> ``args.z_dim``).
Two kinds of default:

- :func:`option` with ``unset=False``: ``args.<dest>`` holds the schema's default when the flag is absent;
- :func:`option` with ``unset=True``: ``args.<dest>`` is ``None`` when the flag is absent (so that the command can
  tell "not given" from "given the default", e.g. the model flags, which ``--program`` refuses, or ``--epochs`` and
  ``--device``, which ``--resume`` applies to a stored run); ``--help`` still shows the schema's default.

**Adding a flag** is one entry in its command's tuple below (or in a shared group such as ``_data_flags``), e.g.::

    option("--alpha", float, TrainConfig, "alpha", "weight of the classifier's loss"),
    switch("--tensorboard", "also write TensorBoard event files to RUN_DIR/tb"),
    option("--on-nan", str, None, "stop", "what a non-finite loss does: stop | skip"),   # a default of its own

then read ``args.alpha`` in the command function of :mod:`ppl_vae.cli`. A new subcommand is one more
:class:`Command` in :func:`commands` and its handler in ``cli.HANDLERS``. ``tests/test_flags.py`` checks that every
flag shows its default once and that every value of every flag ends in a run or one line with exit status 2.

Text is read by ``int``, ``float`` or ``str`` (argparse's own one-line errors, e.g. ``argument --z-dim: invalid int
value: 'x'``), or by :func:`integer_or_text` / :func:`number_or_text`, which hand text that is not a number to the
schema's check so that the error is the flag's own line (``--latent-layers must be an integer from 1 to 2, got
'true'``). Ranges are checked by the schema, not here.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VALUE, SWITCH, APPEND, POSITIONAL, POSITIONALS, REQUIRED = (
    "value",
    "switch",
    "append",
    "positional",
    "positionals",
    "required",
)


def integer_or_text(text: str) -> int | str:
    """``"2"`` -> ``2``; any other text is returned as it is, for the schema's check to refuse with the flag's own
    message."""
    try:
        return int(text)
    except ValueError:
        return text


def number_or_text(text: str) -> float | str:
    """``"3"`` -> ``3.0``; other text is returned as it is, for the check to refuse with the flag's own line."""
    try:
        return float(text)
    except ValueError:
        return text


@dataclass(frozen=True)
class Flag:
    """One flag of one command.

    Attributes:
        name: ``--z-dim`` (an option) or ``run_dir`` (a positional argument).
        help: what it does, without its default (added by :meth:`help_text`).
        parse: how argparse reads its text (``int``, ``float``, ``str``, ``Path``, :func:`integer_or_text`, ...).
        default: ``args.<dest>`` when the flag is absent.
        shown: the default as ``--help`` shows it; ``None`` for no default line (positionals).
        kind: ``value`` | ``switch`` (``store_true``) | ``append`` (repeatable) | ``positional`` | ``positionals``
            (one or more) | ``required``.
        metavar: the placeholder in ``--help`` (argparse's own when ``None``).
        sets: the field of a run's :class:`~ppl_vae.config.RunConfig` the flag sets, as ``(section, field)`` (e.g.
            ``("train", "eval_particles")`` for ``--epoch-eval-particles``): what ``ppl-vae train --resume`` lays
            over the run's config.json; ``None`` for a flag that sets none.
    """

    name: str
    help: str
    parse: Callable[[str], Any] | None = str
    default: Any = None
    shown: str | None = None
    kind: str = VALUE
    metavar: str | None = None
    sets: tuple[str, str] | None = None

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")

    def help_text(self) -> str:
        """``help`` with its default, once: argparse's ``%`` escaped."""
        text = self.help.replace("%", "%%")
        if self.kind == REQUIRED:
            return f"{text} (required)"
        return text if self.shown is None else f"{text} (default: {self.shown})"

    def add_to(self, parser: argparse.ArgumentParser, given_only: bool = False) -> None:
        """Add this flag to ``parser``; ``given_only``: without a default, so that ``args`` holds it only when given."""
        given = {"default": argparse.SUPPRESS} if given_only else {}
        if self.kind in (POSITIONAL, POSITIONALS):
            nargs = "+" if self.kind == POSITIONALS else None
            parser.add_argument(
                self.name, nargs=nargs, type=self.parse, help=self.help_text(), metavar=self.metavar, **given
            )
        elif self.kind == SWITCH:
            parser.add_argument(self.name, action="store_true", help=self.help_text(), **given)
        elif self.kind == APPEND:
            parser.add_argument(
                self.name,
                action="append",
                type=self.parse,
                metavar=self.metavar,
                help=self.help_text(),
                **({"default": []} | given),
            )
        else:
            parser.add_argument(
                self.name,
                type=self.parse,
                required=self.kind == REQUIRED,
                metavar=self.metavar,
                help=self.help_text(),
                **({"default": self.default} | given),
            )


def schema_default(schema: type | None, field: str | Any) -> Any:
    """The default of ``schema``'s dataclass field ``field`` (``schema=None``: ``field`` is the default itself)."""
    if schema is None:
        return field
    (found,) = [item for item in dataclasses.fields(schema) if item.name == field]
    return found.default


def option(
    name: str,
    parse: Callable[[str], Any],
    schema: type | None,
    field: str | Any,
    help: str,
    *,
    unset: bool = False,
    shown: str | None = None,
    metavar: str | None = None,
    sets: tuple[str, str] | None = None,
) -> Flag:
    """A flag that takes a value, its default the field ``field`` of the dataclass ``schema`` (or, with ``schema``
    ``None``, ``field`` itself). ``unset=True``: ``args.<dest>`` is ``None`` when the flag is absent (see the module's
    docstring). ``shown`` overrides how the default is shown (e.g. ``z_dim // 2``). ``sets``: the RunConfig field it
    sets (:attr:`Flag.sets`); by default that field when ``schema`` is a section of a RunConfig."""
    default = schema_default(schema, field)
    if shown is None:
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
    if sets is None and _run_section(schema) is not None:
        sets = (_run_section(schema), field)
    return Flag(name, help, parse, None if unset else default, shown, VALUE, metavar, sets)


def switch(name: str, help: str, sets: tuple[str, str] | None = None) -> Flag:
    """An on/off flag (``store_true``), off by default; ``sets``: the RunConfig field it sets (:attr:`Flag.sets`)."""
    return Flag(name, help, None, False, "off", SWITCH, sets=sets)


def _run_section(schema: type | None) -> str | None:
    """The section of :class:`~ppl_vae.config.RunConfig` whose dataclass is ``schema`` (``"train"`` for
    ``TrainConfig``, ...), or ``None``."""
    from ppl_vae.config import DataConfig, EvalConfig, ModelConfig, TrainConfig

    sections = {TrainConfig: "train", ModelConfig: "model", EvalConfig: "evaluation", DataConfig: "data"}
    return sections.get(schema)


def repeated(name: str, help: str, metavar: str) -> Flag:
    """A flag given any number of times: ``args.<dest>`` is the list of its values."""
    return Flag(name, help, str, [], "none", APPEND, metavar)


def positional(name: str, help: str, parse: Callable[[str], Any] = Path, metavar: str | None = None) -> Flag:
    return Flag(name, help, parse, None, None, POSITIONAL, metavar)


def positionals(name: str, help: str, metavar: str) -> Flag:
    """One or more positional arguments: ``args.<name>`` is their list (of text)."""
    return Flag(name, help, str, None, None, POSITIONALS, metavar)


def required(name: str, parse: Callable[[str], Any], help: str) -> Flag:
    return Flag(name, help, parse, None, None, REQUIRED)


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, its one-line help and its flags in ``--help`` order."""

    name: str
    help: str
    flags: tuple[Flag, ...]
    takes_train_flags: bool = False  # ``sweep``: any flag it does not know is a ``train`` flag, in args.train_flags


DATA_HELP = "digits | mnist | fashion-mnist | kmnist | path/to/file.npz"


def _names(registry) -> str:
    return " | ".join(sorted(registry))


def _data_flags() -> tuple[Flag, ...]:
    from ppl_vae.config import DataConfig

    return (
        option("--data", str, DataConfig, "name", DATA_HELP),
        option(
            "--data-root",
            str,
            None,
            "~/.cache/ppl_vae/data",
            "folder of torchvision data sets",
            unset=True,
            sets=("data", "root"),
        ),
        switch("--download", "let torchvision download the data set", sets=("data", "download")),
    )


def _trust(when: str) -> Flag:
    return switch(
        "--trust-program",
        f"allow {when} to import and run the program a run folder names (see --program); "
        "only for run folders you trust",
    )


def _evaluation_flags() -> tuple[Flag, ...]:
    from ppl_vae.config import EvalConfig

    return (
        option("--k", int, EvalConfig, "k", "importance samples per test example for log p(x)"),
        option("--eval-particles", int, EvalConfig, "num_particles", "samples per test example for the test ELBO"),
        option(
            "--eval-memory-mb",
            float,
            EvalConfig,
            "memory_mb",
            "memory budget of one vectorized pass of importance samples, MB; sets the samples per pass from the "
            "measured bytes of one",
            shown="at most 2^24 samples x examples x pixels",
        ),
    )


def _train_flags() -> tuple[Flag, ...]:
    from ppl_vae.config import ModelConfig, TrainConfig
    from ppl_vae.guides import GUIDES
    from ppl_vae.heads import HEADS
    from ppl_vae.likelihoods import LIKELIHOODS
    from ppl_vae.nets import NETS
    from ppl_vae.objectives import ANNEALING, OBJECTIVES
    from ppl_vae.optim import LR_SCHEDULES, OPTIMIZERS
    from ppl_vae.priors import PRIORS

    def model(name, parse, field, help, **kw):  # unset: --program refuses any model flag that is given
        return option(name, parse, ModelConfig, field, help, unset=True, **kw)

    return (
        *_data_flags(),
        option("--epochs", int, TrainConfig, "epochs", "passes over the training set", unset=True),
        option("--batch-size", int, TrainConfig, "batch_size", "examples per minibatch"),
        option(
            "--program",
            str,
            None,
            "the built-in VAE",
            "train your own model and guide: build(spec) -> ppl_vae.UserProgram (see ppl_vae.user_program); the "
            "built-in VAE's options (--z-dim ... --flow-layers, --conditional) do not apply",
            unset=True,
            metavar="MODULE:FUNCTION",
        ),
        repeated(
            "--program-arg",
            "an option of --program, in spec.args (VALUE read as JSON if it parses, else a string); repeatable",
            "KEY=VALUE",
        ),
        model("--z-dim", int, "z_dim", "latent dimensions"),
        model("--hidden", str, "hidden", "hidden-layer widths, comma-separated, data side first"),
        option("--lr", float, TrainConfig, "lr", "learning rate (the start of a schedule)"),
        option("--optim", str, TrainConfig, "optim", _names(OPTIMIZERS)),
        option(
            "--lr-schedule",
            str,
            TrainConfig,
            "lr_schedule",
            f"{_names(LR_SCHEDULES)}: over the run's steps (epochs x minibatches, fixed at the start)",
        ),
        option(
            "--lr-decay",
            float,
            TrainConfig,
            "lr_decay",
            "final factor of --lr-schedule, in (0, 1]: the learning rate falls to lr x decay at the last step",
        ),
        option(
            "--elbo",
            str,
            TrainConfig,
            "elbo",
            _names(OBJECTIVES),
            unset=True,
            shown="trace; enum with --family m2|joint",
        ),
        option(
            "--path",
            str,
            TrainConfig,
            "path",
            "graph | fast | plain | auto: the Pyro objectives' update from a loss traced once per batch shape "
            "(trace, stl, iwae), without SVI (one torch optimizer), or through pyro.infer.SVI; the same numbers "
            "every way (auto: graph where it applies, else fast)",
        ),
        option(
            "--num-particles",
            int,
            TrainConfig,
            "num_particles",
            "samples of z per example in training (K of --elbo iwae)",
        ),
        option("--beta", float, TrainConfig, "beta", "weight of the KL term (beta-VAE when != 1)"),
        option("--anneal", str, TrainConfig, "anneal", f"KL warm-up multiplying --beta: {_names(ANNEALING)}"),
        option("--anneal-epochs", int, TrainConfig, "anneal_epochs", "epochs of the linear ramp, or of one cycle"),
        switch("--conditional", "conditional VAE: one-hot labels into encoder and decoder"),
        model("--scale-param", str, "scale_param", f"guide scale head: {_names(HEADS)}"),
        model(
            "--latent-layers",
            integer_or_text,
            "latent_layers",
            "1: z; 2: the hierarchical VAE z2 -> z1 -> x, guide q(z1 | x) q(z2 | z1) (use --elbo trace)",
        ),
        model(
            "--top-z-dim",
            integer_or_text,
            "top_z_dim",
            "dimensions of z2 with --latent-layers 2, 1 to --z-dim",
            shown="z_dim // 2",
        ),
        model("--likelihood", str, "likelihood", _names(LIKELIHOODS)),
        model("--prior", str, "prior", _names(PRIORS)),
        model("--guide", str, "guide", _names(GUIDES)),
        model("--net", str, "net", _names(NETS)),
        model("--pixel-scale", float, "pixel_scale", "scale of --likelihood gaussian, laplace"),
        model("--prior-components", int, "prior_components", "K of --prior mog, vamp"),
        model("--rank", int, "rank", "covariance rank of --guide lowrank"),
        model("--flow-layers", int, "flow_layers", "flows of --guide iaf"),
        option(
            "--family",
            str,
            ModelConfig,
            "family",
            "vae | m2 (semi-supervised M2: y observed where labelled, enumerated where not) | joint (y enumerated "
            "everywhere, no labels)",
        ),
        option(
            "--labelled",
            integer_or_text,
            None,
            "all",
            "--family m2: training examples that keep their label, balanced over classes and chosen from --seed",
            unset=True,
            sets=("train", "labelled"),
        ),
        option(
            "--classes",
            integer_or_text,
            None,
            "the data's classes",
            "--family joint: values of y",
            unset=True,
            sets=("model", "num_classes"),
        ),
        option(
            "--alpha",
            float,
            None,
            "0.1 x training examples",
            "--family m2: weight of the classification term alpha log q(y | x)",
            unset=True,
            sets=("train", "alpha"),
        ),
        option("--seed", int, TrainConfig, "seed", "seed of every random number generator, 0 to 2^32 - 1"),
        switch(
            "--keyed-noise",
            "draw the guide's noise and the binarization keyed to (seed, step, example), so that N processes take the "
            "same steps as one (Normal latent sites; see ppl_vae.sharding)",
            sets=("train", "keyed_noise"),
        ),
        option(
            "--nproc",
            integer_or_text,
            None,
            "1, this process",
            "train data-parallel in N processes on this machine: runs python -m torch.distributed.run "
            "--nproc_per_node N -m ppl_vae train with the other flags; --batch-size stays the global minibatch",
            unset=True,
            metavar="N",
        ),
        option("--device", str, TrainConfig, "device", "torch device, e.g. cpu or cuda", unset=True),
        option("--eval-every", int, TrainConfig, "eval_every", "test ELBO every N epochs"),
        option(
            "--epoch-eval-particles",
            int,
            TrainConfig,
            "eval_particles",
            "samples per test example for the test ELBO of every --eval-every epochs",
        ),
        option(
            "--val-fraction",
            float,
            TrainConfig,
            "val_fraction",
            "share of the training set held out (from --seed) for the ELBO of every epoch; the test set is then "
            "evaluated once, after training (0: no validation set, the ELBO of every epoch is the test ELBO)",
        ),
        option(
            "--on-nan",
            str,
            TrainConfig,
            "on_nan",
            "a training step whose loss or gradients are not finite (never applied): stop | skip (and go on)",
        ),
        option(
            "--max-nan-skips", int, TrainConfig, "max_nan_skips", "with --on-nan skip: the most steps a run may skip"
        ),
        *_evaluation_flags(),
        option("--out", Path, None, "runs/<data>-<time>", "run folder", unset=True),
        switch("--resume", "continue the run in --out (its config.json; --epochs may extend it)"),
        _trust("--resume"),
        switch("--no-progress", "no progress bars"),
        switch(
            "--tensorboard",
            "log every epoch to RUN_DIR/tensorboard (tensorboard --logdir runs/); needs the tensorboard extra",
        ),
    )


def _evaluate_flags() -> tuple[Flag, ...]:
    from ppl_vae.report import ReportConfig

    return (
        positional("run_dir", "the run folder"),
        *_evaluation_flags(),
        _trust("evaluating RUN_DIR"),
        option("--device", str, None, "cpu", "torch device, e.g. cpu or cuda"),
        option(
            "--gap-examples",
            int,
            ReportConfig,
            "gap_examples",
            "test examples for the amortization / approximation gap (a local SVI fit each); 0 skips it",
        ),
        option("--gap-steps", int, ReportConfig, "gap_steps", "SVI steps of the per-example Normal guides"),
        option("--draws", int, ReportConfig, "draws", "guide draws per test example saved for ArviZ in posterior.nc"),
    )


def _compare_kl_flags() -> tuple[Flag, ...]:
    from ppl_vae.config import ModelConfig
    from ppl_vae.lab.measure import LabConfig

    def fresh(name, parse, field, help, **kw):  # unset: a fresh VAE's option, or the run's (--run)
        return option(name, parse, ModelConfig, field, help, unset=True, **kw)

    return (
        *_data_flags(),
        option(
            "--run", Path, None, "a fresh VAE", "study the trained VAE of this run folder (and its data)", unset=True
        ),
        _trust("--run"),
        fresh("--z-dim", int, "z_dim", "latent dimensions of a fresh VAE"),
        fresh("--hidden", str, "hidden", "hidden-layer widths of a fresh VAE, comma-separated"),
        fresh("--scale-param", str, "scale_param", "head of a fresh VAE: log_scale | log_var | softplus"),
        fresh("--net", str, "net", "network of a fresh VAE"),
        fresh(
            "--latent-layers",
            integer_or_text,
            "latent_layers",
            "latent layers of a fresh VAE: 1 (z) or 2 (z2 -> z1 -> x); the classic losses take 1",
        ),
        fresh(
            "--top-z-dim", integer_or_text, "top_z_dim", "dimensions of z2 with --latent-layers 2", shown="z_dim // 2"
        ),
        option(
            "--estimators",
            str,
            None,
            ",".join(schema_default(LabConfig, "estimators")) + "; with --family m2|joint: "
            "enum,tracegraph,tracegraph-baseline",
            "objectives to compare, comma-separated",
            unset=True,
        ),
        option(
            "--family",
            str,
            None,
            "vae",
            "vae | m2 | joint: with m2 or joint, compare the estimators of the discrete latent y instead (enumerated "
            "or sampled): gradient variance of the classifier, encoder and decoder, test accuracy after --epochs",
        ),
        option("--labelled", integer_or_text, None, "all", "--family m2: labelled examples", unset=True),
        option("--repetitions", int, LabConfig, "repetitions", "R: evaluations at fixed parameters"),
        option("--epochs", int, LabConfig, "epochs", "E: training epochs per estimator (0: none)"),
        option("--batch-size", int, LabConfig, "batch_size", "fixed minibatch and training batch"),
        option("--lr", float, LabConfig, "lr", "Adam learning rate"),
        option("--num-particles", int, LabConfig, "num_particles", "samples of z per example"),
        option("--seed", int, LabConfig, "seed", "seed of every random number generator, 0 to 2^32 - 1"),
        option("--device", str, LabConfig, "device", "torch device, e.g. cpu or cuda"),
        switch("--heads", "also train each scale head under MC and analytic KL"),
        option("--lrs", str, None, "--lr", "--heads: Adam's learning rates, comma-separated", unset=True),
        option(
            "--sgd-lrs",
            str,
            None,
            "none",
            "--heads: plain SGD's learning rates, comma-separated (SGD's step is lr x gradient: Adam's rates do not "
            "carry over)",
            unset=True,
        ),
        option("--optimizers", str, None, "adam", "--heads: adam, sgd or both, comma-separated", unset=True),
        option(
            "--scale-lr-factor",
            str,
            None,
            "1",
            "--heads: factors of the learning rate of the log_scale head's scale rows, comma-separated (0.5: Adam's "
            "step under log_var; 0.25 under SGD)",
            unset=True,
        ),
        option("--z-dims", str, None, "--z-dim", "--heads: latent widths of fresh VAEs, comma-separated", unset=True),
        option(
            "--seeds", str, None, "--seed", "--heads: seeds, comma-separated (weights, data order, noise)", unset=True
        ),
        option(
            "--head-estimators", str, None, "trace,meanfield", "--heads: the KL estimators, comma-separated", unset=True
        ),
        option("--out", Path, None, "runs/compare-kl-<data>-<time>", "output folder", unset=True),
    )


def _use_flags(out: str, data: bool = True, label: str | None = None) -> tuple[Flag, ...]:
    """The flags every command that uses a trained run takes: ``--out`` (its default ``out``), ``--data`` and
    ``--split`` with ``data``, ``--y`` with ``label`` (what the command decodes with without it)."""
    flags = [positional("run_dir", "the run folder"), option("--out", Path, None, out, "output file", unset=True)]
    if data:
        flags += [
            option("--data", str, None, "the run's own", "data set name or FILE.npz", unset=True),
            option("--split", str, None, "test", "test | train"),
        ]
    if label is not None:
        flags.append(
            option(
                "--y",
                integer_or_text,
                None,
                label,
                "the class to decode with (conditional models)",
                unset=True,
            ),
        )
    flags += [
        option("--seed", int, None, 0, "seed of every random number generator, 0 to 2^32 - 1"),
        option("--device", str, None, "cpu", "torch device, e.g. cpu or cuda"),
        _trust("using RUN_DIR"),
    ]
    return tuple(flags)


def command(name: str) -> Command:
    """The command ``name`` of the table (``"train"``, ...)."""
    (found,) = [command for command in commands() if command.name == name]
    return found


@functools.cache
def commands() -> tuple[Command, ...]:
    """The table: every command with its flags, in the order ``ppl-vae --help`` lists them."""
    from ppl_vae.cli_use import MAX_TRAVERSE_ROWS
    from ppl_vae.config import EvalConfig

    return (
        Command("train", "train a VAE into a run folder", _train_flags()),
        Command("evaluate", "reload a run folder and evaluate it", _evaluate_flags()),
        Command(
            "compare-kl",
            "Monte Carlo vs analytic KL: ELBO, gradient variance, time, training curves (and scale heads)",
            _compare_kl_flags(),
        ),
        Command(
            "sample",
            "images from the prior: pixel means of p(x | z), z ~ p(z)",
            (
                *_use_flags("RUN_DIR/sample.png; FILE.png or FILE.npz", data=False, label="every class in turn"),
                option("--n", integer_or_text, None, 64, "images"),
                switch("--draw", "draws x ~ p(x | z) instead of pixel means"),
            ),
        ),
        Command(
            "reconstruct",
            "images above their reconstructions; the npz adds each image's ELBO and log p(x)",
            (
                *_use_flags("RUN_DIR/reconstruct.png; FILE.png or FILE.npz"),
                option("--n", integer_or_text, None, 16, "images: the first N of the split", unset=True),
                option("--k", integer_or_text, EvalConfig, "k", "importance samples for log p(x) (npz)"),
                option("--eval-particles", integer_or_text, EvalConfig, "num_particles", "samples for the ELBO (npz)"),
            ),
        ),
        Command(
            "encode",
            "loc and scale of q(z | x) per latent site, for every example, into an npz",
            (
                *_use_flags("none: FILE.npz is required"),
                option("--batch-size", integer_or_text, None, 256, "examples per batch through the guide"),
                switch("--no-progress", "no progress bar"),
            ),
        ),
        Command(
            "traverse",
            "vary one latent dimension at a time around a base code",
            (
                *_use_flags("RUN_DIR/traverse.png; FILE.png or FILE.npz", label="the class of --base"),
                option(
                    "--dims",
                    str,
                    None,
                    f"up to {MAX_TRAVERSE_ROWS}, active first, by KL",
                    "dimensions, e.g. 0,1,2",
                    unset=True,
                ),
                option("--range", number_or_text, None, 3.0, "prior standard deviations either side"),
                option("--steps", integer_or_text, None, 9, "images per row"),
                option(
                    "--base",
                    integer_or_text,
                    None,
                    "the prior mean",
                    "index of an image whose code to vary",
                    unset=True,
                ),
            ),
        ),
        Command(
            "interpolate",
            "decode codes on the way between two images' codes",
            (
                *_use_flags("RUN_DIR/interpolate.png; FILE.png or FILE.npz", label="the class of image --a"),
                required("--a", integer_or_text, "index of the first image"),
                required("--b", integer_or_text, "index of the second image"),
                option("--steps", integer_or_text, None, 10, "codes between the two images"),
                switch("--spherical", "along the great circle, norms linear"),
            ),
        ),
        Command(
            "compare",
            "one table of run folders: differing settings, results, paired differences, overlaid curves",
            (
                positionals("run_dirs", "run folders, or glob patterns ('runs/*')", "RUN_DIR"),
                *_table_flags(),
                switch("--aggregate-seeds", "one row per setting: mean +- standard error over train seeds"),
                option("--out", Path, None, None, "folder for the files", shown="runs/compare-<time>"),
            ),
        ),
        Command(
            "sweep",
            "train a grid or a list of variants into one folder (resumable), then compare them; any other flag is "
            "a 'ppl-vae train' flag, common to every run",
            (
                repeated("--grid", "a train flag's values; every combination; repeatable", "KEY=V1,V2"),
                option(
                    "--variants",
                    Path,
                    None,
                    None,
                    "one variant per line, 'NAME: TRAIN FLAGS'",
                    shown="none",
                    metavar="FILE",
                ),
                required("--out", Path, "parent folder of the runs (rerun it to resume)"),
                *_table_flags(),
                switch("--no-progress", "no progress bars"),
            ),
            takes_train_flags=True,
        ),
    )


def _table_flags() -> tuple[Flag, ...]:
    """The flags of ``compare`` and ``sweep`` that order the table and choose the baseline of paired differences."""
    return (
        option(
            "--sort", str, None, None, "sort by this column (a CSV header)", shown="the runs' order", metavar="COLUMN"
        ),
        switch("--descending", "sort from the largest value"),
        option("--baseline", str, None, None, "paired differences against this run", shown="the first", metavar="RUN"),
    )


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help, wrapped at spaces only: a flag or a name with hyphens (``--max-nan-skips``,
    ``tracegraph-baseline``) stays whole on one line."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def add_command(subparsers, command: Command, given_only: bool = False) -> argparse.ArgumentParser:
    """The subparser of ``command`` on ``subparsers`` (``add_subparsers``), every flag of the table added (without
    defaults with ``given_only``: see :meth:`Flag.add_to`)."""
    parser = subparsers.add_parser(
        command.name, help=command.help, description=command.help, formatter_class=HelpFormatter
    )
    parser.set_defaults(takes_train_flags=command.takes_train_flags)
    for flag in command.flags:
        flag.add_to(parser, given_only)
    return parser
