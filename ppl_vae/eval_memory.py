"""Evaluation chunks sized to a memory budget: how many importance samples one vectorized pass may draw.

An evaluation pass draws ``S`` samples for each of ``B`` examples at once (the workbench's sample plate, see
:mod:`ppl_vae.programs`); its memory grows linearly in ``S``. The bytes of a pass are measured, not guessed: a
``TorchDispatchMode`` counts the bytes of every new tensor storage that a tensor operation creates during one pass
(views and in-place results reuse storage and are not counted), on any device. That total is an upper bound on what
the pass holds at once (a freed intermediate is still counted). Two probe passes of the first batch, with 1 and 2
samples, give::

    bytes(S) = fixed + S * per_sample          (per_sample = bytes(2) - bytes(1), fixed = bytes(1) - per_sample)

and a budget of ``M`` MB (10^6 bytes) allows ``S = floor((M * 10^6 - fixed) / per_sample)`` samples per pass (scaled
to a batch's number of examples), rounded down to a multiple of :data:`SAMPLE_BLOCK` when larger. The probes leave
the RNG as they found it, and passes of whole blocks of samples draw, on the CPU, the very numbers that one pass over
all ``k`` samples would: for a guide that draws once per pass (one latent site, as the built-in VAE) the same seed
gives the same estimates for any budget, up to the rounding of the running sums. (Not so when the budget is below
one sample of a whole batch: the batch of examples then shrinks, and the draws fall to other examples.)

Not counted: the networks' weights, the test set, and what the caller keeps (the log weights of finished passes).

Example::

    plan = ChunkPlan.measure(model, guide, x[:256], (), sites, memory_mb=64)
    list(plan.sizes(x[:256], 5000))      # e.g. [1392, 1392, 1392, 824]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ppl_vae.config import check_memory_mb
from ppl_vae.errors import InputError
from ppl_vae.programs import ProgramSites, log_importance_weights, rng_preserved

MB = 10**6
"""Bytes per megabyte of a memory budget (decimal, as ``--eval-memory-mb`` says)."""
SAMPLE_BLOCK = 16
"""Within a budget, a pass of more than this many samples draws a multiple of it: torch's CPU normal sampler fills
blocks of 16 numbers, so passes of whole blocks draw exactly the numbers of one pass over every sample."""


class AllocatedBytes(TorchDispatchMode):
    """Counts, in :attr:`total`, the bytes of every tensor storage created by a tensor operation run inside it (an
    output whose storage is none of the operation's inputs' storages)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor) and t.device.type != "meta"
        }
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.total += t.untyped_storage().nbytes()
        return out


def pass_bytes(model: Callable, guide: Callable, x: torch.Tensor, args: tuple, num_samples: int, sites) -> int:
    """Bytes allocated by one pass of :func:`~ppl_vae.programs.log_importance_weights` with ``num_samples`` samples
    per example of ``x`` (see :class:`AllocatedBytes`); the RNG is left as it was."""
    with rng_preserved(x.device), torch.no_grad(), AllocatedBytes() as counter:
        log_importance_weights(model, guide, x, num_samples, args=args, sites=sites)
    return counter.total


@dataclass(frozen=True)
class ChunkPlan:
    """How many importance samples a pass draws: at most ``max_elements`` ``samples x examples x values per example``
    (``memory_mb`` ``None``), or as many as ``memory_mb`` allows by the measured bytes of a pass.

    Attributes:
        max_elements: the element bound used without a budget.
        memory_mb: the budget, MB per pass, or ``None``.
        fixed_bytes: measured bytes of a pass that do not grow with the samples, for ``examples`` examples.
        sample_bytes: measured bytes per importance sample of ``examples`` examples.
        examples: the number of examples of the probed batch.
    """

    max_elements: int
    memory_mb: float | None = None
    fixed_bytes: float = 0.0
    sample_bytes: float = 0.0
    examples: int = 1

    @classmethod
    def measure(
        cls,
        model: Callable,
        guide: Callable,
        x: torch.Tensor,
        args: tuple,
        sites: ProgramSites,
        memory_mb: float | None,
        max_elements: int = 2**24,
    ) -> ChunkPlan:
        """The plan for batches like ``x`` (the first batch of examples): probed with 1 and 2 samples when
        ``memory_mb`` is given, the element bound otherwise."""
        if memory_mb is None:
            return cls(max_elements)
        check_memory_mb(memory_mb)
        one, two = (pass_bytes(model, guide, x, args, size, sites) for size in (1, 2))
        per_sample = max(two - one, 1)
        return cls(max_elements, memory_mb, max(one - per_sample, 0), per_sample, x.shape[0])

    def bytes_for(self, examples: int, num_samples: int) -> float:
        """The measured bound on the bytes of a pass of ``num_samples`` samples for ``examples`` examples: the fixed
        part as probed, the per-sample part scaled to the number of examples."""
        return self.fixed_bytes + num_samples * self.sample_bytes * examples / self.examples

    def examples_per_batch(self, batch_size: int) -> int:
        """``batch_size``, or fewer examples when one sample of ``batch_size`` examples exceeds the budget (the
        largest number whose one-sample pass fits); an :class:`InputError` when not even one example fits."""
        if self.memory_mb is None or self.bytes_for(batch_size, 1) <= self.memory_mb * MB:
            return batch_size
        fits = math.floor((self.memory_mb * MB - self.fixed_bytes) * self.examples / self.sample_bytes)
        if fits < 1:
            need = self.bytes_for(1, 1) / MB
            raise InputError(
                f"--eval-memory-mb {self.memory_mb:g} is below the {need:.3g} MB that one importance sample of one "
                "example needs: expected a larger budget"
            )
        return min(batch_size, fits)

    def sizes(self, x: torch.Tensor, num_samples: int) -> Iterator[int]:
        """Sample counts that add up to ``num_samples``, each a pass for the examples of ``x`` ``(B, ...)`` within the
        budget (at least 1)."""
        if self.memory_mb is None:
            per_sample = max(1, x.shape[0] * max(1, x[0].numel()))
            chunk = self.max_elements // per_sample
        else:
            per_sample = self.sample_bytes * x.shape[0] / self.examples
            chunk = math.floor((self.memory_mb * MB - self.fixed_bytes) / per_sample)
            if SAMPLE_BLOCK <= chunk < num_samples:
                chunk -= chunk % SAMPLE_BLOCK
        chunk = max(1, min(num_samples, chunk))
        for start in range(0, num_samples, chunk):
            yield min(chunk, num_samples - start)
