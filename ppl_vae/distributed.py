"""The process group of a data-parallel run: ``torch.distributed`` as ``torchrun`` sets it up, and nothing home-made.

``torchrun --nproc_per_node N -m ppl_vae train ...`` (or ``ppl-vae train --nproc N``, which runs exactly that) starts
``N`` processes with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their environment;
:func:`process_group` joins them into one group (``gloo`` on the CPU, ``nccl`` on CUDA, where rank ``r`` of a node
uses ``cuda:LOCAL_RANK``) and leaves it at the end with a ``barrier`` before ``destroy_process_group`` (gloo aborts a
process that leaves while a peer is still talking to it). Outside torchrun nothing is initialized and the helpers
answer for one process::

    with process_group("cpu"):
        rank(), world_size(), is_main()        # (0, 1, True) without torchrun

Every collective of the group gives up after :func:`timeout_seconds` (``PPL_VAE_DIST_TIMEOUT``, seconds), so a rank
that dies or hangs makes the others fail instead of waiting for ever; torchrun then stops the rest.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist

from ppl_vae.errors import InputError

TIMEOUT_VARIABLE = "PPL_VAE_DIST_TIMEOUT"
"""The environment variable that sets the collective timeout, in seconds (the tests use a few)."""

DEFAULT_TIMEOUT_S = 600.0
"""The collective timeout without :data:`TIMEOUT_VARIABLE`: long enough for a rank that waits while another finishes
a slower share of the work (a last minibatch, a block of evaluation batches, writing a checkpoint)."""


def launched() -> bool:
    """True in a process started by ``torchrun`` (``RANK`` and ``WORLD_SIZE`` are set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the group; 0 without one."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """The number of processes in the group; 1 without one."""
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True for the one process that writes files and prints (rank 0, or a process without a group)."""
    return rank() == 0


def local_rank() -> int:
    """This process's index on its node (torchrun's ``LOCAL_RANK``; 0 outside torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def timeout_seconds() -> float:
    """The collective timeout: :data:`TIMEOUT_VARIABLE` (seconds > 0) or :data:`DEFAULT_TIMEOUT_S`."""
    text = os.environ.get(TIMEOUT_VARIABLE)
    if text is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise InputError(f"{TIMEOUT_VARIABLE}={text!r}: expected a number of seconds > 0")
    return value


def rank_device(device: str) -> str:
    """The device of this rank: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun (one GPU per process); an explicit
    ``cuda:I`` is kept only in a single process, where it is a choice, not a clash."""
    kind = torch.device(device)
    if kind.type != "cuda" or not launched():
        return device
    if kind.index is not None and int(os.environ["WORLD_SIZE"]) > 1:
        raise InputError(
            f"--device {device} with {os.environ['WORLD_SIZE']} processes: give --device cuda, and each process "
            "takes cuda:LOCAL_RANK"
        )
    return f"cuda:{local_rank()}"


@contextmanager
def process_group(device: str = "cpu", timeout: float | None = None) -> Iterator[None]:
    """Join torchrun's process group for the block (nothing outside torchrun, or when a group exists already):
    ``gloo`` for a CPU ``device``, ``nccl`` for CUDA (after ``torch.cuda.set_device(LOCAL_RANK)``), collectives
    timing out after ``timeout`` seconds (default :func:`timeout_seconds`). A block that ends normally waits at a
    ``barrier`` for every rank before the group is destroyed; one that raises destroys it at once (a peer may be gone,
    and torchrun stops the others)."""
    if not launched() or is_initialized():
        yield
        return
    seconds = timeout_seconds() if timeout is None else timeout
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=seconds))
    try:
        yield
        dist.barrier()
    finally:
        dist.destroy_process_group()


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any (a signal that reached one process stops them all at the same
    step); ``flag`` itself in a single process."""
    if world_size() == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def sum_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` (any shape) over the ranks, on every rank (``value`` itself in a single process)."""
    if world_size() == 1:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total


def _collective_device() -> torch.device:
    """Where a collective's tensors live: the rank's GPU for NCCL, the CPU for gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
