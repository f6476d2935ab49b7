"""The evaluation report of a run folder: ``report.json``, ``report.md``, ``posterior.nc`` and the diagnostic figures.

``ppl-vae evaluate RUN_DIR`` writes, beside ``metrics.json``::

    report.json          the numbers (keys below), nats per example
    report.md            the same as a readable page, with the warnings and the figures
    posterior.nc         ArviZ InferenceData of guide draws (see ppl_vae.arviz_export), netCDF via h5netcdf
    test_values.npz      log p(x) of every test example (from these draws), for paired comparisons
                         (see ppl_vae.test_values)
    khat.png             Pareto k-hat per test example (az.plot_khat)
    kl_per_dim.png       the KL term and the activity of every latent dimension, one panel per latent site
    gap_histogram.png    log p(x) - ELBO per test example
    manifold.png         the decoded latent grid (z_dim = 2 and no labels only)

``report.json`` keys: ``log_likelihood``, ``log_likelihood_se``, ``elbo``, ``elbo_se``, ``gap``, ``gap_se``, ``k``,
``khat`` (per example; ``null`` where the weights are constant), ``khat_share_above_0_7``, ``khat_share_above_0_5``,
``ess_mean``, ``kl_per_dim``, ``activity``, ``active_units``, ``collapsed`` (the single latent site's; with several,
over all of them), ``latent_sites`` (per latent site: ``kl_per_dim``, ``kl_per_dim_se``, ``kl_total``,
``kl_total_se``, ``kl_method``, ``kl_factorized``, ``activity``, ``active_units``, ``units``, ``collapsed``; see
:mod:`ppl_vae.latent_sites`), ``warnings``, ``test_examples``, ``draws``, ``examples_per_second`` (of the draws); with
the inference gap also ``amortization_gap``, ``approximation_gap`` and their ``_se``, ``gap_examples``, ``gap_steps``
and the subset's bounds (``gap_log_likelihood``, ``gap_elbo_amortized``, ``gap_elbo_local``). A conditional VAE is
evaluated with the test labels: every number is then of ``log p(x | y)``.

Example::

    report = write_report(vae, data, "runs/digits", k=5000, options=ReportConfig(gap_examples=20))
    print(format_table(report))
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ppl_vae.checkpoint import atomic_write, save_json
from ppl_vae.config import MAX_STEPS, require_at_most, require_int, require_samples
from ppl_vae.data import Dataset
from ppl_vae.diagnostics import ACTIVE_UNIT_THRESHOLD, MIN_KHAT_SAMPLES, check_samples, diagnose
from ppl_vae.errors import InputError
from ppl_vae.evaluate import program_test_set
from ppl_vae.programs import as_user_program
from ppl_vae.tables import table
from ppl_vae.test_values import observed_digest, save_test_values

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
POSTERIOR_NC = "posterior.nc"
MANIFOLD_SIDE = 15


@dataclass(frozen=True)
class ReportConfig:
    """What the report computes besides the importance-sampling diagnostics.

    Attributes:
        gap_examples: test examples for the inference gap (0: skip it); each costs one local SVI fit.
        gap_steps: SVI steps of that fit.
        draws: guide draws per test example in ``posterior.nc`` (at least 100, for the k-hat).
    """

    gap_examples: int = 20
    gap_steps: int = 300
    draws: int = 200

    def check(self, k: int, test_examples: int) -> None:
        """Refuse options that the data or ``k`` cannot serve, before any work is done."""
        if self.gap_examples > test_examples:
            raise InputError(f"--gap-examples {self.gap_examples} exceeds the {test_examples} test examples")
        check_samples(k)

    def __post_init__(self):
        require_int(self.gap_examples, "--gap-examples", least=0)
        require_int(self.gap_steps, "--gap-steps")
        require_at_most(self.gap_steps, "--gap-steps", MAX_STEPS, "SVI steps per example")
        require_int(self.draws, "--draws", least=MIN_KHAT_SAMPLES)  # PSIS needs that many draws
        require_samples(self.draws, "--draws")


def write_report(
    trained,
    data: Dataset,
    run_dir: str | Path,
    k: int,
    options: ReportConfig | None = None,
    *,
    memory_mb: float | None = None,
) -> dict:
    """Diagnose ``trained`` (the built-in :class:`~ppl_vae.vae.VAE` or a user's
    :class:`~ppl_vae.programs.UserProgram`) on ``data``'s test set with ``k`` importance samples per example and
    write the report files into ``run_dir`` (``options``: :class:`ReportConfig`, its defaults when ``None``); returns
    the contents of ``report.json``. A program that takes labels gets the test labels in every computation.
    ``memory_mb``: the budget of one pass of samples (see :mod:`ppl_vae.eval_memory`); ``examples_per_second`` in
    the report: test examples per second of the diagnostics' draws (``k`` each)."""
    from ppl_vae import plots
    from ppl_vae.arviz_export import to_inference_data
    from ppl_vae.inference_gap import inference_gap
    from ppl_vae.vae import VAE

    options = options or ReportConfig()
    run_dir = Path(run_dir)
    program = as_user_program(trained)
    x_test, y_test = program_test_set(program, data)
    options.check(k, x_test.shape[0])
    started = time.perf_counter()
    diagnostics = diagnose(program.model, program.guide, x_test, k=k, y=y_test, memory_mb=memory_mb)
    seconds = time.perf_counter() - started
    save_test_values(run_dir, observed_digest(x_test, y_test), log_likelihood=diagnostics.log_likelihood.per_example)
    report = diagnostics.to_json()
    report.update(test_examples=x_test.shape[0], draws=options.draws, examples_per_second=x_test.shape[0] / seconds)
    if options.gap_examples:
        subset = slice(0, options.gap_examples)
        labels = None if y_test is None else y_test[subset]
        gap = inference_gap(program.model, program.guide, x_test[subset], steps=options.gap_steps, k=k, y=labels)
        report.update(gap.to_json())
    report["warnings"] = diagnostics.warnings + (gap.warnings if options.gap_examples else [])

    to_inference_data(program, x_test, options.draws, y=y_test).to_netcdf(str(run_dir / POSTERIOR_NC))
    figures = [
        plots.plot_khat(diagnostics.khat, run_dir / "khat.png", k=k),
        plots.plot_kl_per_dim(report["latent_sites"], run_dir / "kl_per_dim.png"),
        plots.plot_gap_histogram(diagnostics.gap.per_example, run_dir / "gap_histogram.png", k=k),
    ]
    # the built-in one-layer VAE's p(x | z), whose prior is N(0, I) (a program's UserProgram.decode has no config)
    one_layer = isinstance(trained, VAE) and trained.config.latent_layers == 1
    if one_layer and trained.config.z_dim == 2 and y_test is None:  # conditional: one grid per class
        # quantiles of N(0, 1), made on the device; the axis labels move to the CPU with the images, for the plot
        z_values = torch.special.ndtri(torch.linspace(0.05, 0.95, MANIFOLD_SIDE, device=program.device))
        rows, columns = torch.meshgrid(z_values.flip(0), z_values, indexing="ij")
        z = torch.stack([columns, rows], dim=-1).reshape(-1, 2)
        with torch.no_grad():
            images = trained.decode(z).mean
        figures.append(plots.plot_manifold(images, data.image_shape, z_values.cpu(), run_dir / "manifold.png"))
    save_json(run_dir / REPORT_JSON, report)
    atomic_write(run_dir / REPORT_MD, lambda file: file.write(format_markdown(report, figures, data.name)), mode="w")
    return report


