"""Data sets as in-memory tensors, binarization, and index minibatches.

Usage::

    from ppl_vae.data import binarize, binarize_fixed, load_dataset, minibatches

    data = load_dataset("digits")                      # or "mnist", "fashion-mnist", "kmnist", "path/to/file.npz"
    x_test = binarize_fixed(data.x_test, seed=0)       # test images binarized once, with a fixed seed
    generator = torch.Generator().manual_seed(0)
    for index in minibatches(len(data.x_train), 128, generator):
        x = binarize(data.x_train[index], generator)   # (batch, data.x_dim), fresh draw each epoch

Every data set is a :class:`Dataset`: images flattened to ``(N, D)`` float32 in ``[0, 1]`` and labels ``(N,)`` int64
(or ``None``), on the CPU, with ``image_shape == (C, H, W)`` and ``C * H * W == D``.

- ``digits`` (the default; no network): scikit-learn's bundled 8x8 hand-written digits, grey levels 0..16 scaled by
  1/16. 1,497 train and 300 test images (a fixed stratified split), ``D = 64``, ``image_shape = (1, 8, 8)``, 10 classes.
- ``mnist``, ``fashion-mnist``, ``kmnist``: torchvision's MNIST, FashionMNIST and KMNIST, grey levels 0..255 scaled
  by 1/255. 60,000 train and 10,000 test images, ``D = 784``, ``image_shape = (1, 28, 28)``, 10 classes. Read from
  ``root`` (default ``~/.cache/ppl_vae/data``); ``download=True`` fetches missing files.
- a path ending in ``.npz``: arrays ``x_train`` and ``x_test`` (uint8 0..255 or floats in [0, 1]) shaped
  ``(N, D)``, ``(N, H, W)`` or ``(N, C, H, W)``, and optionally integer labels ``y_train``, ``y_test`` shaped ``(N,)``.

A new data set is one loader ``(root, download) -> Dataset`` registered with :func:`register_dataset`.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ppl_vae.errors import InputError
from ppl_vae.registry import Registry

__all__ = [
    "DATASETS",
    "DEFAULT_ROOT",
    "Dataset",
    "binarize",
    "binarize_fixed",
    "load_dataset",
    "minibatches",
    "register_dataset",
    "validate_images",
    "split_indices",
    "validation_split",
]

DEFAULT_ROOT = Path.home() / ".cache" / "ppl_vae" / "data"
"""Where downloadable data sets live when no ``root`` is given."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set held in memory.

    Attributes:
        name: the registry name, or the .npz path.
        x_train: ``(N_train, D)`` float32 in [0, 1].
        x_test: ``(N_test, D)`` float32 in [0, 1].
        y_train: ``(N_train,)`` int64 class labels, or ``None``.
        y_test: ``(N_test,)`` int64 class labels, or ``None``.
        image_shape: ``(C, H, W)`` with ``C * H * W == D``; ``x.reshape(-1, *image_shape)`` gives images.
    """

    name: str
    x_train: torch.Tensor
    x_test: torch.Tensor
    y_train: torch.Tensor | None
    y_test: torch.Tensor | None
    image_shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        dim = math.prod(self.image_shape)
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.shape[1:] != (dim,):
                raise InputError(
                    f"{self.name}: x_{split} has shape {tuple(x.shape)}: expected (N, {dim}) for image_shape "
                    f"{self.image_shape}"
                )
            if y is not None and y.shape != x.shape[:1]:
                raise InputError(
                    f"{self.name}: y_{split} has shape {tuple(y.shape)}: expected ({len(x)},), one label per example"
                )

    @property
    def x_dim(self) -> int:
        """``D``, the number of values per flattened image."""
        return self.x_train.shape[1]

    @property
    def num_classes(self) -> int:
        """The largest label plus one over train and test; 0 when there are no labels."""
        labels = [y for y in (self.y_train, self.y_test) if y is not None and y.numel() > 0]
        return max(int(y.max()) for y in labels) + 1 if labels else 0


Loader = Callable[[Path | None, bool], Dataset]

DATASETS = Registry("data set")
"""The registry: name -> loader ``(root, download) -> Dataset``."""


def split_indices(count: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(validation, rest)``: sorted indices into ``count`` training examples, ``round(fraction * count)`` of them (at
    least one, and one left) held out by a permutation drawn from ``torch.Generator().manual_seed(seed)``; with
    ``fraction`` 0, no validation and every index in ``rest``. What :func:`validation_split` cuts."""
    if not fraction:
        return torch.arange(0), torch.arange(count)
    held = min(count - 1, max(1, round(fraction * count)))
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return order[:held].sort().values, order[held:].sort().values


