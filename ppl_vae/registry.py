"""Named parts: a registry maps a name (the CLI flag value) to a class or function, and to what that part requires.

A part states what it needs of the configuration that names it (like ``torch.distributions``' ``arg_constraints``):
a class by a ``requires(config)`` classmethod, any other part by ``register(name, requires=...)``. A requirement
raises an :class:`~ppl_vae.errors.InputError` naming the value and what the part expects; the configuration schema
(:mod:`ppl_vae.config`) knows no part by name. :mod:`ppl_vae.parts` runs the lookups and the requirements where a
configuration is turned into things.

Example::

    LIKELIHOODS = Registry("likelihood")

    @LIKELIHOODS.register("bernoulli")
    class BernoulliLikelihood: ...

    @LIKELIHOODS.register("gaussian")
    class GaussianLikelihood:
        @classmethod
        def requires(cls, config): ...            # e.g. refuses config.pixel_scale <= 1e-3

    LIKELIHOODS.get("bernoulli")                  # the class
    LIKELIHOODS.get("gauss", "--likelihood")      # InputError: --likelihood: unknown likelihood 'gauss': expected
                                                  # one of bernoulli, gaussian
    LIKELIHOODS.check("gaussian", model_config, "--likelihood")   # the lookup, then GaussianLikelihood.requires
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ppl_vae.errors import InputError

T = TypeVar("T")

Requirement = Callable[[Any], None]
"""``requires(config)``: returns nothing when the part can be built from ``config``, else raises an InputError."""


class Registry(dict):
    """A ``dict`` from name to part that says which names exist when a lookup fails, and holds each part's
    requirement (``requirements[name]``, for the parts that have one)."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what
        self.requirements: dict[str, Requirement] = {}

    def register(self, name: str, requires: Requirement | None = None) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")`` adds the decorated class or function under ``name``.

        ``requires(config)`` is what the part needs of the configuration; by default the part's own ``requires``
        attribute where it has one (a classmethod of a class).
        """

        def add(part: T) -> T:
            if name in self:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self[name] = part
            requirement = requires if requires is not None else getattr(part, "requires", None)
            if requirement is not None:
                self.requirements[name] = requirement
            return part

        return add

    def get(self, name: str, flag: str | None = None):  # noqa: D401 - dict.get with a clear error instead of None
        """The part registered under ``name``; otherwise an :class:`InputError` listing the valid names (after
        ``"<flag>: "`` when a ``flag`` is given, e.g. ``"--guide"``)."""
        if not isinstance(name, str) or name not in self:
            prefix = f"{flag}: " if flag else ""
            raise InputError(f"{prefix}unknown {self.what} {name!r}: expected one of {', '.join(sorted(self))}")
        return self[name]

    def check(self, name: str, config: Any, flag: str | None = None) -> None:
        """Refuse ``name`` unless it is registered (:meth:`get`) and its part's requirement accepts ``config``."""
        self.get(name, flag)
        requirement = self.requirements.get(name)
        if requirement is not None:
            requirement(config)
