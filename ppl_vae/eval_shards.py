"""Evaluation sharded across the processes of a ``torch.distributed`` group, with noise keyed to the batch.

A per-example evaluation (:mod:`ppl_vae.evaluate`, :mod:`ppl_vae.diagnostics`) splits the ``N`` test examples into
batches whose boundaries depend on ``N``, the batch size and the memory plan only, never on the number of processes.
In **keyed** mode the noise of batch ``b`` is drawn from generators seeded with ``derived_seed(seed, stream, b)``
(torch's CPU generator and the evaluation device's, Python's ``random`` and NumPy's, all restored afterwards), so each
example's value is a function of ``(seed, b)`` alone: whichever process computes batch ``b``, and whatever it computed
before, the numbers are the same. With ``W`` processes rank ``r`` computes a contiguous block of batches (the first
``num_batches % W`` ranks one more than the rest; rank 0 always at least one), and the per-example rows are gathered
(``all_gather`` of tensors padded to the longest block) so that every rank holds all ``N`` rows in the original order::

    batches   0 1 2 | 3 4 | 5 6            (7 batches, W = 3)
    ranks       0      1     2             every rank ends with rows of batches 0..6, in order

A process group is used when ``torch.distributed`` is available and initialized (``torchrun``; any backend, NCCL
with ``torch.cuda.set_device`` called on each rank, as NCCL's object collectives need); otherwise the world is one
process and nothing is gathered. Distributed evaluation is always keyed; a single process is keyed on request
(``keyed_seed=``), and then gives the very numbers of any number of processes with the same seed (to the rounding
of each process's arithmetic: identical on the CPU).

Example::

    seed = evaluation_seed(keyed_seed)              # None: a single process, unkeyed
    rows = map_batches(lambda b: reduce(*batches[b]), [len(xb) for xb, _ in batches], seed, x.device)
    # (N, ...) on every rank; batch b computed under keyed_rng(derived_seed(seed, 0, b), x.device)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.distributed as dist

from ppl_vae import distributed
from ppl_vae.errors import InputError
from ppl_vae.programs import rng_preserved
from ppl_vae.sharding import derived_seed

SEED_BITS = 63
"""Derived seeds lie in ``[0, 2**63)``: accepted by every torch generator."""


def world(shard: bool = True) -> tuple[int, int]:
    """``(rank, world_size)`` of the process group (:mod:`ppl_vae.distributed`) when ``shard``, else ``(0, 1)``."""
    return (distributed.rank(), distributed.world_size()) if shard else (0, 1)


def check_seed(seed) -> int:
    """A keyed evaluation seed: an integer >= 0 (an :class:`InputError` naming it otherwise)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"keyed_seed {seed!r}: expected an integer >= 0")
    return int(seed)


def evaluation_seed(keyed_seed: int | None, shard: bool = True) -> int | None:
    """The seed of a keyed evaluation: ``keyed_seed`` when given; in a process group without one, a seed that every
    rank draws from torch's CPU generator and takes from rank 0 (one draw on every rank, so ranks stay in step);
    ``None`` (unkeyed: the RNG as it is) for a single process without one."""
    if keyed_seed is not None:
        return check_seed(keyed_seed)
    if world(shard)[1] == 1:
        return None
    drawn = [int(torch.randint(0, 2**SEED_BITS - 1, ()))]  # the bound is exclusive and must fit an int64
    dist.broadcast_object_list(drawn, src=0)
    return drawn[0]