def validation_split(data: Dataset, fraction: float, seed: int) -> Dataset:
    """``data`` with ``round(fraction * N_train)`` of its training examples (at least one, and one left to train on)
    held out: the result's ``x_train``/``y_train`` are the rest, its ``x_test``/``y_test`` the validation set, so
    that anything evaluating "the test part" of it evaluates on the validation set. The examples are chosen by a
    permutation drawn from ``torch.Generator().manual_seed(seed)`` (the same seed, the same split; the global RNG is
    not touched), and kept in their original order. The real test set is not part of the result."""
    count = data.x_train.shape[0]
    if count < 2:
        raise InputError(f"{data.name}: {count} training example cannot be split into training and validation")
    validation, rest = split_indices(count, fraction, seed)

    def part(y, index):
        return None if y is None else y[index]

    return Dataset(
        name=data.name,
        x_train=data.x_train[rest],
        x_test=data.x_train[validation],
        y_train=part(data.y_train, rest),
        y_test=part(data.y_train, validation),
        image_shape=data.image_shape,
    )


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Decorator that adds a loader ``(root, download) -> Dataset`` to :data:`DATASETS` under ``name``."""
    return DATASETS.register(name)


def load_dataset(name: str, root: str | Path | None = None, download: bool = False) -> Dataset:
    """Load a registered data set by name, or an .npz file by path.

    Arguments:
        name: a key of :data:`DATASETS`, or a path ending in ``.npz``.
        root: folder for downloadable data sets (default :data:`DEFAULT_ROOT`); unused for .npz files.
        download: fetch missing files (torchvision data sets only).

    Returns:
        a :class:`Dataset` on the CPU.
    """
    if name in DATASETS:
        return DATASETS[name](None if root is None else Path(root).expanduser(), download)
    if name.endswith(".npz"):
        return _load_npz(Path(name).expanduser())
    raise InputError(
        f"unknown data set {name!r}: expected one of {', '.join(sorted(DATASETS))}, or a path to an .npz file"
    )


def validate_images(x: torch.Tensor | np.ndarray, what: str) -> torch.Tensor:
    """Check flattened images and return them as float32.

    Arguments:
        x: ``(N, D)`` floating-point values in [0, 1] (a tensor or anything ``torch.as_tensor`` takes).
        what: how to name ``x`` in error messages, e.g. ``"mnist x_train"``.

    Returns:
        ``x`` as a float32 tensor of shape ``(N, D)`` on the same device.
    """
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        raise InputError(f"{what} has dtype {x.dtype}: expected floating-point values in [0, 1]")
    if x.ndim != 2 or x.numel() == 0:
        raise InputError(f"{what} has shape {tuple(x.shape)}: expected a non-empty 2-D (num_examples, x_dim) array")
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise InputError(f"{what} has {bad} NaN or infinite values: expected values in [0, 1]")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 1:
        raise InputError(f"{what} has values from min {low:g} to max {high:g}: expected values in [0, 1]")
    return x.to(torch.float32)


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One Bernoulli draw per grey level: each value becomes 1.0 with probability ``x`` and 0.0 otherwise.

    Arguments:
        x: values in [0, 1], any shape, e.g. ``(batch, D)``.
        generator: a ``torch.Generator`` on ``x``'s device, or ``None`` for torch's global one.

    Returns:
        0.0/1.0 values with the shape, dtype and device of ``x``.
    """
    return torch.bernoulli(x, generator=generator)


