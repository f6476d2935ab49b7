"""Checks of what a Python caller hands a trained model: a device, images ``x``, codes ``z``, labels ``y``, a count.

Each raises an :class:`~ppl_vae.errors.InputError` with one line naming the value and what was expected, where torch
would raise its own error from deep inside a network (``mat1 and mat2 shapes cannot be multiplied``), or, worse,
return NaN silently (``encode`` of a NaN image).
"""

from __future__ import annotations

from typing import Any

import torch

from ppl_vae.config import require_int
from ppl_vae.errors import InputError

DEVICE_TYPES = ("cpu", "cuda", "mps")
"""The devices a run trains and evaluates on (torch's ``meta`` and the like hold no values)."""


def require_device(device: Any, flag: str = "--device") -> torch.device:
    """``device`` as a ``torch.device`` that this machine has: a name torch parses, of a type in
    :data:`DEVICE_TYPES`, on which a tensor can be made (``cuda`` without a GPU, or ``cuda:3`` on a machine with one,
    are refused)."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"{flag} {device!r} is not a torch device: expected e.g. cpu, cuda, cuda:0") from None
    if parsed.type not in DEVICE_TYPES:
        raise InputError(f"{flag} {str(device)!r}: expected a device of type {', '.join(DEVICE_TYPES)} (e.g. cuda:0)")
    try:
        torch.empty(0, device=parsed)
    except (RuntimeError, AssertionError) as error:  # torch's "not compiled with CUDA", "no NVIDIA driver", ...
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(f"{flag} {str(device)!r} is not available on this machine ({reason}); use cpu") from None
    return parsed


def first_parameter(module: torch.nn.Module) -> torch.Tensor | None:
    """The first parameter of ``module`` (its dtype and device are the model's), ``None`` if it has none."""
    return next(module.parameters(), None)


def check_tensor(
    value: Any,
    name: str,
    what: str,
    width: int | None = None,
    like: torch.Tensor | None = None,
    finite: bool = True,
) -> torch.Tensor:
    """``value`` must be a floating tensor ``(N, width)`` with ``N >= 1`` (any width when ``width`` is ``None``), of
    ``like``'s dtype (the model's parameters'), and with ``finite`` only finite values. ``name`` (``x``, ``z``) and
    ``what`` (the function) are for the message."""
    if not isinstance(value, torch.Tensor):
        raise InputError(f"{what}: {name} must be a torch tensor of shape (N, D), got {type(value).__name__}")
    if value.dim() != 2 or value.shape[0] == 0:
        raise InputError(f"{what}: {name} must have shape (N, D) with N >= 1, got {tuple(value.shape)}")
    if width is not None and value.shape[1] != width:
        raise InputError(f"{what}: {name} has {value.shape[1]} values per example, the model expects {width}")
    if not value.is_floating_point():
        raise InputError(
            f"{what}: {name} has dtype {value.dtype}, expected floating point values (e.g. {name}.float())"
        )
    if like is not None and value.dtype != like.dtype:
        raise InputError(f"{what}: {name} has dtype {value.dtype}, the model's parameters {like.dtype}: convert it")
    if finite and not bool(torch.isfinite(value).all()):
        raise InputError(f"{what}: {name} holds NaN or infinite values")
    return value


def require_classes(y: torch.Tensor, num_classes: int, flag: str) -> torch.Tensor:
    """Labels ``y`` must be integers from 0 to ``num_classes - 1``."""
    if not isinstance(y, torch.Tensor):
        raise InputError(f"{flag} must be a tensor of class labels from 0 to {num_classes - 1}, got {y!r}")
    if y.is_floating_point() or y.dtype == torch.bool or not bool(((y >= 0) & (y < num_classes)).all()):
        shown = y.unique()[:10].tolist()
        raise InputError(f"{flag} {shown}: expected class labels from 0 to {num_classes - 1}")
    return y.to(torch.int64)


def require_binary(x: torch.Tensor, what: str) -> None:
    """``x`` must hold only 0 and 1: what a Bernoulli likelihood scores."""
    if not bool(((x == 0) | (x == 1)).all()):
        other = x[(x != 0) & (x != 1)][0].item()
        raise InputError(
            f"{what}: x holds values other than 0 and 1 (e.g. {other:g}) and the model's likelihood is binary: "
            "binarize it first (ppl_vae.observed_test_set(x, binary=True))"
        )


def require_count(value: Any, name: str) -> int:
    """A count from Python (``num_samples``, ``k``): an integer >= 1, not a bool."""
    require_int(value, name)
    return value
