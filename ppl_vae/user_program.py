"""Your own model and guide in a run folder: ``ppl-vae train --program package.module:build``.

The contract is one function that you write and that ppl_vae imports by its path::

    build(spec: ProgramSpec) -> UserProgram

``spec`` (:class:`~ppl_vae.config.ProgramSpec`, frozen) carries what ``build`` needs to size its networks:
``spec.x_dim`` (pixels per example ``D``), ``spec.image_shape`` (``(C, H, W)``), ``spec.num_classes`` (0 without labels)
and ``spec.args``, the options given as ``--program-arg key=value`` (values read as JSON when they parse as JSON,
as strings otherwise: ``z_dim=4`` is the number 4, ``widths=[64,32]`` a list, ``name=laplace`` the string).
``build`` returns a :class:`UserProgram`: the two Pyro programs (keeping the program contract of
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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyro
import torch
from torch import nn

from ppl_vae.config import ProgramSpec, TrainConfig
from ppl_vae.errors import InputError
from ppl_vae.evaluate import observed_test_set
from ppl_vae.heads import HEADS
from ppl_vae.train import fit

if TYPE_CHECKING:
    from ppl_vae.data import Dataset
    from ppl_vae.vae import VAE


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
        head: the head this program uses, a name in ``ppl_vae.heads.HEADS`` (``log_scale``, ``log_var``, ``softplus``).
        layer: the dotted name of that ``nn.Linear`` in :attr:`UserProgram.modules` (``modules.get_submodule``), e.g.
            ``"encoder.2"``.
        rows: ``(start, stop)``: the rows of the layer's output that are ``h``, e.g. ``(z_dim, 2 * z_dim)``.
        rebuild: ``head -> UserProgram``: the same program (the same modules under the same names) with ``head``
            (the built-in VAE's, which :func:`ppl_vae.lab.head_layer` makes from its config, returns a ``VAE``).
    """

    head: str
    layer: str
    rows: tuple[int, int]
    rebuild: Callable[[str], UserProgram]

    def __post_init__(self):
        if self.head not in HEADS:
            raise InputError(f"HeadLayer: head {self.head!r} is not a scale head: expected one of {sorted(HEADS)}")
        rows = tuple(self.rows)
        if len(rows) != 2 or not all(isinstance(row, int) for row in rows) or not 0 <= rows[0] < rows[1]:
            raise InputError(f"HeadLayer: rows must be (start, stop) with 0 <= start < stop, got {self.rows!r}")
        object.__setattr__(self, "rows", rows)
        if not callable(self.rebuild):
            raise InputError(f"HeadLayer: rebuild must be a callable head -> UserProgram, got {self.rebuild!r}")


