"""Figures saved as PNG, drawn from plain arrays with matplotlib's Agg backend (no screen needed).

Import this module lazily (only where a figure is made): matplotlib is slow to import.

Example::

    plot_training_curves(history, "runs/x/elbo.png")
    plot_image_grid(vae.sample(64), (1, 8, 8), "runs/x/samples.png", "Samples from the prior")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


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
    """Train and test ELBO (nats per example) against the epoch; the test curve with +-2 standard errors."""
    figure, axes = plt.subplots(figsize=(6, 4))
    epochs = [record["epoch"] for record in history]
    axes.plot(epochs, [record["train_elbo"] for record in history], label="train ELBO (training objective)")
    tested = [record for record in history if "test_elbo" in record]
    test_epochs = np.array([record["epoch"] for record in tested])
    test = np.array([record["test_elbo"] for record in tested])
    se = np.array([record["test_elbo_se"] for record in tested])
    axes.plot(test_epochs, test, marker="o", markersize=3, label="test ELBO")
    axes.fill_between(test_epochs, test - 2 * se, test + 2 * se, alpha=0.25, label="test ELBO +-2 SE")
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
    originals, reconstructions, image_shape: Sequence[int], path: str | Path, columns: int = 8
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
    np.atleast_1d(axes)[0].set_title("Test images (odd rows) above their reconstructions (even rows)")
    return _save(figure, path)


def plot_latent_scatter(z_loc, labels, path: str | Path, of: str = "E_q[z | x]") -> Path:
    """Latent means ``(N, z_dim)`` coloured by label: the two dimensions themselves when ``z_dim == 2``, the first two
    principal components otherwise (a 1-D code is plotted against zero)."""
    z = np.asarray(z_loc.detach().cpu() if isinstance(z_loc, torch.Tensor) else z_loc, dtype=np.float64)
    if z.shape[1] == 1:
        points, axis_names = np.column_stack([z[:, 0], np.zeros(len(z))]), ("z[0]", "")
    elif z.shape[1] == 2:
        points, axis_names = z, ("z[0]", "z[1]")
    else:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2).fit(z)
        points = pca.transform(z)
        share = pca.explained_variance_ratio_
        axis_names = (f"PC 1 ({share[0]:.0%} of variance)", f"PC 2 ({share[1]:.0%} of variance)")
    figure, axes = plt.subplots(figsize=(6, 5))
    colours = None if labels is None else np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    scatter = axes.scatter(points[:, 0], points[:, 1], c=colours, cmap="tab10", s=8, alpha=0.8)
    if colours is not None:
        figure.colorbar(scatter, ax=axes, label="label")
    projection = "" if z.shape[1] <= 2 else f", PCA of {z.shape[1]} dimensions"
    axes.set(xlabel=axis_names[0], ylabel=axis_names[1], title=f"Latent means {of} of test images{projection}")
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
