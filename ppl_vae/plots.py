"""Figures saved as PNG, drawn from plain arrays with matplotlib's Agg backend (no screen needed).

Import this module lazily (only where a figure is made): matplotlib is slow to import.

Example::

    plot_training_curves(history, "runs/x/elbo.png")
    plot_image_grid(vae.sample(64), (1, 8, 8), "runs/x/samples.png", "Samples from the prior")
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _save(figure, path: str | Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def _to_images(x: torch.Tensor | np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
    """``(N, D)`` -> ``(N, H, W)`` for one channel, ``(N, H, W, C)`` otherwise, values in [0, 1]."""
    array = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
    channels, height, width = image_shape
    array = array.reshape(-1, channels, height, width).transpose(0, 2, 3, 1)
    return np.clip(array[..., 0] if channels == 1 else array, 0.0, 1.0)


def _grid(images: np.ndarray, columns: int) -> np.ndarray:
    """Tile ``(N, H, W[, C])`` into one image with ``columns`` per row and a 1-pixel gap."""
    count, height, width = images.shape[:3]
    rows = math.ceil(count / columns)
    canvas = np.ones((rows * (height + 1) - 1, columns * (width + 1) - 1, *images.shape[3:]), dtype=np.float32)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        canvas[
            row * (height + 1) : row * (height + 1) + height, column * (width + 1) : column * (width + 1) + width
        ] = image
    return canvas


def plot_training_curves(history: list[dict], path: str | Path, title: str = "ELBO per epoch") -> Path:
    """Train and held-out ELBO (nats per example) against the epoch; the held-out curve (the validation ELBO where the
    history has ``val_elbo``, else the test ELBO) with +-2 standard errors."""
    figure, axes = plt.subplots(figsize=(6, 4))
    epochs = [record["epoch"] for record in history]
    axes.plot(epochs, [record["train_elbo"] for record in history], label="train ELBO (training objective)")
    key, name = ("val_elbo", "validation") if any("val_elbo" in record for record in history) else ("test_elbo", "test")
    tested = [record for record in history if key in record]
    test_epochs = np.array([record["epoch"] for record in tested])
    test = np.array([record[key] for record in tested])
    se = np.array([record[f"{key}_se"] for record in tested])
    axes.plot(test_epochs, test, marker="o", markersize=3, label=f"{name} ELBO")
    axes.fill_between(test_epochs, test - 2 * se, test + 2 * se, alpha=0.25, label=f"{name} ELBO +-2 SE")
    axes.set(xlabel="epoch", ylabel="ELBO (nats per example, higher is better)", title=title)
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def plot_image_grid(images, image_shape: Sequence[int], path: str | Path, title: str, columns: int = 8) -> Path:
    """A grid of images ``(N, D)`` with values in [0, 1]."""
    grid = _grid(_to_images(images, image_shape), columns)
    figure, axes = plt.subplots(figsize=(columns * 0.8, grid.shape[0] / grid.shape[1] * columns * 0.8 + 0.6))
    axes.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.set_title(title)
    axes.axis("off")
    return _save(figure, path)


def plot_reconstructions(
    originals,
    reconstructions,
    image_shape: Sequence[int],
    path: str | Path,
    columns: int = 8,
    title: str = "Test images (odd rows) above their reconstructions (even rows)",
) -> Path:
    """Rows of originals, each directly above a row of their reconstructions."""
    originals = _to_images(originals, image_shape)
    reconstructions = _to_images(reconstructions, image_shape)
    rows = []
    for start in range(0, len(originals), columns):
        rows += [originals[start : start + columns], reconstructions[start : start + columns]]
    figure, axes = plt.subplots(len(rows), 1, figsize=(columns * 0.8, len(rows) * 0.9 + 0.6))
    for index, (axis, row) in enumerate(zip(np.atleast_1d(axes), rows, strict=True)):
        axis.imshow(_grid(row, columns), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        axis.set_ylabel("original" if index % 2 == 0 else "recon.", rotation=0, ha="right", va="center")
        axis.set_xticks([])
        axis.set_yticks([])
    np.atleast_1d(axes)[0].set_title(title)
    return _save(figure, path)


def plot_latent_scatter(z_loc, labels, path: str | Path, of: str = "E_q[z | x]") -> Path:
    """Latent means ``(N, z_dim)`` coloured by label: the two dimensions themselves when ``z_dim == 2``, the first two
    principal components otherwise (a 1-D code is plotted against zero; fewer than 3 images, which have no second
    principal direction, show their first two dimensions)."""
    z = np.asarray(z_loc.detach().cpu() if isinstance(z_loc, torch.Tensor) else z_loc, dtype=np.float64)
    if z.shape[1] == 1:
        points, axis_names = np.column_stack([z[:, 0], np.zeros(len(z))]), ("z[0]", "")
    elif z.shape[1] == 2 or len(z) < 3:
        points, axis_names = z[:, :2], ("z[0]", "z[1]")
    else:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2).fit(z)
        points = pca.transform(z)
        share = pca.explained_variance_ratio_
        axis_names = (f"PC 1 ({share[0]:.0%} of variance)", f"PC 2 ({share[1]:.0%} of variance)")
    figure, axes = plt.subplots(figsize=(6, 5))
    colours = None if labels is None else np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    coloured = {} if colours is None else {"c": colours, "cmap": "tab10"}
    scatter = axes.scatter(points[:, 0], points[:, 1], s=8, alpha=0.8, **coloured)
    if colours is not None:
        figure.colorbar(scatter, ax=axes, label="label")
    projection = "" if z.shape[1] <= 2 or len(z) < 3 else f", PCA of {z.shape[1]} dimensions"
    axes.set(xlabel=axis_names[0], ylabel=axis_names[1], title=f"Latent means {of} of test images{projection}")
    return _save(figure, path)


def plot_image_rows(
    rows,
    image_shape: Sequence[int],
    path: str | Path,
    title: str,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    column_name: str = "",
) -> Path:
    """Images ``(R, S, D)`` in [0, 1] as ``R`` rows of ``S``, each row labelled on the left (``row_labels``), each
    column below (``column_labels``, named ``column_name``): a traversal (one row per latent dimension) or an
    interpolation (one row)."""
    rows = np.asarray(rows.detach().cpu() if isinstance(rows, torch.Tensor) else rows, dtype=np.float32)
    count, columns = rows.shape[:2]
    grid = _grid(_to_images(rows.reshape(count * columns, -1), image_shape), columns)
    height, width = image_shape[1], image_shape[2]
    figure, axes = plt.subplots(figsize=(columns * 0.75 + 1.6, count * 0.75 * height / width + 1.1))
    axes.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.set_xticks(np.arange(columns) * (width + 1) + width / 2 - 0.5, list(column_labels), fontsize=7)
    axes.set_yticks(np.arange(count) * (height + 1) + height / 2 - 0.5, list(row_labels), fontsize=8)
    axes.tick_params(length=0)
    axes.set_xlabel(column_name)
    axes.set_title(title, fontsize=10)
    for spine in axes.spines.values():
        spine.set_visible(False)
    return _save(figure, path)


# --- objectives and the conditional VAE -------------------------------------------------------------------------


def plot_class_samples(
    images, classes, image_shape: Sequence[int], path: str | Path, title: str = "Samples of p(x | z, y), z ~ p(z)"
) -> Path:
    """One row per requested class: ``images`` ``(N, D)`` in [0, 1] drawn for ``classes`` ``(N,)``, each row labelled
    ``y = c`` and holding that class's images in order."""
    classes = np.asarray(classes.cpu() if isinstance(classes, torch.Tensor) else classes)
    images = _to_images(images, image_shape)
    rows = [(int(c), images[classes == c]) for c in dict.fromkeys(classes.tolist())]
    columns = max(len(row) for _, row in rows)
    figure, axes = plt.subplots(len(rows), 1, figsize=(columns * 0.8 + 0.6, len(rows) * 0.85 + 0.6))
    for axis, (label, row) in zip(np.atleast_1d(axes), rows, strict=True):
        axis.imshow(_grid(row, columns), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        axis.set_ylabel(f"y = {label}", rotation=0, ha="right", va="center")
        axis.set_xticks([])
        axis.set_yticks([])
    np.atleast_1d(axes)[0].set_title(title)
    return _save(figure, path)


# --- diagnostics (ppl_vae.diagnostics, ppl_vae.report) -------------------------------------------------------------
def plot_khat(khat, path: str | Path, k: int, title: str = "Pareto k-hat of the importance weights") -> Path:
    """ArviZ's ``az.plot_khat`` of the k-hat per example ``(N,)`` (from ``k`` draws each), with the 0.5 and 0.7 lines.

    Examples with constant weights (k-hat ``-inf``) are drawn at the bottom of the axis.
    """
    import xarray as xr

    from ppl_vae.diagnostics import KHAT_THRESHOLDS, import_arviz

    az = import_arviz()
    values = np.asarray(khat.cpu() if isinstance(khat, torch.Tensor) else khat, dtype=np.float64)
    finite = values[np.isfinite(values)]
    floor = min(finite.min() if finite.size else 0.0, 0.0) - 0.1
    pareto_k = xr.DataArray(np.where(np.isfinite(values), values, floor), dims=["example"])
    # az.plot_khat reads .pareto_k and .good_k of an ELPDData (arrays are deprecated there); the good-k line is 0.7
    container = az.ELPDData(data=[pareto_k, KHAT_THRESHOLDS[1]], index=["pareto_k", "good_k"])
    figure, axes = plt.subplots(figsize=(7, 4))
    with warnings.catch_warnings():  # ArviZ 0.23 calls a helper that matplotlib 3.11 deprecates; nothing to act on
        warnings.filterwarnings(
            "ignore", message="Passing a dict or None as alias_mapping", category=DeprecationWarning
        )
        az.plot_khat(container, ax=axes, show_hlines=True, show_bins=True, color="C0", markersize=8)
    axes.axhline(KHAT_THRESHOLDS[0], color="C1", linestyle=":", linewidth=1, label="0.5: infinite variance above")
    axes.axhline(KHAT_THRESHOLDS[1], color="C3", linestyle="--", linewidth=1, label="0.7: unreliable above")
    axes.set(xlabel="test example", ylabel="Pareto k-hat", title=f"{title} (k = {k} per example)")
    axes.legend(loc="upper right", fontsize=8)
    return _save(figure, path)


def plot_kl_per_dim(latent_sites: dict[str, dict], path: str | Path, threshold: float = 0.01) -> Path:
    """One panel per latent site (``report.json``'s ``latent_sites``: ``kl_per_dim``, ``kl_per_dim_se``,
    ``kl_method``, ``activity``): bars of the KL term per dimension (nats per example, +-2 standard errors where it
    is an estimate), active dimensions (``activity > threshold``) in colour, inactive in grey; the activity
    ``Var_x(E_q[z_j | x])`` on a second axis. A site whose distributions do not factorize gets one line for its whole
    KL term; a discrete site (or any site on one test example) has no activity."""
    width = max(len(site["activity"] or site["kl_per_dim"]) for site in latent_sites.values())
    narrowest = 5 if len(latent_sites) == 1 else 7  # room for the site's name in each title
    figure, panels = plt.subplots(
        len(latent_sites), 1, figsize=(max(narrowest, 0.5 * width + 2), 4.8 * len(latent_sites)), squeeze=False
    )
    for (name, site), axes in zip(latent_sites.items(), panels[:, 0], strict=True):
        _kl_panel(axes, site, threshold, None if len(latent_sites) == 1 else name)
    return _save(figure, path)


def _kl_panel(axes, site: dict, threshold: float, name: str | None) -> None:
    """The KL bars and activity of one site on ``axes`` (``name``: ``None`` for the only latent site)."""
    kl = np.asarray(site["kl_per_dim"], dtype=np.float64)
    se = np.asarray(site["kl_per_dim_se"], dtype=np.float64)
    activity = None if site["activity"] is None else np.asarray(site["activity"], dtype=np.float64)
    units = len(kl) if activity is None else len(activity)
    dims = np.arange(units)
    active = np.ones(units, dtype=bool) if activity is None else activity > threshold
    error = {"yerr": 2 * se, "capsize": 3} if (se > 0).any() else {}
    if activity is not None and len(kl) != units:  # the site does not factorize: one KL term for all of it
        axes.axhline(kl.sum(), color="C0", label="KL term of the whole site (its distributions do not factorize)")
    else:
        kinds = ((active, "C0", "active dimension"), (~active, "0.6", "inactive dimension"))
        if activity is None:
            kinds = ((active, "C0", "KL term (activity not measured)"),)
        for chosen, colour, label in kinds:
            if chosen.any():
                chosen_error = {key: value[chosen] if key == "yerr" else value for key, value in error.items()}
                axes.bar(dims[chosen], kl[chosen], color=colour, label=label, **chosen_error)
    count = f"{int(active.sum())} of {units} active" if activity is not None else f"{units} units"
    if name is None:
        title, ylabel = f"KL per latent dimension: {count}", "KL(q(z_j | x) || p(z_j)), nats per example"
    else:
        title = f"site {name!r}: KL term per dimension ({site['kl_method']}), {count}"
        ylabel = "KL term E_q[log q(z_j | ..) / p(z_j | pa)], nats"
    axes.set(xlabel="latent dimension j", ylabel=ylabel, title=title, xticks=dims)
    handles, labels = axes.get_legend_handles_labels()
    if activity is not None:
        second = axes.twinx()
        second.plot(dims, activity, "o", color="C3", label="Var_x(E_q[z_j | x])")
        second.axhline(threshold, color="C3", linestyle=":", linewidth=1, label=f"activity threshold {threshold}")
        second.set_yscale("log")
        second.set_ylabel("activity Var_x(E_q[z_j | x])")
        more = second.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    axes.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)


