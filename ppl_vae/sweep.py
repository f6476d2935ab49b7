"""Sweeps: many runs into one parent folder, resumable, then one comparison with the seeds aggregated.

A sweep is a list of named runs. The names come from a grid (every combination of the values of each key) and/or a
variants file (a list of named flag sets, for tables that vary one thing at a time with coupled flags)::

    --grid 'prior=normal,mog,vamp' --grid 'seed=0,1,2'   ->  prior=normal,seed=0  prior=normal,seed=1  ...  (9 runs)

    # variants.txt: one variant per line, "NAME: FLAGS" (train flags, shell-quoted); blank lines and # comments skipped
    plain:
    mog: --prior mog
    iwae: --elbo iwae --num-particles 10

``--variants variants.txt --grid seed=0,1`` runs every variant with every grid combination (``mog,seed=1``). A grid key
is a train flag without its dashes (``z-dim`` or ``z_dim``; ``conditional=true,false`` for a switch); ``seed`` is the
seed of each run, aggregated over in the comparison (:mod:`ppl_vae.compare`).

:func:`run_sweep` first checks every run (its config, and any folder already there) and only then trains, in this
process, through :func:`ppl_vae.run.train_run`: a finished run (its ``metrics.json`` written) is skipped, an
interrupted one (a checkpoint, no metrics) is resumed with the numbers an uninterrupted run would have had, a missing
one is trained. So the same command, run again after an interrupt, finishes the sweep without repeating work.

Example::

    names = grid_names(parse_grid(["prior=normal,mog", "seed=0,1"]))       # [("prior=normal,seed=0", {...}), ...]
    outcome = run_sweep({"plain": config_a, "mog": config_b}, "runs/sweep")
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ppl_vae.checkpoint import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE
from ppl_vae.config import RunConfig
from ppl_vae.errors import InputError

NAME = re.compile(r"[A-Za-z0-9._+-]+")
"""The characters of a variant's name (it becomes a folder name)."""


