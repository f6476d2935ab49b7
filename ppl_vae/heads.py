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

from ppl_vae.errors import InputError
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


@dataclass(frozen=True)
class HeadLayer:
    """Where a program's Normal guide computes its standard deviation, for the heads study
    (``ppl-vae compare-kl --heads``, :mod:`ppl_vae.lab.heads_study`).

    The guide computes ``scale = HEADS[head].scale(h)`` (:mod:`ppl_vae.heads`), ``h`` being the rows
    ``rows[0]:rows[1]`` of the output of the ``nn.Linear`` called ``layer`` in the program's modules. The study
    rebuilds the program once per head with ``rebuild(head)``, loads the original weights into it and rewrites those
    rows so that every head starts from the same q(z | x). The pattern for a run folder: ``build(spec)`` reads its head
    from ``spec.args["scale_param"]`` and passes ``rebuild=lambda head: build(dataclasses.replace(spec,
    args={**spec.args, "scale_param": head}))`` (``tests/user_programs.py``: ``build_vae``).

    Attributes:
        head: the head this program uses, a name in :data:`HEADS` (``log_scale``, ``log_var``, ``softplus``).
        layer: the dotted name of that ``nn.Linear`` in the program's modules (``modules.get_submodule``), e.g.
            ``"encoder.2"``.
        rows: ``(start, stop)``: the rows of the layer's output that are ``h``, e.g. ``(z_dim, 2 * z_dim)``.
        rebuild: ``head -> UserProgram`` (:class:`ppl_vae.programs.UserProgram`): the same program (the same modules
            under the same names) with ``head`` (the built-in VAE's, which :func:`ppl_vae.lab.head_layer` makes from
            its config, returns a ``VAE``).
    """

    head: str
    layer: str
    rows: tuple[int, int]
    rebuild: Callable[[str], object]

    def __post_init__(self):
        if self.head not in HEADS:
            raise InputError(f"HeadLayer: head {self.head!r} is not a scale head: expected one of {sorted(HEADS)}")
        rows = tuple(self.rows)
        if len(rows) != 2 or not all(isinstance(row, int) for row in rows) or not 0 <= rows[0] < rows[1]:
            raise InputError(f"HeadLayer: rows must be (start, stop) with 0 <= start < stop, got {self.rows!r}")
        object.__setattr__(self, "rows", rows)
        if not callable(self.rebuild):
            raise InputError(f"HeadLayer: rebuild must be a callable head -> UserProgram, got {self.rebuild!r}")
