"""Per-example test values of a run folder, for paired comparisons: ``test_values.npz``.

Two runs evaluated on the same test examples can be compared example by example: the difference of their per-example
values ``d_i = a_i - b_i`` has the standard error ``std(d) / sqrt(N)``, far smaller than the two runs' own standard
errors when the examples' difficulty dominates both (see :mod:`ppl_vae.compare`). The file holds, in nats per example:

    elbo             (N,) float64  the test ELBO of every test example (``metrics.json``'s ``test_elbo`` is its mean)
    log_likelihood   (N,) float64  the IWAE estimate of log p(x) (or log p(x | y)) of every test example
    test_set         ()   str      a fingerprint of the observed test set (the binarized images, and the labels where
                                   the program takes them): values are paired only between equal fingerprints

``train_run`` and ``evaluate_run`` write it (``evaluate`` with a report takes log p(x) from the report's draws).
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import torch

from ppl_vae.checkpoint import atomic_write
from ppl_vae.errors import InputError

TEST_VALUES_FILE = "test_values.npz"
FINGERPRINT_KEY = "test_set"


def observed_digest(x: torch.Tensor, y: torch.Tensor | None = None) -> str:
    """A short hex digest of the observed test set ``x`` ``(N, ...)`` (as float32) and its labels ``y`` ``(N,)``."""
    digest = hashlib.sha256(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    if y is not None:
        digest.update(y.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def save_test_values(run_dir: str | Path, fingerprint: str, **values: torch.Tensor) -> None:
    """Write ``values`` (name -> ``(N,)`` tensor, nats per example) into ``run_dir/test_values.npz``, atomically,
    keeping the file's other arrays if they were computed on the same test set (``fingerprint``)."""
    stored = load_test_values(run_dir) if (Path(run_dir) / TEST_VALUES_FILE).is_file() else {}
    if stored.get(FINGERPRINT_KEY) != fingerprint:
        stored = {}
    stored.update({name: value.detach().to("cpu", torch.float64).numpy() for name, value in values.items()})
    stored[FINGERPRINT_KEY] = np.array(fingerprint)
    atomic_write(Path(run_dir) / TEST_VALUES_FILE, lambda file: np.savez(file, **stored))


def load_test_values(run_dir: str | Path) -> dict:
    """The arrays of ``run_dir/test_values.npz`` (``test_set`` as a ``str``); an :class:`InputError` for a file that
    does not read."""
    path = Path(run_dir) / TEST_VALUES_FILE
    if path.is_file() and not zipfile.is_zipfile(path):
        raise InputError(f"{str(path)!r} is not an npz file (damaged?): remove it and run 'ppl-vae evaluate' again")
    try:
        with np.load(path, allow_pickle=False) as file:
            values = {name: file[name] for name in file.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise InputError(f"cannot read {str(path)!r}: {error}") from None
    if FINGERPRINT_KEY in values:
        values[FINGERPRINT_KEY] = str(values[FINGERPRINT_KEY])
    return values