def binarize_fixed(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """:func:`binarize` with a fresh generator seeded with ``seed``: the same ``x`` and seed give the same images."""
    return binarize(x, torch.Generator(device=x.device).manual_seed(seed))


def minibatches(
    num_examples: int, batch_size: int, generator: torch.Generator | None, device: torch.device | str | None = None
) -> Iterator[torch.Tensor]:
    """Split ``0..num_examples-1`` into index batches, for slicing in-memory tensors (``x[index]``).

    Arguments:
        num_examples: ``N``.
        batch_size: at most this many indices per batch; the last batch may be smaller.
        generator: shuffle with ``torch.randperm`` drawn from this generator; ``None`` keeps the order 0..N-1.
        device: where the index tensors live (the permutation is drawn on the generator's device, then moved).

    Yields:
        int64 tensors of shape ``(batch_size,)`` (the last one possibly shorter) that together hold every index once.
    """
    if batch_size < 1:
        raise InputError(f"batch_size {batch_size}: expected an integer >= 1")
    if num_examples < 0:
        raise InputError(f"num_examples {num_examples}: expected an integer >= 0")
    if generator is None:
        order = torch.arange(num_examples, device=device)
    else:
        order = torch.randperm(num_examples, generator=generator, device=generator.device).to(device)
    for start in range(0, num_examples, batch_size):
        yield order[start : start + batch_size]


@register_dataset("digits")
def _load_digits(root: Path | None, download: bool) -> Dataset:
    """scikit-learn's bundled 8x8 digits (no files, no network): 1,497 train and 300 test images, D = 64."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data / 16, digits.target, test_size=300, random_state=0, stratify=digits.target
    )
    return Dataset(
        name="digits",
        x_train=validate_images(x_train, "digits x_train"),
        x_test=validate_images(x_test, "digits x_test"),
        y_train=torch.as_tensor(y_train, dtype=torch.int64),
        y_test=torch.as_tensor(y_test, dtype=torch.int64),
        image_shape=(1, 8, 8),
    )


def _torchvision_loader(name: str, class_name: str) -> Loader:
    """A loader for a torchvision MNIST-like data set: 28x28 uint8 images in ``<root>/<class_name>/raw``, D = 784."""

    def load(root: Path | None, download: bool) -> Dataset:
        import torchvision.datasets

        root = DEFAULT_ROOT if root is None else root
        source = getattr(torchvision.datasets, class_name)
        try:
            train, test = [source(root, train=is_train, download=download) for is_train in (True, False)]
        except RuntimeError as err:
            if str(err).startswith("Error downloading"):  # torchvision tried every mirror: offline, or blocked
                reasons = [line for line in str(err).splitlines() if line.startswith("<")]
                reason = f" ({reasons[-1].strip('<>')})" if reasons else ""
                raise InputError(
                    f"could not download data set {name!r} into {root / class_name / 'raw'}{reason}: check the "
                    "network, or copy its IDX files there"
                ) from None
            if "Dataset not found" not in str(err):
                raise
            raise InputError(
                f"data set {name!r} not found in {root / class_name / 'raw'}: expected its IDX files there; "
                "pass --download to fetch them"
            ) from err
        return Dataset(
            name=name,
            x_train=validate_images(train.data.reshape(len(train.data), -1) / 255, f"{name} x_train"),
            x_test=validate_images(test.data.reshape(len(test.data), -1) / 255, f"{name} x_test"),
            y_train=train.targets.to(torch.int64),
            y_test=test.targets.to(torch.int64),
            image_shape=(1, 28, 28),
        )

    return load


for _name, _class_name in (("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST"), ("kmnist", "KMNIST")):
    register_dataset(_name)(_torchvision_loader(_name, _class_name))


def _load_npz(path: Path) -> Dataset:
    """Images ``x_train``, ``x_test`` and optional labels ``y_train``, ``y_test`` from an .npz file."""
    if path.is_dir():
        raise InputError(f"data file {path} is a folder: expected an .npz file")
    if not path.is_file():
        raise InputError(f"data file {path} not found: expected an existing .npz file")
    if path.stat().st_size == 0:
        raise InputError(f"data file {path} is empty (0 bytes): expected an .npz archive written by numpy.savez")
    with open(path, "rb") as file:
        if file.read(4) != b"PK\x03\x04":  # every .npz is a zip archive
            raise InputError(f"data file {path} is not a zip file: expected an .npz archive written by numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = dict(archive)
    except ValueError as err:
        if "allow_pickle" in str(err):  # an array of Python objects inside the archive
            raise InputError(f"{path} holds arrays of Python objects: expected numeric arrays") from None
        raise InputError(f"cannot read {path} ({err}): expected an .npz archive written by numpy.savez") from None
    except (OSError, TypeError, EOFError, zipfile.BadZipFile) as err:
        reason = str(err) or type(err).__name__
        raise InputError(f"cannot read {path} ({reason}): expected an .npz archive written by numpy.savez") from None
    if not {"x_train", "x_test"} <= arrays.keys():
        raise InputError(
            f"{path} holds arrays {sorted(arrays)}: expected x_train and x_test (and optionally y_train, y_test)"
        )
    x_train, x_test = arrays["x_train"], arrays["x_test"]
    image_shape = _image_shape(x_train.shape, f"{path}: x_train")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise InputError(
            f"{path}: x_train has examples of shape {x_train.shape[1:]} but x_test has {x_test.shape[1:]}: "
            "expected the same shape"
        )
    return Dataset(
        name=str(path),
        x_train=_npz_images(x_train, f"{path}: x_train"),
        x_test=_npz_images(x_test, f"{path}: x_test"),
        y_train=_npz_labels(arrays.get("y_train"), f"{path}: y_train"),
        y_test=_npz_labels(arrays.get("y_test"), f"{path}: y_test"),
        image_shape=image_shape,
    )


def _image_shape(shape: tuple[int, ...], what: str) -> tuple[int, int, int]:
    """``(C, H, W)`` for an array of shape ``(N, D)`` (square images when D is a square), ``(N, H, W)`` or
    ``(N, C, H, W)``."""
    if len(shape) == 2:
        side = math.isqrt(shape[1])
        return (1, side, side) if side * side == shape[1] else (1, 1, shape[1])
    if len(shape) in (3, 4):
        return tuple((1,) * (4 - len(shape)) + shape[1:])
    raise InputError(f"{what} has shape {shape}: expected (N, D), (N, H, W) or (N, C, H, W)")


def _npz_images(x: np.ndarray, what: str) -> torch.Tensor:
    """``(N, ...)`` uint8 0..255 or floats in [0, 1] -> ``(N, D)`` float32 in [0, 1]."""
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255)
    elif not np.issubdtype(x.dtype, np.floating):
        found = f", min {x.min()}, max {x.max()}" if x.size and np.issubdtype(x.dtype, np.number) else ""
        raise InputError(f"{what} has dtype {x.dtype}{found}: expected uint8 0..255 or floats in [0, 1]")
    return validate_images(x.reshape(len(x), math.prod(x.shape[1:])), what)


MAX_CLASSES = 10_000
"""Class labels of an .npz file are below this: one-hot labels and per-class figures grow with the number of classes."""


def _npz_labels(y: np.ndarray | None, what: str) -> torch.Tensor | None:
    """``(N,)`` non-negative integer labels -> int64 tensor; ``None`` stays ``None``."""
    if y is None:
        return None
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"{what} has shape {y.shape} and dtype {y.dtype}: expected (N,) integer class labels")
    if y.size and y.min() < 0:
        raise InputError(f"{what} has min {y.min()}: expected class labels >= 0")
    if y.size and y.max() >= MAX_CLASSES:
        raise InputError(f"{what} has max {y.max()}: expected class labels below {MAX_CLASSES}")
    return torch.as_tensor(y, dtype=torch.int64)