def plot_gap_histogram(gap, path: str | Path, k: int) -> Path:
    """Histogram over examples of ``log p(x) - ELBO`` (nats), both estimated from the same ``k`` draws."""
    values = np.asarray(gap.cpu() if isinstance(gap, torch.Tensor) else gap, dtype=np.float64)
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.hist(values, bins=30, color="C0", alpha=0.8)
    axes.axvline(values.mean(), color="C3", label=f"mean {values.mean():.3f} nats")
    axes.set(
        xlabel="log p(x) - ELBO (nats, per example)",
        ylabel="test examples",
        title=f"Gap between IWAE log p(x) (k = {k}) and the ELBO",
    )
    axes.legend()
    return _save(figure, path)


def plot_manifold(images, image_shape: Sequence[int], z_values, path: str | Path) -> Path:
    """The decoded 2-D latent manifold: ``images`` ``(n * n, D)``, row ``r`` and column ``c`` decoded at
    ``z = (z_values[c], z_values[n - 1 - r])`` (``z[1]`` grows upwards), the values marked on the axes."""
    z_values = np.asarray(z_values, dtype=np.float64)
    n = len(z_values)
    grid = _grid(_to_images(images, image_shape), n)
    figure, axes = plt.subplots(figsize=(7, 7))
    axes.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    height, width = image_shape[1], image_shape[2]
    ticks = np.arange(n)
    axes.set_xticks(ticks * (width + 1) + width / 2 - 0.5, [f"{value:.1f}" for value in z_values], fontsize=7)
    axes.set_yticks(ticks * (height + 1) + height / 2 - 0.5, [f"{value:.1f}" for value in z_values[::-1]], fontsize=7)
    axes.set(xlabel="z[0]", ylabel="z[1]", title="Pixel means of p(x | z) on a grid of prior quantiles")
    return _save(figure, path)


