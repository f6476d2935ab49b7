"""Named parts: a registry maps a name (the CLI flag value) to a class or function.

Example::

    LIKELIHOODS = Registry("likelihood")

    @LIKELIHOODS.register("bernoulli")
    class BernoulliLikelihood: ...

    LIKELIHOODS.get("bernoulli")   # the class
    LIKELIHOODS.get("gauss")       # InputError: unknown likelihood 'gauss': expected one of bernoulli
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ppl_vae.errors import InputError

T = TypeVar("T")


class Registry(dict):
    """A ``dict`` from name to part that says which names exist when a lookup fails."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")`` adds the decorated class or function under ``name``."""

        def add(part: T) -> T:
            if name in self:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self[name] = part
            return part

        return add

    def get(self, name: str):  # noqa: D401 - dict.get with a clear error instead of None
        """The part registered under ``name``; an :class:`InputError` listing the valid names otherwise."""
        if name not in self:
            raise InputError(f"unknown {self.what} {name!r}: expected one of {', '.join(sorted(self))}")
        return self[name]
