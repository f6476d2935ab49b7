"""Your own model and guide in a run folder: ``ppl-vae train --program package.module:build``.

The contract is one function that you write and that ppl_vae imports by its path::

    build(spec: ProgramSpec) -> UserProgram

``spec`` (:class:`~ppl_vae.config.ProgramSpec`, frozen) carries what ``build`` needs to size its networks:
``spec.x_dim`` (pixels per example ``D``), ``spec.image_shape`` (``(C, H, W)``), ``spec.num_classes`` (0 without labels)
and ``spec.args``, the options given as ``--program-arg key=value`` (values read as JSON when they parse as JSON,
as strings otherwise: ``z_dim=4`` is the number 4, ``widths=[64,32]`` a list, ``name=laplace`` the string).
``build`` returns a :class:`~ppl_vae.programs.UserProgram`: the two Pyro programs (keeping the program contract of
:mod:`ppl_vae.programs`), the ``nn.Module`` (or a dict of them) holding every trained weight, and what the run needs
to know about them. Example, in ``mypackage/models.py``::

    import pyro, pyro.distributions as dist
    from torch import nn
    from ppl_vae import UserProgram

    def build(spec):
        z_dim = spec.args.get("z_dim", 8)
        encoder = nn.Sequential(nn.Linear(spec.x_dim, 128), nn.ReLU(), nn.Linear(128, 2 * z_dim))
        decoder = nn.Sequential(nn.Linear(z_dim, 128), nn.ReLU(), nn.Linear(128, spec.x_dim))

        def model(x):
            pyro.module("decoder", decoder)
            with pyro.plate("examples", x.shape[0]):
                code = pyro.sample("code", dist.Normal(x.new_zeros(z_dim), 1.0).to_event(1))
                pyro.sample("pixels", dist.Bernoulli(logits=decoder(code)).to_event(1), obs=x)

        def guide(x):
            pyro.module("encoder", encoder)
            loc, log_scale = encoder(x).split(z_dim, -1)
            with pyro.plate("examples", x.shape[0]):
                pyro.sample("code", dist.Normal(loc, log_scale.exp()).to_event(1))

        return UserProgram(model, guide, {"encoder": encoder, "decoder": decoder}, binary=True)

then::

    ppl-vae train --program mypackage.models:build --program-arg z_dim=4 --epochs 30 --out runs/mine
    ppl-vae evaluate runs/mine --trust-program
    ppl-vae train --resume --out runs/mine --epochs 50 --trust-program
    ppl-vae compare-kl --run runs/mine --trust-program --estimators trace,meanfield

``config.json`` stores the path and ``spec`` (section ``"program"``; ``"model"``, the built-in VAE's, is ``null``);
``checkpoint.pt`` holds the modules' ``state_dict`` and is loaded with ``weights_only=True``: the program is rebuilt
by calling ``build(spec)`` again, so ``build`` must create the same modules for the same ``spec`` and register them
under the same ``pyro.module`` names. The module is imported as Python imports any module: from ``sys.path``, with the
current folder first.

**Trust.** A run folder is data that may come from elsewhere, and rebuilding its program imports and runs the code
its ``config.json`` names. ``ppl_vae.load``, ``ppl-vae evaluate``, ``ppl-vae train --resume`` and
``ppl-vae compare-kl --run`` therefore refuse a program run unless told ``trust_program=True`` / ``--trust-program``.

**Figures.** ``elbo.png`` is drawn for every run. ``reconstructions.png``, ``samples.png`` and ``latent.png`` are drawn
where the program offers ``reconstruct``, ``sample`` and ``encode``; ``metrics.json`` lists the others under
``figures_skipped`` with the reason.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from collections.abc import Iterable
from typing import Any

from ppl_vae.config import ProgramSpec
from ppl_vae.errors import InputError
from ppl_vae.programs import UserProgram


def build_program(spec: ProgramSpec) -> UserProgram:
    """Import ``spec.path`` and call it with ``spec``; the :class:`~ppl_vae.programs.UserProgram` it returns.

    Every failure is an :class:`InputError` of one line naming the path: no such module, an error while importing
    it, no such attribute, an attribute that is not callable, ``build`` raising, or ``build`` returning something else
    than a :class:`~ppl_vae.programs.UserProgram`.
    """
    module_name, _, function_name = spec.path.partition(":")
    where = f"--program {spec.path!r}"
    try:
        with _current_folder_importable():
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or module_name
        if missing == module_name or module_name.startswith(missing + "."):
            raise InputError(
                f"{where}: no module named {missing!r} (run from the folder that holds it, or install it)"
            ) from None
        raise InputError(f"{where}: importing {module_name!r} failed: no module named {missing!r}") from None
    except Exception as error:
        raise InputError(f"{where}: importing {module_name!r} raised {_one_line(error)}") from None
    build = getattr(module, function_name, None)
    if build is None:
        raise InputError(f"{where}: module {module_name!r} has no attribute {function_name!r}")
    if not callable(build):
        raise InputError(f"{where}: {function_name!r} is a {type(build).__name__}, not a function")
    try:
        program = build(spec)
    except Exception as error:
        raise InputError(f"{where}: {function_name}(spec) raised {_one_line(error)}") from None
    if not isinstance(program, UserProgram):
        raise InputError(
            f"{where}: {function_name}(spec) returned a {type(program).__name__}, expected "
            "ppl_vae.UserProgram(model, guide, modules, ...)"
        )
    return program


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


@contextlib.contextmanager
def _current_folder_importable():
    """The current folder first on ``sys.path`` while importing, as ``python -m`` has it (the ``ppl-vae`` script's
    own ``sys.path`` starts with its install folder instead)."""
    folder = os.getcwd()
    added = folder not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if added:
            sys.path.remove(folder)


def parse_program_args(items: Iterable[str]) -> dict[str, Any]:
    """``["z_dim=4", "name=laplace", "widths=[64,32]"]`` -> ``{"z_dim": 4, "name": "laplace", "widths": [64, 32]}``.

    A value is read as JSON when it parses as JSON, as the string itself otherwise. A key must be a Python
    identifier and may be given once; anything else is an :class:`InputError` naming the item.
    """
    args: dict[str, Any] = {}
    for item in items:
        key, equals, text = item.partition("=")
        if not equals:
            raise InputError(f"--program-arg {item!r}: expected key=value, e.g. --program-arg z_dim=8")
        if not key.isidentifier():
            raise InputError(
                f"--program-arg {item!r}: the key {key!r} is not a Python identifier (letters, digits, _; not first a "
                "digit)"
            )
        if key in args:
            raise InputError(f"--program-arg {key}: given twice")
        try:
            args[key] = json.loads(text)
        except json.JSONDecodeError:
            args[key] = text
    return args