def _rows(report: dict) -> list[tuple[str, float, float]]:
    """``(name, value, standard error)`` in nats per example, in the order of the tables."""
    rows = [
        (f"log p(x) (IWAE, k={report['k']})", report["log_likelihood"], report["log_likelihood_se"]),
        ("ELBO (same draws)", report["elbo"], report["elbo_se"]),
        ("gap log p(x) - ELBO", report["gap"], report["gap_se"]),
    ]
    if "amortization_gap" in report:
        subset = f"{report['gap_examples']} examples"
        rows += [
            (f"amortization gap ({subset})", report["amortization_gap"], report["amortization_gap_se"]),
            (f"approximation gap ({subset})", report["approximation_gap"], report["approximation_gap_se"]),
        ]
    return rows


def _summary_lines(report: dict) -> list[str]:
    lines = [
        f"Pareto k-hat > 0.7: {report['khat_share_above_0_7']:.1%} of examples, > 0.5: "
        f"{report['khat_share_above_0_5']:.1%}; mean ESS {report['ess_mean']:.0f} of k = {report['k']}",
        f"active units: {report['active_units']} of {len(report['activity'])} (Var_x E_q[z_j] > "
        f"{ACTIVE_UNIT_THRESHOLD}); total KL {sum(report['kl_per_dim']):.3f} nats per example; collapsed: "
        f"{'yes' if report['collapsed'] else 'no'}",
    ]
    sites = report["latent_sites"]
    if len(sites) > 1:
        lines += [
            f"latent site {name!r}: KL term {site['kl_total']:.3f} +- {site['kl_total_se']:.3f} nats per example "
            f"({site['kl_method']}), "
            + (
                f"{site['active_units']} of {site['units']} units active"
                if site["activity"] is not None
                else "activity not measured (a discrete site, or one test example)"
            )
            for name, site in sites.items()
        ]
    return lines


