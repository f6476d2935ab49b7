"""Non-finite training steps and diverging runs: found, named, never applied, never reported as a result.

A training step computes the loss and its gradients, then updates the parameters. :func:`require_finite` runs between
the two: a loss or a gradient that is NaN or infinite raises :class:`NonFiniteStep` *before* the update, so the
parameters stay as they were (finite). Pyro's own refusal of a distribution built from non-finite numbers ("Expected
parameter loc ... found invalid values", raised while the programs run) is the same fault, seen earlier:
:func:`is_invalid_values` recognises it. The trainer (:mod:`ppl_vae.train`) then stops, or with ``on_nan="skip"``
drops the step and counts it; :func:`bad_site` names the sample site whose log-density is not finite, found by
tracing the guide and replaying the model on the same minibatch (validation off, RNG left as it was).

A run **diverges** while staying finite when its test ELBO falls far below the untrained model's
(:func:`divergence_threshold`): the trainer stops it with :class:`Diverged`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import pyro
import torch

from ppl_vae.programs import trace_programs


class NonFiniteStep(FloatingPointError):
    """A step whose loss or gradients are not finite; its update was not applied. ``loss`` is the step's loss (a
    float, possibly finite when only a gradient was not), ``reason`` a few words."""

    def __init__(self, loss: float, reason: str):
        super().__init__(reason)
        self.loss = loss
        self.reason = reason


class Diverged(FloatingPointError):
    """Training diverged while staying finite (see :func:`divergence_threshold`); the message says where."""


def require_finite(loss: float, parameters: Iterable[torch.Tensor]) -> None:
    """:class:`NonFiniteStep` unless ``loss`` and every gradient of ``parameters`` are finite: the gradients' norms
    in one fused call and one device sync (a gradient whose norm overflows, beyond about 1e19 in float32, counts as
    not finite too)."""
    if not math.isfinite(loss):
        raise NonFiniteStep(loss, f"the loss is {loss}")
    grads = [p.grad for p in parameters if p.grad is not None]
    if grads and not bool(torch.stack(torch._foreach_norm(grads)).isfinite().all()):
        raise NonFiniteStep(loss, f"the loss is {loss:.6g} but a gradient is not finite")


def is_invalid_values(error: BaseException) -> bool:
    """Whether ``error`` is a distribution's refusal of parameters that are NaN or infinite (torch's and Pyro's
    argument validation: "... found invalid values")."""
    return isinstance(error, ValueError) and "found invalid values" in str(error)


def bad_site(model: Callable, guide: Callable, x: torch.Tensor, *args) -> str | None:
    """The first sample site (guide first, then the model replayed on the guide's draws) whose log-density at its
    value is not finite, as ``"'z' of the guide"``; ``None`` if every site's is finite. Runs the programs once with
    argument validation off, without gradients, leaving the RNG as it was."""
    with pyro.validation_enabled(False):
        traces = trace_programs(model, guide, x, *args)
        for program, trace in zip(("guide", "model"), traces, strict=True):
            for name, site in trace.nodes.items():
                if site["type"] != "sample" or site["value"] is None:
                    continue
                with torch.no_grad():
                    log_prob = site["fn"].log_prob(site["value"])
                if not bool(torch.isfinite(log_prob).all()):
                    return f"{name!r} of the {program}"
    return None


DIVERGENCE_FACTOR = 10.0
"""A run has diverged when its test ELBO is below ``DIVERGENCE_FACTOR`` times the untrained model's (for a negative
one), see :func:`divergence_threshold`."""


def divergence_threshold(untrained_elbo: float) -> float:
    """The test ELBO (nats per example) below which a run counts as diverged: ``untrained - (DIVERGENCE_FACTOR - 1) x
    max(|untrained|, 1)``, ten times as far from 0 as the untrained model's for a negative ELBO (e.g. -44.4 -> -444
    on the digits), and at least nine nats below it.

    Training that works ends above the untrained model's ELBO (the untrained decoder already predicts about 0.5 per
    pixel), though a user's program with a poorly scaled start can fall a few times below it in its first epochs on
    little data (a test program here went from -296 to -1136 in one epoch of 4 steps, then recovered); a run that
    falls below ten times it has broken (a learning rate far too large: ``--scale-param softplus --lr 1e4`` reaches
    about -6e18)."""
    return untrained_elbo - (DIVERGENCE_FACTOR - 1.0) * max(abs(untrained_elbo), 1.0)
