"""The training step of a sharded run: each rank's ELBO through ``DistributedDataParallel``, gradients averaged.

:class:`ShardedStep` is the fast path (:class:`~ppl_vae.objectives.FastStep`: one torch optimizer over every
parameter, its state saved in Pyro's format) whose gradients come from :class:`ELBOLoss`, a small ``nn.Module`` holding
the programs' modules whose ``forward`` returns the ELBO's differentiable loss on this rank's rows; with more than one
process it is wrapped in ``torch.nn.parallel.DistributedDataParallel``, which broadcasts rank 0's weights once and
averages the gradients over the ranks in the backward pass.

**Scaling.** A loss is, as in Pyro, the negative objective *summed* over the rank's ``b_r`` examples, ``L_r``. The
global minibatch's loss is ``L = sum_r L_r`` whatever the split, and DDP averages: each rank back-propagates
``W * L_r``, so the averaged gradient is ``(1/W) sum_r W grad L_r = grad L``, the gradient one process would take
with the whole minibatch (unequal slices included). The loss a step returns is ``L`` (an ``all_reduce`` of the
``L_r``), so the epoch's train ELBO and the decision to skip a non-finite step are the same on every rank.

Which objectives: those whose Pyro ELBO has a ``differentiable_loss`` and takes any batch shape (``trace``,
``meanfield``, ``stl``, ``enum``, or an ELBO instance with one); ``iwae`` (``RenyiELBO``) and ``tracegraph`` have
none, ``jit`` compiles one batch shape, the hand-written ``reference-*`` steps and ``--path plain`` (``SVI`` and
Pyro's per-parameter optimizers) run in one process: each is refused with one line. Every trained parameter must be in
the program's ``modules`` (DDP averages those): a ``pyro.param`` outside them is refused at the first step.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ppl_vae import distributed
from ppl_vae.errors import InputError
from ppl_vae.objectives import FastStep
from ppl_vae.sharding import Sharding

SHARDED_ELBOS = ("trace", "meanfield", "stl", "enum")
"""The ``--elbo`` names a sharded run trains: the Pyro ELBOs with a ``differentiable_loss`` for any batch shape."""

SHARDED_OBJECTIVES = ", ".join(SHARDED_ELBOS[:-1]) + f" or {SHARDED_ELBOS[-1]}"
"""The same, in words, for refusals."""


def require_shardable(elbo: str, path: str, why: str) -> None:
    """An :class:`InputError` for an ``--elbo`` or ``--path`` that a sharded run (``why``: "with 2 processes", ...)
    cannot train: checked by ``ppl-vae train --nproc`` before it starts any process, where the step itself would
    refuse it in every process at the first update."""
    if elbo not in SHARDED_ELBOS:
        raise InputError(f"--elbo {elbo} trains one process with its own noise; {why} use --elbo {SHARDED_OBJECTIVES}")
    require_shardable_path(path, why)


def require_shardable_path(path: str, why: str) -> None:
    """An :class:`InputError` for a ``--path`` that a sharded run cannot take (``plain``: SVI and Pyro's optimizers;
    ``graph``: one compiled batch shape); ``auto`` and ``fast`` train it."""
    if path in ("plain", "graph"):
        raise InputError(f"--path {path} trains one process with its own noise; {why} use --path auto or fast")


class ELBOLoss(nn.Module):
    """``forward(*arguments)``: the ELBO's differentiable loss of ``model`` and ``guide`` on ``arguments`` (a
    scalar, nats, summed over the examples); its submodule ``networks`` holds every trained parameter (for DDP)."""

    def __init__(self, networks: nn.Module, elbo, model, guide):
        super().__init__()
        self.networks = networks
        self.elbo, self.model, self.guide = elbo, model, guide

    def forward(self, *arguments) -> torch.Tensor:
        return self.elbo.differentiable_loss(self.model, self.guide, *arguments)


class ShardedStep(FastStep):
    """The fast path on this rank's rows, gradients averaged by DDP over ``sharding.world`` processes (see the module's
    docstring); with ``sharding.keyed`` the guide's noise comes from :class:`~ppl_vae.sharding.KeyedNoise`. The loop
    calls :meth:`at` before each update to say which step of which epoch (a global minibatch of which size) it is."""

    def __init__(self, program, config, make_elbo, *, sharding: Sharding, **options):
        if options.get("fixed_batch_shape"):
            raise InputError(
                f"--elbo {config.elbo} compiles one batch shape, and a sharded run's slices may differ by one: "
                f"use --elbo {SHARDED_OBJECTIVES}"
            )
        super().__init__(program, config, make_elbo, **options)
        self.sharding = sharding
        self.loss_module: nn.Module | None = None
        self.position: tuple[int, int, int] | None = None  # (epoch, step, global minibatch size) of the next update

    def at(self, epoch: int, number: int, size: int) -> None:
        """The next update is step ``number`` of ``epoch``, on a global minibatch of ``size`` examples."""
        self.position = (epoch, number, size)

    def prepare(self, x: torch.Tensor, *args) -> None:
        if self.elbo is not None:
            return
        super().prepare(x, *args)
        if not hasattr(self.elbo, "differentiable_loss"):
            raise InputError(
                f"{type(self.elbo).__name__} (--elbo {self.config.elbo}) has no differentiable loss for "
                f"DistributedDataParallel: with more than one process or --keyed-noise use --elbo {SHARDED_OBJECTIVES}"
            )
        loss = ELBOLoss(self.program.modules, self.elbo, self.model, self.guide)
        if self.sharding.world > 1:
            device = x.device
            loss = DistributedDataParallel(loss, device_ids=[device.index] if device.type == "cuda" else None)
        self.loss_module = loss

    def _noise(self, x: torch.Tensor):
        if self.position is None or not self.sharding.keyed:
            return nullcontext()
        epoch, number, size = self.position
        return self.sharding.noise(epoch, number, size, self.sites.data_plate, self.sites.latent, x.device)

    def _backward(self, arguments: tuple) -> float:
        """This rank's loss through the (DDP) loss module, ``W`` times it back-propagated (the gradients averaged
        over the ranks), and the global minibatch's loss summed over the ranks."""
        with self._noise(arguments[0]):
            loss = self.loss_module(*arguments)
        (loss * self.sharding.world if self.sharding.world > 1 else loss).backward()
        return distributed.sum_over_ranks(loss.detach().to(torch.float64)).item()

    def _check_found(self, found: dict) -> None:
        """With more than one process, an :class:`InputError` naming a parameter the programs train that is not in
        ``modules`` (DDP would not average its gradient, and the ranks' copies would drift apart)."""
        if self.sharding.world == 1:
            return
        owned = {id(parameter) for parameter in self.program.modules.parameters()}
        outside = [name for name, parameter in found.items() if id(parameter) not in owned]
        if outside:
            raise InputError(
                f"parameter {outside[0]!r} is trained but not in the program's modules, so "
                "DistributedDataParallel would not average its gradient: hold it in an nn.Module of modules="
            )

    def _add_new_parameters(self) -> None:
        if self.sharding.world > 1:
            raise InputError(
                "a parameter first appeared after the first update: with more than one process every trained "
                "parameter must exist (in modules=) from the first update"
            )
        super()._add_new_parameters()