@contextmanager
def keyed_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Inside, torch's CPU generator, the generator of ``device`` (CUDA), Python's ``random`` and NumPy's are seeded
    with ``seed``; outside, all are as they were (:func:`ppl_vae.programs.rng_preserved`)."""
    device = torch.device(device)
    with rng_preserved(device):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def owned_batches(num_batches: int, rank: int, world_size: int) -> range:
    """The batch indices of ``rank``: a contiguous block, the first ``num_batches % world_size`` ranks one longer
    (empty for ranks beyond ``num_batches``; rank 0's is never empty)."""
    size, extra = divmod(num_batches, world_size)
    start = rank * size + min(rank, extra)
    return range(start, start + size + (rank < extra))


def rows_per_rank(batch_rows: Sequence[int], world_size: int) -> list[int]:
    """The rows (examples) each rank computes, for batches of ``batch_rows`` examples (:func:`owned_batches`)."""
    return [sum(batch_rows[b] for b in owned_batches(len(batch_rows), r, world_size)) for r in range(world_size)]


def map_batches(
    compute: Callable[[int], torch.Tensor],
    batch_rows: Sequence[int],
    seed: int,
    device: torch.device,
    shard: bool = True,
) -> torch.Tensor:
    """``compute(b)`` ``(batch_rows[b], ...)`` for every batch ``b`` that this rank owns (:func:`owned_batches`),
    each under :func:`keyed_rng` with ``derived_seed(seed, 0, b)`` (stream 0: the draws), and every rank's rows
    gathered in batch order (:func:`gather_rows`, which also carries a failure to the other ranks):
    ``(sum(batch_rows), ...)`` on every rank."""
    rank, world_size = world(shard)
    local, error = None, None
    try:
        parts = []
        for batch in owned_batches(len(batch_rows), rank, world_size):
            with keyed_rng(derived_seed(seed, 0, batch), device):
                parts.append(compute(batch))
        local = torch.cat(parts) if parts else None
    except Exception as caught:  # handed to gather_rows, which raises it here and its message on every other rank
        error = caught
    return gather_rows(local, rows_per_rank(batch_rows, world_size), device, shard, error)


def gather_rows(
    local: torch.Tensor | None,
    counts: Sequence[int],
    device: torch.device,
    shard: bool = True,
    error: Exception | None = None,
) -> torch.Tensor | None:
    """Every rank's ``local`` rows ``(counts[rank], ...)``, concatenated in rank order on every rank, on ``device``:
    ``(sum(counts), ...)`` (``local`` itself in a single process).

    A rank without rows passes ``None``; the dtype and trailing shape come from rank 0's rows, which are ``None``
    only when no rank has any (the result is then ``None``). A rank whose computation failed passes its exception as
    ``error``: it is raised there, and every other rank raises its message too (an :class:`InputError` or
    ``ValueError`` as the same type, anything else as a ``RuntimeError`` naming the rank) instead of waiting in a
    collective for the group's timeout. Rows are padded to the longest block for the ``all_gather`` (gloo refuses
    uneven sizes)."""
    rank, world_size = world(shard)
    if world_size == 1:
        if error is not None:
            raise error
        return local
    status = (None if local is None else (local.dtype, tuple(local.shape[1:])), _describe(error))
    statuses = [None] * world_size
    dist.all_gather_object(statuses, status)
    if error is not None:
        raise error
    for other, (_, failure) in enumerate(statuses):
        if failure is not None:
            _raise_remote(other, *failure)
    layout = statuses[0][0]
    if layout is None:
        return None
    dtype, tail = layout
    padded = torch.zeros((max(counts), *tail), dtype=dtype, device=device)
    if local is not None:
        padded[: local.shape[0]] = local
    gathered = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([part[:count] for part, count in zip(gathered, counts, strict=True)])


def _describe(error: Exception | None) -> tuple[str, str] | None:
    """``(kind, message)`` of a rank's failure, to send to the others: kind ``InputError``, ``ValueError`` or
    ``other: TypeName``."""
    if error is None:
        return None
    if isinstance(error, InputError):
        return "InputError", str(error)
    if isinstance(error, ValueError):
        return "ValueError", str(error)
    return f"other: {type(error).__name__}", str(error)


def _raise_remote(rank: int, kind: str, message: str) -> None:
    """Raise, on this rank, the failure of ``rank`` (see :func:`_describe`)."""
    if kind == "InputError":
        raise InputError(message)
    if kind == "ValueError":
        raise ValueError(message)
    raise RuntimeError(f"evaluation failed on rank {rank}: {kind.removeprefix('other: ')}: {message}")
