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

``log_scale`` and ``log_var`` are the same family of distributions: ``h_log_var = 2 * h_log_scale`` (the h rows of
the encoder's last linear layer doubled) gives the same Normal, the same samples for the same noise, the same ELBO and
the same gradients for every weight below the head. So ``exp(log_sigma)`` *is* ``exp(0.5 * log_var)``; learning one or
the other changes no value. Only the gradient at the head's output differs: ``dL/dh_log_var = dL/dh_log_scale / 2``
(and so for the h rows' weights). Adam's first steps move each parameter by about ``lr`` whatever the gradient's size,
so under ``log_var`` log-sigma moves half as far per step: ``log_var`` is ``log_scale`` with half the learning rate
on the h rows (with plain SGD, a quarter). ``softplus`` reaches the same scales (above ``floor``) with a different
curvature: ``d scale / d h = sigmoid(h) = 1 - exp(-(scale - floor))``, about ``scale`` for small scales (like
``log_scale``) but at most 1 for large ones, so it grows linearly in ``h`` where the others grow exponentially, and a
step in ``h`` changes log-sigma by about ``1 / scale`` times as much when the scale is large. ``tests/test_heads.py``
checks each of these statements; ``ppl-vae compare-kl --heads`` measures what they do to training.

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
