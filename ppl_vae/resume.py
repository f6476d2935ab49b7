"""Resuming a run: exactly, or not at all.

A resumed run continues from its checkpoint with the numbers an uninterrupted run would have had. That holds only if
nothing that changes the numbers changes: the model (or the program), the data set, the objective, the optimizer, the
learning rate and its schedule, the batch size, the seed, β and its warm-up, the per-epoch test ELBO's settings (its
draws come from the same RNG as training's). Those are *fixed* on resume; a change is refused with one line naming each
difference. The rest is *applied*: more epochs, the device, the training path (``fast`` and ``plain`` take the same
updates), what to do on a non-finite step, the data's folder, the final evaluation's samples (and the progress bars,
which are no setting). Each resume is recorded in the checkpoint and in ``metrics.json`` under ``"resumes"``::

    {"epoch": 2, "step": 0, "changes": {"train.epochs": [2, 4], "train.device": ["cpu", "cuda"]}, "world_size": 2}

(``world_size``: the processes that trained from that resume on; the number of processes is no setting, and a run may
resume with another, see :mod:`ppl_vae.sharding`).

The same comparison guards a ``config.json`` edited by hand after training: its fixed fields must still be those its
checkpoint was trained with (stored in the checkpoint under ``"config"``).

An uninterrupted run and a resumed one draw the same numbers because the whole RNG state is saved with every checkpoint
and restored: torch (CPU and CUDA), Python's ``random``, NumPy's
``RandomState`` (all of it: key, position, cached Gaussian) and the trainer's shuffling generator
(:func:`rng_state`, :func:`set_rng_state`), as plain tensors, lists and numbers that load with ``weights_only=True``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from ppl_vae.errors import InputError

APPLIED = frozenset(
    {
        "train.epochs",
        "train.device",
        "train.path",
        "train.on_nan",
        "train.max_nan_skips",
        "data.root",
        "data.download",
        "evaluation.k",
        "evaluation.num_particles",
        "evaluation.memory_mb",
    }
)
"""The config fields (``section.field``) that a resume may change: none of them changes the numbers of training."""

FLAGS = {
    "data.name": "--data",
    "data.root": "--data-root",
    "evaluation.num_particles": "--eval-particles",
    "evaluation.memory_mb": "--eval-memory-mb",
    "model.num_classes": "--conditional (number of classes)",
    "program.path": "--program",
    "program.args": "--program-arg",
    "train.lr_horizon": "lr_horizon (steps of the schedule)",
    "train.lr_factors": "lr_factors",
    "train.latent_sites": "latent_sites",
    "train.eval_particles": "eval_particles (of the per-epoch test ELBO)",
    "model.x_dim": "the data's x_dim",
    "model.image_shape": "the data's image_shape",
    "program.x_dim": "the data's x_dim",
    "program.image_shape": "the data's image_shape",
    "program.num_classes": "the data's classes",
}
"""How a field is named to a person where its name is not its flag (``train.batch_size`` -> ``--batch-size``)."""


def flag_name(key: str) -> str:
    """The flag (or, without one, the setting) of the config field ``key`` (``"train.lr"`` -> ``"--lr"``)."""
    return FLAGS.get(key, "--" + key.partition(".")[2].replace("_", "-"))


def changes(stored: dict, requested: dict, prefix: str = "") -> dict[str, list]:
    """The fields that differ between two configs as nested dicts (``RunConfig``'s JSON), as
    ``{"section.field": [stored, requested]}``; a section present in one only differs as a whole."""
    found = {}
    for key in sorted(set(stored) | set(requested)):
        old, new = stored.get(key), requested.get(key)
        name = f"{prefix}{key}"
        if isinstance(old, dict) and isinstance(new, dict) and not prefix:
            found.update(changes(old, new, prefix=f"{name}."))
        elif old != new:
            found[name] = [old, new]
    return found


def split(stored: dict, requested: dict) -> tuple[dict[str, list], dict[str, list]]:
    """``(fixed, applied)``: the differences of :func:`changes` that a resume refuses, and those it applies."""
    found = changes(stored, requested)
    fixed = {key: value for key, value in found.items() if key not in APPLIED}
    return fixed, {key: value for key, value in found.items() if key in APPLIED}


def describe(fixed: dict[str, list]) -> str:
    """``--lr 0.001 -> 0.01, --z-dim 8 -> 3``: each refused difference, stored value first."""
    return ", ".join(f"{flag_name(key)} {_short(old)} -> {_short(new)}" for key, (old, new) in fixed.items())


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_resume(where: str, stored: dict, requested: dict, *, refused: tuple[str, ...] = ()) -> dict[str, list]:
    """The applied changes between the ``stored`` and ``requested`` configs (nested dicts), or an :class:`InputError`
    naming every fixed one (and the ``refused`` descriptions given by the caller) in one line."""
    fixed, applied = split(stored, requested)
    problems = [describe(fixed)] if fixed else []
    problems += list(refused)
    if problems:
        raise InputError(
            f"cannot resume {where} with other numbers than it was trained with: {', '.join(problems)} "
            f"(a resume may change only {', '.join(sorted({flag_name(key) for key in APPLIED}))}; "
            "start a new run with another --out to change the rest)"
        )
    return applied


def check_epochs(where: str, epochs: int, trained: int) -> None:
    """An :class:`InputError` when ``epochs`` is fewer than the ``trained`` epochs (config.json would claim fewer
    epochs than the weights have had)."""
    if epochs < trained:
        raise InputError(
            f"--epochs {epochs} is fewer than the {trained} epochs {where} has already trained: expected --epochs "
            f">= {trained}"
        )


def rng_state(generator: torch.Generator) -> dict:
    """Every RNG's whole state, as tensors, lists and numbers (loadable with ``weights_only=True``)."""
    name, key, position, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": {
            "name": str(name),
            "key": torch.from_numpy(key.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "generator": generator.get_state(),
    }


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    """Put back what :func:`rng_state` saved. A checkpoint written before NumPy's whole state was saved holds its key
    alone (a list), restored at position 624, as it was then."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"]:
        torch.cuda.set_rng_state_all([value.cpu() for value in state["cuda"]])
    random.setstate(_as_tuple(state["python"]))
    numpy = state["numpy"]
    if isinstance(numpy, dict):
        key = np.asarray(numpy["key"].cpu().numpy(), dtype=np.uint32)
        np.random.set_state((numpy["name"], key, numpy["position"], numpy["has_gauss"], numpy["gauss"]))
    else:
        np.random.set_state(("MT19937", np.array(numpy, dtype=np.uint32), 624, 0, 0.0))
    generator.set_state(state["generator"].cpu() if generator.device.type == "cpu" else state["generator"])


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
