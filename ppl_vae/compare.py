"""Compare run folders: the settings that differ, the results, paired differences, overlaid ELBO curves.

``ppl-vae compare RUN_DIR...`` reads each run's ``config.json``, ``metrics.json``, ``report.json`` (where
``ppl-vae evaluate`` wrote one) and ``test_values.npz`` and writes one table, a row per run::

    run | settings that differ (dotted config keys) | test ELBO | log p(x) | k-hat > 0.7 | active units | ... | seconds

in nats per example (higher is better), each estimate with its standard error over the test examples. Any other number
in ``metrics.json`` (``test_accuracy`` of a semi-supervised run, ``val_elbo`` ...) gets a column of its own, with its
``<key>_se`` beside it where there is one. Runs must be of one data set; a folder that is not a finished run is refused.

**Paired differences.** Two runs evaluated on the same observed test set (:mod:`ppl_vae.test_values`) and trained
with the same seed are compared example by example against a baseline run ``b``: with ``d_i = a_i - b_i`` over the
``N`` test examples, the difference is ``mean(d)`` with standard error ``std(d) / sqrt(N)`` (``ddof = 1``), which
removes the examples' shared difficulty from the comparison.

**Seeds** (``aggregate_seeds=True``, as a sweep writes it): runs whose settings differ only in ``train.seed`` become
one row, each number the mean over the seeds with the standard error over the seeds ``std / sqrt(S)`` (``ddof = 1``;
with one seed, the test set's standard error). Paired differences then are the mean over the shared seeds of each
seed's paired difference, with the standard error over those seeds (with one shared seed, the per-example one).

Example::

    runs = load_runs(["runs/plain", "runs/mog"])
    result = compare(runs, sort="test_log_likelihood", descending=True)
    print(result.markdown())
    write_comparison(result, runs, "runs/compare")      # compare.md, compare.csv, compare_curves.png
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ppl_vae.checkpoint import CONFIG_FILE, METRICS_FILE, atomic_write, read_run_folder
from ppl_vae.config import RunConfig
from ppl_vae.errors import InputError
from ppl_vae.report import REPORT_JSON
from ppl_vae.tables import table
from ppl_vae.test_values import FINGERPRINT_KEY, TEST_VALUES_FILE, load_test_values

COMPARE_MD = "compare.md"
COMPARE_CSV = "compare.csv"
COMPARE_PNG = "compare_curves.png"

SEED_KEY = "train.seed"
SETTINGS_IGNORED = ("train.lr_horizon", "train.device", "data.root", "data.download")
"""Config keys never shown as differing settings: derived (the schedule's horizon) or not a setting of the model
(where the data and the computation live)."""

RESULTS = (
    ("test_elbo", "test ELBO"),
    ("test_log_likelihood", "test log p(x)"),
)
"""The estimates every run has, with their standard errors under ``<key>_se``; nats per example."""

METRICS_NOT_RESULTS = {
    "conditional",
    "k",
    "elbo_particles",
    "epochs",
    "seconds",
    "history",
    "figures_skipped",
    "eval_memory_mb",
    "eval_examples_per_second",
    "world_size",
}
"""Keys of ``metrics.json`` that are settings, bookkeeping, speed of the machine or not numbers: no column of their
own (``seconds`` has its fixed place at the end)."""

MAX_SETTING_COLUMNS = 4
"""Up to this many differing settings get a Markdown column each; more are written as ``key=value`` in one column."""

PAIRED = (("elbo", "test ELBO"), ("log_likelihood", "test log p(x)"))
"""The per-example values of ``test_values.npz`` that are paired, with their names in the table."""


@dataclass(frozen=True)
class Run:
    """A finished run folder, read: its flattened config (dotted keys), metrics, report (or ``{}``), per-example
    test values (or ``{}``)."""

    name: str
    path: Path
    config: RunConfig
    settings: dict
    metrics: dict
    report: dict
    values: dict

    @property
    def seed(self) -> int:
        return self.config.train.seed

    def curve(self) -> tuple[str, list[int], list[float]] | None:
        """``(key, epochs, values)`` of the per-epoch held-out ELBO: ``val_elbo`` where the run has a validation split,
        else ``test_elbo`` (``None`` without either)."""
        history = self.metrics.get("history", [])
        for key in ("val_elbo", "test_elbo"):
            records = [record for record in history if key in record]
            if records:
                return key, [record["epoch"] for record in records], [record[key] for record in records]
        return None


def flatten(value, prefix: str = "") -> dict:
    """A nested dict as ``{"section.key": value}``; lists (hidden widths, image shapes) become tuples."""
    if isinstance(value, dict):
        flat = {}
        for key, inner in value.items():
            flat.update(flatten(inner, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tuple(value) if isinstance(value, list) else value}


def expand_run_paths(patterns: Sequence[str | Path]) -> list[Path]:
    """The folders named by ``patterns``: each a folder, or a glob pattern (``runs/sweep/*``) expanded in sorted
    order; a pattern that matches nothing is an :class:`InputError`."""
    paths: list[Path] = []
    for pattern in map(str, patterns):
        if glob.has_magic(pattern) and not Path(pattern).exists():
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise InputError(f"{pattern!r} matches no folder: expected run folders written by 'ppl-vae train'")
            paths.extend(Path(match) for match in matches if Path(match).is_dir())
        else:
            paths.append(Path(pattern))
    return paths


def load_run(path: str | Path) -> Run:
    """One finished run folder; an :class:`InputError` for a folder without ``config.json`` or ``metrics.json``."""
    path = read_run_folder(path)
    if not (path / METRICS_FILE).is_file():
        raise InputError(
            f"{str(path)!r} has no {METRICS_FILE}: its training did not finish (continue it with "
            f"'ppl-vae train --resume --out {path}')"
        )
    raw = _read_json(path / CONFIG_FILE)
    try:
        config = RunConfig.from_json(json.dumps(raw))
    except InputError as error:
        raise InputError(f"{str(path / CONFIG_FILE)!r}: {error}") from None
    metrics = _read_json(path / METRICS_FILE)
    report = _read_json(path / REPORT_JSON) if (path / REPORT_JSON).is_file() else {}
    values = load_test_values(path) if (path / TEST_VALUES_FILE).is_file() else {}
    return Run(path.name, path, config, flatten(json.loads(config.to_json())), metrics, report, values)


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # ValueError: not UTF-8, not JSON
        raise InputError(f"cannot read {str(path)!r}: {error}") from None
    if not isinstance(value, dict):
        raise InputError(f"{str(path)!r} holds {type(value).__name__}, expected a JSON object")
    return value


def load_runs(patterns: Sequence[str | Path]) -> list[Run]:
    """The finished runs named by ``patterns`` (folders or globs), all of one data set; names made unique by their
    parent folder where two runs share a folder name. Refuses no runs, a repeated folder, and runs of different
    data (another data set, or the same name with other image shapes)."""
    paths = expand_run_paths(patterns)
    if not paths:
        raise InputError("no run folders to compare: pass one or more folders written by 'ppl-vae train'")
    resolved = [path.resolve() for path in paths]
    if len(set(resolved)) != len(resolved):
        repeated = next(str(path) for path, key in zip(paths, resolved, strict=True) if resolved.count(key) > 1)
        raise InputError(f"run folder {repeated!r} is given twice")
    runs = [load_run(path) for path in paths]
    data = {run.name: _data_of(run) for run in runs}
    first = runs[0]
    for run in runs[1:]:
        if data[run.name] != data[first.name]:
            raise InputError(
                f"runs on different data: {str(first.path)!r} on {data[first.name][0]!r} {data[first.name][1]}, "
                f"{str(run.path)!r} on {data[run.name][0]!r} {data[run.name][1]}: compare runs of one data set"
            )
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        runs = [_renamed(run, f"{run.path.parent.name}/{run.name}") for run in runs]
    return runs


def _data_of(run: Run) -> tuple[str, tuple]:
    sized = run.config.model or run.config.program
    return run.config.data.name, tuple(sized.image_shape)


def _renamed(run: Run, name: str) -> Run:
    return Run(name, run.path, run.config, run.settings, run.metrics, run.report, run.values)


def differing_settings(runs: Sequence[Run]) -> list[str]:
    """The dotted config keys whose values are not the same in every run (sorted; see :data:`SETTINGS_IGNORED`)."""
    keys = sorted(set().union(*(run.settings for run in runs)) - set(SETTINGS_IGNORED))
    return [key for key in keys if len({repr(run.settings.get(key)) for run in runs}) > 1]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def result_keys(runs: Sequence[Run]) -> list[str]:
    """The numeric columns of the table, in order: the estimates (:data:`RESULTS`), the report's k-hat share and
    active units where a run has a report, every other number of a ``metrics.json`` (sorted), ``seconds``; a
    ``<key>_se`` follows its ``<key>``."""
    keys = [key for key, _ in RESULTS]
    if any(run.report for run in runs):
        keys += ["khat_share_above_0_7", "active_units"]
    known = set(keys) | {f"{key}_se" for key in keys} | METRICS_NOT_RESULTS
    extra = sorted(
        {key for run in runs for key, value in run.metrics.items() if _is_number(value) and key not in known}
    )
    for key in extra:
        if not key.endswith("_se") or key[: -len("_se")] not in extra:
            keys.append(key)
    return keys + ["seconds"]


def _value(run: Run, key: str):
    if key in ("khat_share_above_0_7", "active_units"):
        return run.report.get(key)
    value = run.metrics.get(key)
    return value if _is_number(value) else None


@dataclass
class Comparison:
    """The table of a comparison: ``rows`` of ``{column: value}`` (settings as they are in ``config.json``, numbers
    as floats, a standard error under ``<key>_se``), the differing ``settings`` and the numeric ``results`` columns,
    and the ``paired`` differences against ``baseline``."""

    settings: list[str]
    results: list[str]
    rows: list[dict]
    baseline: str
    paired: list[dict] = field(default_factory=list)
    seeds_aggregated: bool = False

    @property
    def columns(self) -> list[str]:
        """Every column of the CSV, in order."""
        numbers = [name for key in self.results for name in (key, f"{key}_se") if self.has(name)]
        return ["run", *(["seeds"] if self.seeds_aggregated else []), *self.settings, *numbers]

    def has(self, column: str) -> bool:
        return any(row.get(column) is not None for row in self.rows)

    def csv(self) -> str:
        """The table as CSV: one row per run (or group of seeds), full precision, empty where a value is missing."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow(["" if row.get(column) is None else _csv_cell(row[column]) for column in self.columns])
        return buffer.getvalue()

    def markdown(self) -> str:
        """The table (numbers to 3 decimals, ``mean +- se``) and the paired differences, as Markdown."""
        shown = [key for key in self.results if self.has(key)]
        setting_names, setting_cells = self._setting_columns()
        header = ["run", *(["seeds"] if self.seeds_aggregated else []), *setting_names, *map(_header, shown)]
        cells = [
            [
                row["run"],
                *([str(row["seeds"])] if self.seeds_aggregated else []),
                *settings,
                *(_number_cell(row.get(key), row.get(f"{key}_se"), key) for key in shown),
            ]
            for row, settings in zip(self.rows, setting_cells, strict=True)
        ]
        align = "l" * (1 + self.seeds_aggregated + len(setting_names)) + "r" * len(shown)
        what = (
            "the mean over seeds +- its standard error over seeds; for one seed, over the test examples"
            if self.seeds_aggregated
            else "+- standard error over the test examples"
        )
        parts = [f"Nats per example, higher is better; {what}:", ""]
        parts.append(table(header, cells, align=align))
        parts += ["", *self.paired_markdown()]
        return "\n".join(parts).rstrip() + "\n"

    def _setting_columns(self) -> tuple[list[str], list[list[str]]]:
        """The Markdown's settings: a column per differing key, or, for more than :data:`MAX_SETTING_COLUMNS` keys,
        one column of ``key=value`` for the keys where a row differs from the baseline (short keys where unique)."""
        if len(self.settings) <= MAX_SETTING_COLUMNS:
            return self.settings, [[_setting_cell(row.get(key)) for key in self.settings] for row in self.rows]
        base = next(row for row in self.rows if row["run"] == self.baseline)
        last = [key.split(".")[-1] for key in self.settings]
        short = {key: name if last.count(name) == 1 else key for key, name in zip(self.settings, last, strict=True)}
        cells = [
            [
                " ".join(
                    f"{short[key]}={_setting_cell(row.get(key))}"
                    for key in self.settings
                    if row.get(key) != base.get(key)
                )
                or "(baseline)"
            ]
            for row in self.rows
        ]
        return [f"settings unlike {self.baseline!r}"], cells

    def paired_markdown(self) -> list[str]:
        if not self.paired:
            return [f"No run shares the test set and seed of the baseline {self.baseline!r}: no paired differences."]
        header = ["run", "seeds paired", *(f"{name} - baseline" for _, name in PAIRED)]
        cells = [
            [
                row["run"],
                str(row["seeds"]),
                *(_number_cell(row.get(f"{key}_diff"), row.get(f"{key}_diff_se"), key) for key, _ in PAIRED),
            ]
            for row in self.paired
        ]
        return [
            f"Paired differences against {self.baseline!r} over the same test examples, nats per example "
            "(+- standard error of the paired difference):",
            "",
            table(header, cells, align="lrrr"),
        ]


def _header(key: str) -> str:
    names = dict(RESULTS) | {"khat_share_above_0_7": "k-hat > 0.7", "active_units": "active units"}
    return names.get(key, key)


def _csv_cell(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _setting_cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def _number_cell(value, se, key: str) -> str:
    if value is None:
        return ""
    if key == "khat_share_above_0_7":
        return f"{value:.1%}"
    digits = 1 if key == "seconds" else 3
    if isinstance(value, int) and se is None:  # counts: active units, labelled examples
        return str(value)
    text = f"{value:.{digits}f}"
    return text if se is None or not math.isfinite(se) else f"{text} +- {se:.{digits}f}"


def compare(
    runs: Sequence[Run],
    *,
    sort: str | None = None,
    descending: bool = False,
    baseline: str | None = None,
    aggregate_seeds: bool = False,
) -> Comparison:
    """The :class:`Comparison` of ``runs`` (see the module's docstring), rows in the order given or sorted by the
    column ``sort`` (numbers numerically, missing values last); paired differences against the run (or, with
    ``aggregate_seeds``, the group of seeds) named ``baseline`` (default: the first)."""
    settings = differing_settings(runs)
    results = result_keys(runs)
    groups = _groups(runs, settings if aggregate_seeds else None)
    if aggregate_seeds:
        settings = [key for key in settings if key != SEED_KEY]
    rows = [_row(name, members, settings, results, aggregate_seeds) for name, members in groups.items()]
    names = list(groups)
    baseline = names[0] if baseline is None else baseline
    if baseline not in groups:
        raise InputError(f"--baseline {baseline!r} is none of the compared runs: expected one of {names}")
    paired = [
        row for name in names if name != baseline and (row := _paired(name, groups[name], groups[baseline])) is not None
    ]
    comparison = Comparison(settings, results, rows, baseline, paired, aggregate_seeds)
    if sort is not None:
        _sort(comparison, sort, descending)
    return comparison


def _groups(runs: Sequence[Run], settings: list[str] | None) -> dict[str, list[Run]]:
    """Each run alone (``settings is None``), or the runs whose ``settings`` agree except the seed, named by the
    first member's folder name without its seed part."""
    if settings is None:
        return {run.name: [run] for run in runs}
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        key = tuple(repr(run.settings.get(name)) for name in settings if name != SEED_KEY)
        groups.setdefault(key, []).append(run)
    return {_group_name(members): members for members in groups.values()}


def _group_name(members: list[Run]) -> str:
    return without_seed(members[0].name)


def without_seed(name: str) -> str:
    """A run's name without its ``seed=N`` part: sweeps name their runs ``key=value,key=value`` (see
    :mod:`ppl_vae.sweep`), so ``prior=mog,seed=2`` -> ``prior=mog``; a name without that part is kept."""
    kept = [part for part in name.split(",") if not part.startswith("seed=")]
    return ",".join(kept) or name


def _row(name: str, members: list[Run], settings: list[str], results: list[str], aggregated: bool) -> dict:
    row = {"run": name, **{key: members[0].settings.get(key) for key in settings}}
    if aggregated:
        row["seeds"] = len(members)
    for key in results:
        values = [_value(run, key) for run in members]
        if any(value is None for value in values):
            continue
        errors = [_value(run, f"{key}_se") for run in members]
        row[key], row[f"{key}_se"] = _mean_and_se(values, errors)
    return row


def _mean_and_se(values: list[float], errors: list) -> tuple[float, float | None]:
    """The mean of ``values``; its standard error over them (:func:`mean_and_se`) for several, the one given for
    one."""
    if len(values) == 1:
        return values[0], errors[0]
    return mean_and_se(values)


def mean_and_se(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean of ``values`` (e.g. one number per seed) and its standard error ``sd / sqrt(n)``, ``sd`` with
    ``n - 1`` degrees of freedom; ``None`` for one value."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    variance = sum((value - mean) ** 2 for value in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """``(mean(d), std(d) / sqrt(N))`` of ``d = a - b`` over ``N`` paired examples (``ddof = 1``)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))


def _paired(name: str, members: list[Run], baselines: list[Run]) -> dict | None:
    """The paired differences of a run (group) against the baseline's run of the same seed and test set; ``None``
    where they share none."""
    by_seed = {run.seed: run for run in baselines if run.values}
    pairs = [(run, by_seed[run.seed]) for run in members if _same_test_set(run, by_seed.get(run.seed))]
    if not pairs:
        return None
    row = {"run": name, "seeds": len(pairs)}
    for key, _ in PAIRED:
        both = [(a.values[key], b.values[key]) for a, b in pairs if key in a.values and key in b.values]
        differences = [paired_difference(a, b) for a, b in both]
        if differences and len(differences) == len(pairs):
            means, errors = zip(*differences, strict=True)
            row[f"{key}_diff"], row[f"{key}_diff_se"] = _mean_and_se(list(means), list(errors))
    return row


def _same_test_set(a: Run, b: Run | None) -> bool:
    return b is not None and bool(a.values) and a.values.get(FINGERPRINT_KEY) == b.values.get(FINGERPRINT_KEY)


def _sort(comparison: Comparison, column: str, descending: bool) -> None:
    columns = comparison.columns
    if column not in columns:
        raise InputError(f"--sort {column!r} is not a column: expected one of {', '.join(columns)}")
    present = [row for row in comparison.rows if row.get(column) is not None]
    missing = [row for row in comparison.rows if row.get(column) is None]
    numeric = all(_is_number(row[column]) for row in present)
    present.sort(key=lambda row: row[column] if numeric else str(row[column]), reverse=descending)
    comparison.rows = present + missing


def write_comparison(comparison: Comparison, runs: Sequence[Run], out_dir: str | Path) -> list[Path]:
    """Write ``compare.md``, ``compare.csv`` and ``compare_curves.png`` (the per-epoch held-out ELBO of every run,
    overlaid) into ``out_dir``; returns their paths."""
    from ppl_vae import plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / COMPARE_MD, lambda file: file.write(comparison.markdown()), mode="w")
    atomic_write(out_dir / COMPARE_CSV, lambda file: file.write(comparison.csv()), mode="w")
    curves = {run.name: curve for run in runs if (curve := run.curve()) is not None}
    written = [out_dir / COMPARE_MD, out_dir / COMPARE_CSV]
    if curves:
        written.append(plots.plot_curve_overlay(curves, out_dir / COMPARE_PNG))
    return written
