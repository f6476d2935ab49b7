"""Checkpoints that are never half-written and never unpickle arbitrary objects.

A run folder holds ``config.json`` (the :class:`~ppl_vae.config.RunConfig`, plain JSON) and ``checkpoint.pt`` (tensors
and plain containers only: the model's ``state_dict``, the optimizer state, RNG states, the history). Files are
written to a temporary name in the same folder, flushed to disk and renamed over the old one (``os.replace`` is
atomic), so an interrupt or a full disk leaves the previous checkpoint intact. Loading uses
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ppl_vae.errors import InputError

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.json"


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, mode) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_json(path: str | Path, value: Any) -> None:
    """Write ``value`` as indented JSON, atomically."""
    atomic_write(path, lambda file: file.write(json.dumps(value, indent=2) + "\n"), mode="w")


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) with ``torch.save``, atomically."""
    atomic_write(path, lambda file: torch.save(state, file))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``weights_only=True``: no code from the file runs."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no checkpoint at {str(path)!r}: expected a run folder written by 'ppl-vae train'")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which file, keep the reason
        raise InputError(f"cannot read checkpoint {str(path)!r}: {error}") from None


def read_run_folder(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path, after checking it holds a ``config.json``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run folder {str(run_dir)!r} does not exist: expected a folder written by 'ppl-vae train'")
    if not (run_dir / CONFIG_FILE).is_file():
        raise InputError(
            f"run folder {str(run_dir)!r} has no {CONFIG_FILE}: expected a folder written by 'ppl-vae train'"
        )
    return run_dir