# --- KL lab (ppl_vae.lab): estimators and scale heads ------------------------------------------------------------
def plot_compare_kl(
    estimators: list[dict],
    path: str | Path,
    title: str = "Monte Carlo vs analytic KL",
    groups: Sequence[str] = ("encoder", "decoder"),
) -> Path:
    """Left: test ELBO per epoch for each estimator (nats per example). Right: gradient variance at fixed parameters,
    one bar per parameter group (``grad_var_<group>``: the VAE's encoder and decoder) per estimator, on a log scale."""
    figure, (curves, bars) = plt.subplots(1, 2, figsize=(12, 4.5))
    for index, row in enumerate(estimators):  # alternate line styles: estimators with equal curves stay visible
        curve = row["test_elbo_curve"]
        style = ("-", "--")[index % 2]
        curves.plot(range(1, len(curve) + 1), curve, style, marker="o", markersize=2, label=row["name"])
    curves.set(
        xlabel="epoch", ylabel="test ELBO (nats per example, higher is better)", title="Training from the same start"
    )
    curves.grid(alpha=0.3)
    curves.legend()
    names = [row["name"] for row in estimators]
    positions = np.arange(len(names))
    width = 0.8 / len(groups)
    for index, part in enumerate(groups):
        offset = (index - (len(groups) - 1) / 2) * width
        bars.bar(positions + offset, [row[f"grad_var_{part}"] for row in estimators], width=width, label=part)
    bars.set_xticks(positions, names, rotation=20)
    bars.set_yscale("log")
    smallest = min(row[f"grad_var_{part}"] for row in estimators for part in groups)
    bars.set_ylim(bottom=smallest / 3 if smallest > 0 else None)
    bars.set(ylabel="sum of per-coordinate gradient variances", title="Gradient variance at fixed parameters")
    bars.grid(alpha=0.3, axis="y")
    bars.legend()
    figure.suptitle(title)
    return _save(figure, path)


