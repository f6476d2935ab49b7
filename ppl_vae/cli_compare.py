"""``ppl-vae compare RUN_DIR...`` and ``ppl-vae sweep``: thin wiring of :mod:`ppl_vae.compare` and
:mod:`ppl_vae.sweep` into the command line.

``ppl-vae sweep`` takes ``ppl-vae train``'s flags besides its own; each run's flags are the common ones, then its
variant's, then its grid combination's, parsed by ``train``'s own parser (so every flag means what it means there).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ppl_vae.errors import InputError

SWEEP_OWNED = ("--out", "--resume", "--no-progress", "--trust-program")
"""Train flags that the sweep sets itself (each run's folder, resuming, progress, trust): refused among its flags."""


def command_compare(args) -> None:
    from ppl_vae.compare import compare, load_runs, write_comparison

    runs = load_runs(args.run_dirs)
    comparison = compare(
        runs,
        sort=args.sort,
        descending=args.descending,
        baseline=args.baseline,
        aggregate_seeds=args.aggregate_seeds,
    )
    out = args.out or Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    written = write_comparison(comparison, runs, out)
    print(comparison.markdown())
    print("written: " + ", ".join(map(str, written)))


def command_sweep(args) -> None:
    from ppl_vae.compare import compare, load_runs, write_comparison
    from ppl_vae.sweep import best_by_validation, run_sweep

    configs = sweep_configs(args.grid, args.variants, args.train_flags)
    try:
        tensorboard = "--tensorboard" in args.train_flags
        done = run_sweep(configs, args.out, progress=not args.no_progress, tensorboard=tensorboard)
    except KeyboardInterrupt:
        print(f"\ninterrupted: the same command continues the sweep in {args.out}", flush=True)
        raise SystemExit(130) from None
    runs = load_runs([args.out / name for name in configs])
    comparison = compare(runs, sort=args.sort, descending=args.descending, baseline=args.baseline, aggregate_seeds=True)
    written = write_comparison(comparison, runs, args.out)
    print(comparison.markdown())
    best = best_by_validation(comparison.rows)
    if best is not None:
        print(f"best by validation ELBO (the test set plays no part in this choice): {best['run']}")
    counts = {what: list(done.values()).count(what) for what in ("trained", "resumed", "skipped")}
    print(", ".join(f"{count} {what}" for what, count in counts.items()) + "; written: " + ", ".join(map(str, written)))


def sweep_configs(grid_texts: list[str], variants_file: Path | None, common: list[str]) -> dict:
    """``{run name: RunConfig}`` of every variant x grid combination, each parsed and checked like ``ppl-vae train``'s
    flags; an :class:`InputError` naming the run for the first that fails."""
    from ppl_vae.cli import _config_from_args
    from ppl_vae.sweep import grid_names, join_name, parse_grid, read_variants

    parser = _train_parser()
    grid = parse_grid(grid_texts)
    variants = read_variants(variants_file) if variants_file is not None else [("", [])]
    if not grid and variants_file is None:
        raise InputError("sweep needs --grid KEY=V1,V2 or --variants FILE: there is nothing to vary")
    _refuse_owned(common, "the sweep's train flags")
    for key, _ in grid:
        _grid_action(parser, key)
    configs = {}
    if any(key == "tensorboard" for key, _ in grid) or any("--tensorboard" in flags for _, flags in variants):
        raise InputError("--tensorboard is for the whole sweep: give it among the common flags, not per variant")
    for variant, flags in variants:
        _refuse_owned(flags, f"variant {variant!r}")
        _refuse_overlap(common, flags, f"variant {variant!r} and the sweep's common flags")
        for combination, chosen in grid_names(grid):
            grid_flags = [flag for key, value in chosen.items() for flag in _grid_flags(parser, key, value)]
            _refuse_overlap(common + flags, grid_flags, f"--grid and the flags of variant {variant or 'common'!r}")
            name = join_name(variant, combination)
            try:
                configs[name] = _config_from_args(parser.parse_args([*common, *flags, *grid_flags]))
            except InputError as error:
                raise InputError(f"sweep run {name!r}: {error}") from None
    return configs


def _train_parser() -> argparse.ArgumentParser:
    """``ppl-vae train``'s parser, raising :class:`InputError` (one line) instead of printing its usage."""
    from ppl_vae.cli import build_parser

    parser = build_parser()
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    train = subparsers.choices["train"]

    def error(message: str):
        raise InputError(f"train flags: {message}")

    train.error = error
    return train


def _grid_action(parser: argparse.ArgumentParser, key: str) -> argparse.Action:
    action = parser._option_string_actions.get(f"--{key}")
    if action is None or f"--{key}" in SWEEP_OWNED:
        raise InputError(f"--grid key {key!r} is not a flag of 'ppl-vae train' that a sweep can vary")
    return action


def _grid_flags(parser: argparse.ArgumentParser, key: str, value: str) -> list[str]:
    """The train flags for ``key=value``: ``--key value``, or for a switch (``conditional=true``) the flag or
    nothing."""
    if isinstance(_grid_action(parser, key), argparse._StoreTrueAction):
        if value not in ("true", "false"):
            raise InputError(f"--grid {key}={value}: --{key} is a switch, expected true or false")
        return [f"--{key}"] if value == "true" else []
    return [f"--{key}", value]


def _flag_names(flags: list[str]) -> set[str]:
    return {flag.split("=")[0] for flag in flags if flag.startswith("--")}


def _refuse_owned(flags: list[str], where: str) -> None:
    owned = sorted(_flag_names(flags) & set(SWEEP_OWNED))
    if owned:
        raise InputError(f"{', '.join(owned)} in {where}: the sweep sets it itself (use the sweep's --out)")


def _refuse_overlap(first: list[str], second: list[str], where: str) -> None:
    both = sorted(_flag_names(first) & _flag_names(second) - {"--program-arg"})
    if both:
        raise InputError(f"{', '.join(both)} given twice, by {where}: give each flag in one place")