def parse_grid(texts: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["prior=normal,mog", "seed=0,1"]`` -> ``[("prior", ["normal", "mog"]), ("seed", ["0", "1"])]``; keys are
    normalized to dashes (``z_dim`` -> ``z-dim``). Refuses a text without ``=``, an empty value, a repeated key or
    value."""
    grid: list[tuple[str, list[str]]] = []
    for text in texts:
        key, equals, values = text.partition("=")
        key = key.strip().lstrip("-").replace("_", "-")
        items = [value.strip() for value in values.split(",")]
        if not equals or not key or not all(items):
            raise InputError(f"--grid {text!r}: expected KEY=VALUE,VALUE,... e.g. --grid prior=normal,mog")
        if not all(NAME.fullmatch(value) for value in items):
            raise InputError(f"--grid {text!r}: values may hold letters, digits and . _ + - only (they name folders)")
        if key in dict(grid):
            raise InputError(f"--grid key {key!r} is given twice: list all its values in one --grid")
        if len(set(items)) != len(items):
            raise InputError(f"--grid {text!r} repeats a value")
        grid.append((key, items))
    return grid


def grid_names(grid: Sequence[tuple[str, list[str]]]) -> list[tuple[str, dict[str, str]]]:
    """Every combination of the grid's values, in order (the last key varies fastest), each as ``(name, {key:
    value})`` with the name ``key=value,key=value`` (``[("", {})]`` for an empty grid)."""
    keys = [key for key, _ in grid]
    combinations = []
    for values in itertools.product(*(values for _, values in grid)):
        chosen = dict(zip(keys, values, strict=True))
        combinations.append((",".join(f"{key}={value}" for key, value in chosen.items()), chosen))
    return combinations


def read_variants(path: str | Path) -> list[tuple[str, list[str]]]:
    """The variants of a file, ``[(name, flags)]`` (format in the module's docstring). Refuses a missing file, a line
    without ``NAME:``, a name with other characters than letters, digits, ``. _ + -``, a repeated name, no variants."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise InputError(f"--variants {str(path)!r}: cannot read it ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise InputError(
            f"--variants {str(path)!r} is not UTF-8 text (byte {error.start}): expected lines 'NAME: TRAIN FLAGS'"
        ) from None
    variants: list[tuple[str, list[str]]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, colon, flags = line.partition(":")
        name = name.strip()
        if not colon or not NAME.fullmatch(name):
            raise InputError(
                f"{path}:{number}: {line.strip()!r}: expected 'NAME: FLAGS', NAME of letters, digits, . _ + -"
            )
        if name in dict(variants):
            raise InputError(f"{path}:{number}: variant {name!r} is named twice")
        try:
            variants.append((name, shlex.split(flags, comments=True)))
        except ValueError as error:
            raise InputError(f"{path}:{number}: {error}") from None
    if not variants:
        raise InputError(f"--variants {str(path)!r} holds no variant: expected lines 'NAME: FLAGS'")
    return variants


def join_name(*parts: str) -> str:
    """The name of a run from its variant's and its grid combination's names (either may be empty)."""
    return ",".join(part for part in parts if part)


def same_settings(a: RunConfig, b: RunConfig) -> bool:
    """``a`` and ``b`` are the same run: equal except the schedule's horizon, which training fixes itself."""
    return dataclasses.replace(a, train=dataclasses.replace(a.train, lr_horizon=None)) == dataclasses.replace(
        b, train=dataclasses.replace(b.train, lr_horizon=None)
    )


def dry_check(config: RunConfig) -> None:
    """Refuse ``config`` as its training would, without training: its parts (:func:`ppl_vae.parts.check_run`), its
    data, and its training step built and shown two training examples (the objective's own requirements, e.g.
    ``meanfield`` without a closed-form KL), with no update. Pyro's parameter store and the RNG are left as they were.
    """
    import pyro
    import torch

    from ppl_vae.objectives import make_step
    from ppl_vae.parts import check_run
    from ppl_vae.programs import as_user_program, rng_preserved
    from ppl_vae.run import load_data
    from ppl_vae.user_program import build_program
    from ppl_vae.vae import VAE

    check_run(config)
    data = load_data(config)
    with pyro.get_param_store().scope(), rng_preserved(torch.device("cpu")):
        program = as_user_program(VAE(config.model) if config.program is None else build_program(config.program))
        step = make_step(program, config.train)
        x = data.x_train[:2].to(program.device)
        if program.binary:
            x = x.round()
        args = (data.y_train[:2].to(program.device),) if program.labels and data.y_train is not None else ()
        prepare = getattr(step, "prepare", None)
        if prepare is not None:
            prepare(x, *args)


def run_state(config: RunConfig, run_dir: Path) -> str:
    """``"finished"`` (``metrics.json`` written), ``"interrupted"`` (a checkpoint, no metrics) or ``"new"``; an
    :class:`InputError` where the folder holds a run with other settings."""
    from ppl_vae.run import load_config

    if not (run_dir / CONFIG_FILE).is_file():
        return "new"
    if not same_settings(load_config(run_dir), config):
        raise InputError(
            f"{str(run_dir)!r} holds a run with other settings than this sweep's: choose another --out, or remove it"
        )
    if (run_dir / METRICS_FILE).is_file():
        return "finished"
    return "interrupted" if (run_dir / CHECKPOINT_FILE).is_file() else "new"


def run_sweep(
    configs: Mapping[str, RunConfig],
    parent: str | Path,
    *,
    progress: bool = True,
    tensorboard: bool = False,
    report: Callable[[str], None] = print,
) -> dict[str, str]:
    """Train every ``{name: config}`` into ``parent/name``: every config (:func:`dry_check`) and every folder (see
    :func:`run_state`) is checked before any training, then each run is trained, resumed or skipped. Returns
    ``{name: what was done}`` (``"trained"``, ``"resumed"``, ``"skipped"``); ``report`` gets one line per run.
    ``tensorboard``: each run logs to its ``tensorboard/`` folder (see :mod:`ppl_vae.tensorboard_log`), so
    ``tensorboard --logdir PARENT`` shows them all."""
    from ppl_vae.run import train_run

    parent = Path(parent)
    for name, config in configs.items():
        try:
            dry_check(config)
        except InputError as error:
            raise InputError(f"sweep run {name!r}: {error}") from None
    states = {name: run_state(config, parent / name) for name, config in configs.items()}
    done = {}
    for number, (name, config) in enumerate(configs.items(), start=1):
        state = states[name]
        if state == "finished":
            done[name] = "skipped"
            report(f"[{number}/{len(configs)}] {name}: finished before, skipped")
            continue
        report(f"[{number}/{len(configs)}] {name}: {'resuming' if state == 'interrupted' else 'training'}")
        # resuming a folder whose config.json equals this sweep's own: the program it names is the one given here
        resume = state == "interrupted"
        train_run(config, parent / name, resume=resume, progress=progress, trust_program=True, tensorboard=tensorboard)
        done[name] = "resumed" if state == "interrupted" else "trained"
    return done


def best_by_validation(rows: Sequence[dict]) -> dict | None:
    """The row with the highest ``val_elbo`` (the final validation ELBO; a choice made without the test set), or
    ``None`` where no row has one."""
    validated = [row for row in rows if row.get("val_elbo") is not None]
    return max(validated, key=lambda row: row["val_elbo"]) if validated else None