def plot_heads(heads: list[dict], path: str | Path, title: str = "Scale heads") -> Path:
    """Test ELBO per epoch (nats per example) for each scale head (colour) under each estimator (line style)."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    colours = {head: f"C{index}" for index, head in enumerate(dict.fromkeys(row["head"] for row in heads))}
    estimators = list(dict.fromkeys(row["estimator"] for row in heads))
    styles = {name: ("-", "--", ":", "-.")[index % 4] for index, name in enumerate(estimators)}
    for row in heads:
        curve = row["test_elbo_curve"]
        axes.plot(
            range(1, len(curve) + 1),
            curve,
            color=colours[row["head"]],
            linestyle=styles[row["estimator"]],
            label=f"{row['head']}, {row['estimator']}",
        )
    axes.set(xlabel="epoch", ylabel="test ELBO (nats per example, higher is better)", title=title)
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def _band(axes, curves: list[list[float]], colour: str, label: str, style: str = "-") -> None:
    """The mean of ``curves`` (one per seed, cut to the shortest) against the epoch, with a band of +- one standard
    error over seeds where there are two or more."""
    length = min(len(curve) for curve in curves)
    values = np.array([curve[:length] for curve in curves], dtype=float)
    epochs = np.arange(1, length + 1)
    mean = values.mean(axis=0)
    marker = "o" if length < 3 else None  # a curve of one or two epochs would be invisible without
    seeds = f"{len(curves)} seed{'s' if len(curves) > 1 else ''}"
    axes.plot(epochs, mean, style, color=colour, marker=marker, label=f"{label} ({seeds})")
    if len(curves) > 1:
        se = values.std(axis=0, ddof=1) / math.sqrt(len(curves))
        axes.fill_between(epochs, mean - se, mean + se, color=colour, alpha=0.2, linewidth=0)


HEAD_VALUES = {
    "difference": "test ELBO - log_var's, same seed (nats)",
    "test_elbo": "test ELBO (nats per example, higher is better)",
    "inactive_scale": "mean posterior std of the inactive dims",
    "least_used_scale": "mean posterior std, least-used 1/5 of dims",
}


def least_used_scale_curve(row: dict) -> list[float] | None:
    """The mean posterior standard deviation per epoch of the ``z_dim // 5`` (at least 1) dimensions with the smallest
    KL after the last epoch; ``None`` without per-dimension records."""
    if not row.get("kl_per_dim") or not row.get("scale_curve"):
        return None
    count = max(1, row["z_dim"] // 5)
    least = sorted(range(row["z_dim"]), key=lambda dim: row["kl_per_dim"][dim])[:count]
    return [sum(epoch[dim] for dim in least) / count for epoch in row["scale_curve"]]


def plot_head_curves(heads: list[dict], path: str | Path, title: str = "Scale heads", value: str = "difference"):
    """One panel per (estimator, optimizer, lr, z_dim) of the heads study's runs, one line per (head, scale-step
    factor), the mean over seeds with a +- one standard error band. ``value``: ``difference`` (each run's test ELBO
    minus that of ``log_var`` at factor 1 with the same seed, where the panel has it; raw test ELBO otherwise),
    ``test_elbo``, ``inactive_scale`` (the mean posterior standard deviation of the dimensions that end with
    KL < 0.01 nats, per epoch; runs with none are left out) or ``least_used_scale`` (the same for the fifth of the
    dimensions with the smallest final KL, :func:`least_used_scale_curve`)."""
    from ppl_vae.lab.heads_study import CELL_KEYS, cell_name, run_label

    cells = list(dict.fromkeys(tuple(row[key] for key in CELL_KEYS) for row in heads))
    labels = list(dict.fromkeys(run_label(row) for row in heads))
    colours = {label: f"C{index % 10}" for index, label in enumerate(labels)}
    columns = min(len(cells), 3)
    rows_of_panels = math.ceil(len(cells) / columns)
    figure, panels = plt.subplots(
        rows_of_panels, columns, figsize=(4.6 * columns + 0.6, 3.8 * rows_of_panels + 0.4), squeeze=False
    )
    for axes, cell in zip(panels.flat, cells, strict=False):
        rows = [row for row in heads if tuple(row[key] for key in CELL_KEYS) == cell]
        base = {row["seed"]: row for row in rows if row["head"] == "log_var" and row["scale_lr_factor"] == 1}
        shown = value if value != "difference" or base else "test_elbo"
        for label in labels:
            members = [row for row in rows if run_label(row) == label]
            if shown == "difference":
                members = [row for row in members if row["seed"] in base]
                curves = [
                    [a - b for a, b in zip(row["test_elbo_curve"], base[row["seed"]]["test_elbo_curve"], strict=False)]
                    for row in members
                ]
            elif shown == "inactive_scale":
                curves = [row["inactive_scale_curve"] for row in members if row.get("inactive_scale_curve")]
            elif shown == "least_used_scale":
                curves = [curve for curve in map(least_used_scale_curve, members) if curve]
            else:
                curves = [row["test_elbo_curve"] for row in members]
            if curves:
                style = "--" if label == "log_var" else "-"
                _band(axes, curves, "black" if label == "log_var" else colours[label], label, style)
        axes.set(xlabel="epoch", ylabel=HEAD_VALUES[shown], title=cell_name(rows[0]))
        axes.title.set_fontsize("medium")
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="x-small")
    for axes in list(panels.flat)[len(cells) :]:
        axes.set_visible(False)
    figure.suptitle(title)
    return _save(figure, path)


def plot_head_lr(heads: list[dict], path: str | Path, title: str = "Scale heads over learning rates") -> Path:
    """The last epoch's test ELBO (mean +- standard error over seeds) against the learning rate, one line per (head,
    scale-step factor), one panel per (estimator, optimizer, z_dim)."""
    from ppl_vae.compare import mean_and_se
    from ppl_vae.lab.heads_study import run_label

    cells = list(dict.fromkeys((row["estimator"], row["optimizer"], row["z_dim"]) for row in heads))
    labels = list(dict.fromkeys(run_label(row) for row in heads))
    figure, panels = plt.subplots(1, len(cells), figsize=(5.2 * len(cells) + 0.6, 4.2), squeeze=False)
    for axes, cell in zip(panels.flat, cells, strict=True):
        for index, label in enumerate(labels):
            members = [row for row in heads if (row["estimator"], row["optimizer"], row["z_dim"]) == cell]
            members = [row for row in members if run_label(row) == label]
            rates = sorted({row["lr"] for row in members})
            if not rates:
                continue
            points = [mean_and_se([row["test_elbo_curve"][-1] for row in members if row["lr"] == lr]) for lr in rates]
            errors = [se or 0.0 for _, se in points]
            axes.errorbar(
                rates,
                [mean for mean, _ in points],
                yerr=errors,
                marker="o",
                capsize=3,
                color="black" if label == "log_var" else f"C{index % 10}",
                label=label,
            )
        axes.set_xscale("log")
        epochs = min(len(row["test_elbo_curve"]) for row in heads)
        axes.set(
            xlabel="learning rate",
            ylabel=f"test ELBO after epoch {epochs} (nats per example)",
            title=f"{cell[0]}, {cell[1]}, z_dim {cell[2]}",
        )
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    figure.suptitle(title)
    return _save(figure, path)


def plot_curve_overlay(curves: dict[str, tuple[str, list[int], list[float]]], path: str | Path) -> Path:
    """One line per run: ``{name: (key, epochs, values)}`` with ``key`` ``val_elbo`` or ``test_elbo``, the
    per-epoch held-out ELBO in nats per example (higher is better), overlaid on the same axes."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    keys = sorted({key for key, _, _ in curves.values()})
    colors = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20")
    for number, (name, (key, epochs, values)) in enumerate(curves.items()):
        label = name if len(keys) == 1 else f"{name} ({key})"
        style = ("-", "--", ":")[number // 20 % 3]  # 20 colours, then the same colours dashed
        color = colors(number % 20)
        axes.plot(epochs, values, style, color=color, marker="o", markersize=2, linewidth=1.2, label=label)
    held_out = " / ".join({"val_elbo": "validation", "test_elbo": "test"}[key] for key in keys)
    axes.set(
        xlabel="epoch",
        ylabel=f"{held_out} ELBO (nats per example, higher is better)",
        title=f"{held_out.capitalize()} ELBO per epoch",
    )
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", ncol=2 if len(curves) > 8 else 1)
    return _save(figure, path)