def _quantity_table(report: dict, style: str) -> str:
    """The estimates of :func:`_rows` as a table (:func:`ppl_vae.tables.table` style ``style``)."""
    rows = [[name, f"{value:.3f}", f"{se:.3f}"] for name, value, se in _rows(report)]
    return table(["quantity", "nats per example", "std. error"], rows, style=style)


def format_table(report: dict) -> str:
    """The compact terminal table, then the k-hat and latent-code lines and the warnings."""
    lines = [_quantity_table(report, "terminal")]
    lines += _summary_lines(report)
    lines += [f"WARNING: {warning}" for warning in report["warnings"]]
    return "\n".join(lines)


def _site_table(name: str, site: dict, single: bool) -> list[str]:
    """The markdown table of one latent site: the KL term per dimension (with its standard error where it is an
    estimate), the activity and whether the dimension is active."""
    lines = []
    if not single:
        lines += [
            "",
            f"### Site `{name}`: KL term {site['kl_total']:.4f} +- {site['kl_total_se']:.4f} nats per example "
            f"({site['kl_method']})",
        ]
    estimated = any(se > 0 for se in site["kl_per_dim_se"])
    kl_header = "KL(q(z_j given x) vs p(z_j))" if single else "KL term"
    columns = ["dimension", f"{kl_header}, nats per example"] + (["std. error"] if estimated else [])
    columns += ["Var_x E_q[z_j]", "active"]
    rows = []
    activity = site["activity"]
    units = len(site["kl_per_dim"]) if activity is None else len(activity)
    for index in range(units):
        if site["kl_factorized"]:
            kl = [f"{site['kl_per_dim'][index]:.4f}"] + ([f"{site['kl_per_dim_se'][index]:.4f}"] if estimated else [])
        elif index == 0:  # one term for the whole site
            kl = [f"{site['kl_total']:.4f} (whole site)"] + ([f"{site['kl_total_se']:.4f}"] if estimated else [])
        else:
            kl = [""] * (2 if estimated else 1)
        if activity is None:
            used = ["", ""]
        else:
            used = [f"{activity[index]:.4f}", "yes" if activity[index] > ACTIVE_UNIT_THRESHOLD else "no"]
        rows.append([str(index), *kl, *used])
    return [*lines, "", table(columns, rows, align="r" * (len(columns) - 1) + "c")]


def format_markdown(report: dict, figures: list[Path], data_name: str) -> str:
    """``report.md``: the tables, the warnings, the KL per dimension and the figures."""
    lines = [
        "# Evaluation report",
        "",
        f"Test set of `{data_name}`: {report['test_examples']} examples, k = {report['k']} importance samples per "
        "example from the guide q(z | x). log p(x) and the ELBO come from the same draws.",
        "",
    ]
    lines += [f"> **Warning:** {warning}" for warning in report["warnings"]]
    if report["warnings"]:
        lines.append("")
    lines.append(_quantity_table(report, "markdown"))
    lines += [""] + [f"- {line}" for line in _summary_lines(report)]
    if "amortization_gap" in report:
        lines.append(
            f"- inference gap on the first {report['gap_examples']} test examples (Cremer et al. 2018): a Normal guide "
            f"per example fitted by SVI ({report['gap_steps']} steps); log p(x) there from k draws of the even "
            "mixture of both guides"
        )
    lines += ["", "## Latent dimensions"]
    if len(report["latent_sites"]) > 1:
        lines += [
            "",
            "Per latent site, the KL term E_q[log q(z_j given ...) - log p(z_j given its parents)] per dimension, "
            "nats per example: a closed form where one is registered and the prior has no latent parent, else a "
            "Monte Carlo estimate from the same k draws (with its standard error). For a site whose prior depends "
            "on other latent sites it is an expectation that can be negative; the terms of all sites add up to "
            "KL(q(z given x) vs p(z)).",
        ]
    for name, site in report["latent_sites"].items():
        lines += _site_table(name, site, single=len(report["latent_sites"]) == 1)
    lines += ["", "## Figures", ""] + [f"![{figure.stem}]({figure.name})" for figure in figures]
    lines += [
        "",
        f"ArviZ: `{POSTERIOR_NC}` holds {report['draws']} guide draws per test example (groups posterior, "
        "log_likelihood, importance_weights, observed_data); open it with `arviz.from_netcdf`.",
        "",
    ]
    return "\n".join(lines)
