"""The KL lab's report: the result of :func:`ppl_vae.lab.compare_kl` as Markdown, JSON and figures.

``write_report(result, out_dir)`` writes ``compare_kl.json`` (the result as it is), ``compare_kl.md``
(:func:`format_report`: the estimator table, the agreement check, what meanfield does, the heads table),
``compare_kl.png`` and, with the heads study, ``compare_kl_heads.png``. Tables come from :func:`ppl_vae.tables.table`.
"""

from __future__ import annotations

from pathlib import Path

from ppl_vae.checkpoint import save_json
from ppl_vae.compare import mean_and_se
from ppl_vae.lab.heads_study import paired_differences, run_groups, run_label
from ppl_vae.tables import table


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _estimator_table(result: dict) -> str:
    groups = result["parameter_groups"]
    header = [
        "estimator",
        "ELBO, nats per example",
        "std. error, nats per example",
        *(f"grad. var. {group}" for group in groups),
        "ms per gradient",
        "ms per training step",
        "test ELBO after last epoch, nats per example",
    ]
    rows = [
        [
            row["name"],
            f"{row['elbo_mean']:.3f}",
            f"{row['elbo_se']:.3f}",
            *(f"{row[f'grad_var_{group}']:.4g}" for group in groups),
            f"{row['ms_per_step']:.2f}",
            _number(row["train_ms_per_step"], 2),
            _number(row["test_elbo_curve"][-1] if row["test_elbo_curve"] else None, 3),
        ]
        for row in result["estimators"]
    ]
    return table(header, rows)


def _plus_minus(mean: float, se: float | None, digits: int = 2) -> str:
    return f"{mean:+.{digits}f}" + ("" if se is None else f" +- {se:.{digits}f}")


def heads_table(heads: list[dict]) -> str:
    """One row per setting (head, factor, estimator, optimizer, lr, z_dim): test ELBO means over its seeds (+- the
    standard error with two or more seeds), and the dimensions that end inactive with their mean posterior std."""
    header = [
        "head",
        "estimator",
        "optimizer, lr",
        "z_dim",
        "seeds",
        "test ELBO after epoch 1, nats per example",
        "after last epoch, nats per example",
        "best, nats per example",
        "inactive dims (KL < 0.01 nats)",
        "their mean posterior std, last epoch",
    ]
    rows = []
    for group in run_groups(heads).values():
        first = group[0]
        last = mean_and_se([row["test_elbo_curve"][-1] for row in group])
        inactive = [row for row in group if row.get("inactive_dims") is not None]
        scales = [row["inactive_scale_curve"][-1] for row in inactive if row["inactive_scale_curve"] is not None]
        rows.append(
            [
                run_label(first),
                first["estimator"],
                f"{first['optimizer']} {first['lr']:g}",
                str(first["z_dim"]),
                str(len(group)),
                f"{mean_and_se([row['test_elbo_curve'][0] for row in group])[0]:.3f}",
                f"{last[0]:.3f}" + ("" if last[1] is None else f" +- {last[1]:.3f}"),
                f"{mean_and_se([max(row['test_elbo_curve']) for row in group])[0]:.3f}",
                f"{mean_and_se([len(row['inactive_dims']) for row in inactive])[0]:.1f}" if inactive else "-",
                f"{mean_and_se(scales)[0]:.3f}" if scales else "-",
            ]
        )
    return table(header, rows, align="llllrrrrrr")


def heads_comparisons(heads: list[dict]) -> list[str]:
    comparisons = paired_differences(heads)
    if not comparisons:
        return []
    lines = [
        "",
        "Paired differences of test ELBO against log_var (same seed, same start, same minibatches; mean +- standard "
        "error over seeds, nats per example; positive: ahead of log_var):",
        "",
    ]
    for row in comparisons:
        epochs = [f"epoch {row['early_epoch']} {_plus_minus(row['early'], row['early_se'])}"]
        if row["last_epoch"] != row["early_epoch"]:  # a run of one epoch has one
            epochs.append(f"epoch {row['last_epoch']} {_plus_minus(row['last'], row['last_se'])}")
        lines.append(
            f"- {row['cell']}: {row['label']}: {', '.join(epochs)} (paired over {row['seeds']} "
            f"seed{'s' if row['seeds'] != 1 else ''})"
        )
    return lines


def format_report(result: dict) -> str:
    """The result as Markdown: the estimator table, the agreement check, the meanfield note, the heads table."""
    settings, model, groups = result["settings"], result["model"], result["parameter_groups"]
    if model is None:
        what = f"a user's program (parameter groups {', '.join(groups)})"
    else:
        layers = f", latent layers {model['latent_layers']}" if model.get("latent_layers", 1) != 1 else ""
        what = f"z_dim {model['z_dim']}, hidden {tuple(model['hidden'])}, head {model['scale_param']}{layers}"
    lines = [
        f"Data {result['data']}, {what}; {settings['repetitions']} repetitions on "
        f"{result['fixed_minibatch']}; {settings['num_particles']} particle(s); training {settings['epochs']} epochs, "
        f"batch {settings['batch_size']}, lr {settings['lr']}, seed {settings['seed']}.",
        "",
        _estimator_table(result),
        "",
        "grad. var. <group>: the per-coordinate variance over the repetitions of the gradient of -ELBO (nats per "
        "example), summed over the group's parameters.",
    ]
    if result["agreement"]:
        lines += ["", "ELBO agreement at fixed parameters (difference in standard errors; |z| < 3 agrees):", ""]
    for check in result["agreement"]:
        verdict = "agrees" if abs(check["z"]) < 3 else "DISAGREES"
        lines.append(
            f"- {check['estimator']} - {check['baseline']}: {check['difference']:+.3f} +- {check['se']:.3f} nats per "
            f"example, z = {check['z']:+.2f} ({verdict})"
        )
    lines += ["", result["meanfield_note"]]
    if result["skipped"]:
        lines.append(f"Left out of the table for that reason: {', '.join(result['skipped'])}.")
    if "heads" in result:
        lines += ["", heads_table(result["heads"]), *heads_comparisons(result["heads"])]
    return "\n".join(lines) + "\n"


def write_report(result: dict, out_dir: str | Path) -> str:
    """Write ``compare_kl.json``, ``compare_kl.md``, ``compare_kl.png`` (and ``compare_kl_heads.png``) to ``out_dir``;
    returns the Markdown text."""
    from ppl_vae import plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = format_report(result)
    save_json(out_dir / "compare_kl.json", result)
    (out_dir / "compare_kl.md").write_text(text)
    title = f"{result['data']}: Monte Carlo vs analytic KL"
    plots.plot_compare_kl(
        result["estimators"], out_dir / "compare_kl.png", title=title, groups=result["parameter_groups"]
    )
    if "heads" in result:
        plots.plot_head_curves(
            result["heads"], out_dir / "compare_kl_heads.png", title=f"{result['data']}: scale heads"
        )
    return text
