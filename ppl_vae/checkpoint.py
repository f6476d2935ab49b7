"""Checkpoints that are never half-written and never unpickle arbitrary objects.

A run folder holds ``config.json`` (the :class:`~ppl_vae.config.RunConfig`, plain JSON) and ``checkpoint.pt`` (tensors
and plain containers only: the model's ``state_dict``, the optimizer state, RNG states, the history). Files are
written to a temporary name in the same folder, flushed to disk and renamed over the old one (``os.replace`` is
atomic), so an interrupt or a full disk leaves the previous checkpoint intact. Loading uses
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ppl_vae.errors import InputError

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.json"


def file_mode() -> int:
    """The permissions of a new file in a run folder: ``0o666`` less the process's umask (``0o644`` under the usual
    umask ``022``), as ``open()`` and matplotlib give the figures, so every file of a run folder has the same ones."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, rename it to ``path`` and fsync the folder.

    Until the rename, ``path`` holds its previous contents (or does not exist): an exception, a signal, a full disk or
    a killed process part-way through leaves it as it was, and the temporary file is removed (except after SIGKILL,
    when a hidden ``.NAME.*.tmp`` may stay behind; nothing reads it). The file gets :func:`file_mode`'s permissions.
    A failing write (``OSError``: full disk, read-only folder) is an :class:`InputError` naming the file and the
    reason.
    """
    path = Path(path)
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise InputError(f"cannot write {str(path)!r}: {error.strerror or error}") from None
    try:
        os.fchmod(handle, file_mode())
        with os.fdopen(handle, mode) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _fsync_folder(path.parent)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        reason = error.strerror or str(error)
        raise InputError(f"cannot write {str(path)!r}: {reason}; its previous contents are kept") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _fsync_folder(folder: Path) -> None:
    """Flush the folder's entry for a renamed file to disk (where the platform allows opening a folder)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def save_json(path: str | Path, value: Any) -> None:
    """Write ``value`` as indented JSON, atomically. A number that is not finite (the standard error of one example's
    estimate) is written as ``null``: the file stays valid JSON."""
    text = json.dumps(_finite_or_null(value), indent=2, allow_nan=False)
    atomic_write(path, lambda file: file.write(text + "\n"), mode="w")


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    return value


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) with ``torch.save``, atomically."""
    atomic_write(path, lambda file: torch.save(state, file))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``weights_only=True``: no code from the file runs. An empty, truncated, foreign or
    pickled-objects file is an :class:`InputError` of one line naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no checkpoint at {str(path)!r}: expected a run folder written by 'ppl-vae train'")
    if path.stat().st_size == 0:
        raise InputError(f"checkpoint {str(path)!r} is empty (0 bytes): expected a file written by 'ppl-vae train'")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:  # weights-only loading refused an object: name it, never suggest more
        found = re.search(r"unsupported global ([\w.]+)", str(error), flags=re.IGNORECASE)
        detail = f" (it names {found.group(1)})" if found else ""
        raise InputError(
            f"checkpoint {str(path)!r} holds objects other than tensors and plain containers{detail}: refused, "
            "weights-only loading runs no code from a file"
        ) from None
    except Exception as error:  # a truncated or foreign file: say which file, keep the first sentence of the reason
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
        reason = f"{type(error).__name__}: {first.split('. ')[0].rstrip('.')}" if first else type(error).__name__
        raise InputError(
            f"cannot read checkpoint {str(path)!r} ({reason}): truncated, or not a file written by 'ppl-vae train'"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise InputError(
            f"checkpoint {str(path)!r} has no model weights (found {type(state).__name__}"
            + (f" with keys {sorted(map(str, state))[:8]}" if isinstance(state, dict) else "")
            + "): expected a file written by 'ppl-vae train'"
        )
    return state


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
