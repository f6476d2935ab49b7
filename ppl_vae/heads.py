"""Scale heads: how the encoder's raw output ``h`` becomes the standard deviation of q(z | x).

The guide is ``q(z | x) = Normal(loc, scale)`` with one ``scale`` per latent dimension. The encoder emits ``loc`` and
an unconstrained ``h``; a head maps ``h`` to ``scale > 0``:

=============  ======================  ====================  =====================================
head           scale                   h from a scale        d scale / d h
=============  ======================  ====================  =====================================
``log_scale``  ``exp(h)``              ``log(scale)``        ``scale``
``log_var``    ``exp(h / 2)``          ``2 log(scale)``      ``scale / 2``
``softplus``   ``softplus(h) + floor`` ``log(expm1(s - f))`` ``sigmoid(h)`` (flat for very negative h)
=============  ======================  ====================  =====================================

``log_scale`` and ``log_var`` are the same family of distributions: ``h_log_var = 2 * h_log_scale`` gives the same
Normal, the same samples for the same noise and the same gradients for every weight below the head. Only the gradient
at the head's output differs, by a factor of 2, and an optimizer such as Adam, whose step size does not scale with the
gradient, therefore moves log-sigma half as far per step under ``log_var``. ``softplus`` reaches the same scales
(above ``floor``) but with a different curvature: it grows linearly for large ``h`` instead of exponentially.

Example::

    head = HEADS.get("log_var")
    scale = head.scale(h)                       # exp(h / 2)
    h_same = convert(h, "log_var", "log_scale")  # h / 2: HEADS["log_scale"].scale(h_same) == scale
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ppl_vae.registry import Registry

SOFTPLUS_FLOOR = 1e-4
"""The softplus head's smallest scale: keeps ``log q`` finite when softplus(h) underflows."""


@dataclass(frozen=True)
class ScaleHead:
    """A parameterization of the guide's standard deviation.

    Attributes:
        name: the registry name, also the value of ``--scale-param``.
        scale: ``h -> scale``, elementwise, any shape; ``scale > 0``.
        inverse: ``scale -> h``, elementwise, so that ``scale(inverse(s)) == s``.
    """

    name: str
    scale: Callable[[torch.Tensor], torch.Tensor]
    inverse: Callable[[torch.Tensor], torch.Tensor]


HEADS = Registry("scale head")


def _add(head: ScaleHead) -> None:
    HEADS.register(head.name)(head)


_add(ScaleHead("log_scale", scale=torch.exp, inverse=torch.log))
_add(ScaleHead("log_var", scale=lambda h: torch.exp(0.5 * h), inverse=lambda s: 2.0 * torch.log(s)))
_add(
    ScaleHead(
        "softplus",
        scale=lambda h: F.softplus(h) + SOFTPLUS_FLOOR,
        inverse=lambda s: torch.log(torch.expm1(s - SOFTPLUS_FLOOR)),
    )
)


def convert(h: torch.Tensor, source: str, target: str) -> torch.Tensor:
    """The raw output under head ``target`` that gives the same scale as ``h`` under head ``source``.

    ``HEADS[target].scale(convert(h, source, target)) == HEADS[source].scale(h)`` (up to rounding; for a ``softplus``
    target the scale must exceed ``SOFTPLUS_FLOOR``).
    """
    return HEADS.get(target).inverse(HEADS.get(source).scale(h))