@dataclass(frozen=True)
class UserProgram:
    """A user's model and guide with the modules that hold their weights: what ``build(spec)`` returns.

    Attributes:
        model, guide: Pyro programs ``model(x, *args)`` / ``guide(x, *args)`` keeping the program contract
            (:mod:`ppl_vae.programs`): one data plate over the examples of ``x`` ``(B, D)``, any latent site names.
        modules: the ``nn.Module``, or a dict of name -> ``nn.Module``, holding every trained parameter (a dict
            becomes an ``nn.ModuleDict``; its names are the groups of the KL lab's gradient variance). The programs
            register them with ``pyro.module`` under names that do not change between processes.
        binary: the likelihood reads 0/1 pixels: train on images binarized afresh per minibatch, evaluate on test
            images binarized once with a fixed seed (as the built-in Bernoulli VAE); grey levels in [0, 1] otherwise.
        labels: the programs take the class labels ``y`` ``(B,)`` int64 as their second argument.
        encode: optional ``encode(x[, y]) -> (B, d)``, a point summary of the code of each example (``latent.png``).
        reconstruct: optional ``reconstruct(x[, y]) -> (B, D)``, pixel means in [0, 1] (``reconstructions.png``).
        sample: optional ``sample(n[, y]) -> (n, D)``, pixel means of p(x | z) for ``z`` from the prior, ``y`` ``(n,)``
            classes when ``labels`` (``samples.png``).
        scale_head: optional :class:`HeadLayer`: where the Normal guide's scale head sits and how to rebuild the
            program with another head (the KL lab's heads study, ``--heads``).
        decode: optional ``decode(z[, y]) -> (B, D)``, pixel means of p(x | z) for codes ``z`` ``(B, d)`` of the guide's
            first latent site (the one the decoder reads), laid out as :func:`ppl_vae.use.encode` gives them: what
            ``ppl-vae traverse`` and ``ppl-vae interpolate`` decode (:mod:`ppl_vae.use`).
    """

    model: Callable
    guide: Callable
    modules: nn.Module
    binary: bool = False
    labels: bool = False
    encode: Callable | None = None
    reconstruct: Callable | None = None
    sample: Callable | None = None
    scale_head: HeadLayer | None = None
    decode: Callable | None = None

    def __post_init__(self):
        for name in ("model", "guide"):
            if not callable(getattr(self, name)):
                raise InputError(f"UserProgram: {name} must be a Pyro program (callable), got {getattr(self, name)!r}")
        modules = self.modules
        if isinstance(modules, Mapping):
            if not all(isinstance(key, str) and isinstance(value, nn.Module) for key, value in modules.items()):
                raise InputError("UserProgram: modules must map names (str) to nn.Module")
            modules = nn.ModuleDict(modules)
        if not isinstance(modules, nn.Module):
            kind = type(modules).__name__
            raise InputError(f"UserProgram: modules must be an nn.Module or a dict of them, got {kind}")
        if next(modules.parameters(), None) is None:
            raise InputError("UserProgram: modules hold no parameters: pass the nn.Modules the programs train")
        object.__setattr__(self, "modules", modules)
        for name in ("binary", "labels"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"UserProgram: {name} must be True or False, got {getattr(self, name)!r}")
        for name in ("encode", "reconstruct", "sample", "decode"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise InputError(f"UserProgram: {name} must be a callable or None, got {getattr(self, name)!r}")
        if self.scale_head is not None and not isinstance(self.scale_head, HeadLayer):
            raise InputError(f"UserProgram: scale_head must be a HeadLayer or None, got {self.scale_head!r}")

    @property
    def device(self) -> torch.device:
        """The device of the modules' first parameter."""
        return next(self.modules.parameters()).device

    def test_set(self, data: Dataset) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The test observations on the program's device (binarized once with a fixed seed for a binary
        likelihood), and the test labels ``(N,)`` for a program that takes them (``None`` otherwise)."""
        x_test = observed_test_set(data.x_test, self.binary).to(self.device)
        return x_test, data.y_test.to(self.device) if self.labels else None


def as_user_program(trained: VAE | UserProgram) -> UserProgram:
    """``trained`` itself, or the built-in VAE seen as a :class:`UserProgram` (the same programs, modules and
    plotting functions), so that code serving both runs handles one kind of object."""
    if isinstance(trained, UserProgram):
        return trained
    return UserProgram(
        trained.model,
        trained.guide,
        trained,
        binary=trained.likelihood.binary,
        labels=trained.config.num_classes > 0,
        encode=lambda x, *args: trained.encode(x, *args)[0],
        reconstruct=trained.reconstruct,
        sample=trained.sample,
        decode=lambda z, *args: trained.decode(z, *args).mean,
    )


def fit_program(program: UserProgram, data: Dataset, config: TrainConfig, **options) -> list[dict]:
    """:func:`ppl_vae.train.fit` on ``program`` (its programs, modules, ``binary`` and ``labels``); ``options``:
    ``run_dir``, ``resume``, ``progress``. Returns the history.

    Training starts from a cleared Pyro parameter store: the program's ``pyro.module`` names are fixed by the user's
    code, so parameters left in the store under the same names (by an earlier run of the same program in this
    process) would otherwise be the ones the optimizer updates, while the program computes with its own.
    """
    pyro.clear_param_store()
    return fit(
        model=program.model,
        guide=program.guide,
        modules=program.modules,
        data=data,
        config=config,
        binarize_data=program.binary,
        labels=program.labels,
        **options,
    )


def build_program(spec: ProgramSpec) -> UserProgram:
    """Import ``spec.path`` and call it with ``spec``; the :class:`UserProgram` it returns.

    Every failure is an :class:`InputError` of one line naming the path: no such module, an error while importing
    it, no such attribute, an attribute that is not callable, ``build`` raising, or ``build`` returning something else
    than a :class:`UserProgram`.
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
