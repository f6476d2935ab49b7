"""Which rows of every minibatch a rank trains on, and where its random numbers come from.

**The data.** ``--batch-size B`` is the *global* minibatch. Every rank draws the same permutation of the training set
from the seeded shuffling generator (which is used for nothing else in a sharded run, so it stays the same on every
rank) and cuts it into the same global minibatches; rank ``r`` of ``W`` takes the ``r``-th of ``W`` contiguous slices
of each (``torch.tensor_split``: sizes differ by at most one). The order of the data is therefore that of one process
with batch ``B``, whatever ``W``. A last minibatch of an epoch with fewer than ``W`` examples would leave a rank
without any and is dropped (its examples come again, shuffled, in the next epoch; with ``W = 1`` nothing is dropped).

**The noise**, two ways:

- default (``W > 1``, independent): rank ``r`` draws its guide noise and its dynamic binarization from torch's
  generator seeded, before each step, from ``(seed, rank, epoch, step)`` (:func:`derived_seed`): the ranks' streams are
  independent, a resumed run with the same ``W`` draws what an uninterrupted one would, and training is equal *in
  distribution* (not draw for draw) to one process with batch ``B``.
- keyed (``--keyed-noise``, any ``W`` including 1): the noise is keyed to the global examples. Before each step every
  rank makes the same generators from ``(seed, epoch, step)``, draws the noise of the *whole* global minibatch and
  keeps its own rows (:class:`KeyedNoise`; the binarization, uniform draws compared with the grey levels, likewise in
  :meth:`Sharding.batch`). So ``W`` processes with ``B / W`` rows each take the same steps as one process with ``B``
  (to float rounding: the gradient is summed in another order), and a run resumes exactly with another ``W``. Each
  rank draws ``W`` times the noise it uses (cheap next to the networks). Covered: reparameterized latent sites whose
  distribution is ``Normal`` (``Independent(Normal)`` too) inside the data plate, and sites the guide enumerates;
  anything else is refused at the first step with a line naming the site. Randomness outside the sample sites
  (dropout) still comes from torch's generator.

The default single-process path (``W = 1`` without ``--keyed-noise``) is not sharded and draws as it always did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pyro.distributions import Independent
from pyro.poutine.messenger import Messenger
from torch.distributions import Normal

from ppl_vae import distributed
from ppl_vae.errors import InputError

RANK_NOISE, BINARIZATION, GUIDE, EVALUATION = range(4)
"""The streams of a run's derived seeds (the word after the run's seed, so that no two streams share a seed): each
rank's own noise of a step, the keyed binarization's uniform draws and the guide's keyed standard normals of a step,
and the keys of a sharded run's evaluations (:meth:`Sharding.evaluation_seed`)."""


def derived_seed(*words: int) -> int:
    """A 63-bit seed mixed from the integers ``words`` (NumPy's ``SeedSequence`` of the count of words and the words:
    ``SeedSequence`` alone gives ``(a, b)`` and ``(a, b, 0)`` the same state): nearby inputs give unrelated seeds, so
    the streams ``(seed, stream, ...)`` are independent."""
    words = [int(word) for word in words]
    return int(np.random.SeedSequence([len(words), *words]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def keyed_generator(device: torch.device, *words: int) -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with :func:`derived_seed` of ``words``."""
    return torch.Generator(device=device).manual_seed(derived_seed(*words))


@dataclass(frozen=True)
class Sharding:
    """The sharding of a run: ``rank`` of ``world`` processes, the run's ``seed``, and whether the noise is ``keyed``
    to the global examples (see the module's docstring)."""

    seed: int
    rank: int = 0
    world: int = 1
    keyed: bool = False

    @classmethod
    def of_run(cls, seed: int, keyed: bool) -> Sharding | None:
        """The sharding of this process in the current group (:mod:`ppl_vae.distributed`), or ``None`` for the
        default single-process path (one process, noise not keyed)."""
        world = distributed.world_size()
        if world == 1 and not keyed:
            return None
        return cls(seed=seed, rank=distributed.rank(), world=world, keyed=keyed)

    def evaluation_seed(self, *words: int) -> int:
        """The ``keyed_seed`` (:mod:`ppl_vae.eval_shards`) of one of the run's evaluations: ``(seed, EVALUATION,
        epoch)`` for the held-out ELBO after ``epoch`` (0: untrained), ``(seed, EVALUATION)`` for the final one."""
        return derived_seed(self.seed, EVALUATION, *words)

    def rows(self, size: int) -> tuple[int, int]:
        """``(start, stop)``: this rank's rows of a global minibatch of ``size`` examples (``torch.tensor_split``'s
        slices: the first ``size % world`` ranks take one more)."""
        share, extra = divmod(size, self.world)
        start = self.rank * share + min(self.rank, extra)
        return start, start + share + (self.rank < extra)

    def batch(
        self,
        x_train: torch.Tensor,
        train_args: tuple,
        index: torch.Tensor,
        binary: bool,
        epoch: int,
        number: int,
    ) -> tuple[torch.Tensor, tuple]:
        """This rank's ``(x, args)`` of the global minibatch ``index`` (step ``number`` of ``epoch``), ``x``
        binarized for a ``binary`` program: keyed, or from this rank's stream, which this call also seeds torch's
        generator with for the step (the guide's noise)."""
        start, stop = self.rows(len(index))
        mine = index[start:stop]
        args = tuple(arg[mine] for arg in train_args)
        if self.keyed:
            x = x_train[index]
            if binary:
                generator = keyed_generator(torch.device("cpu"), self.seed, BINARIZATION, epoch, number)
                x = (torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device) < x).to(x.dtype)
            return x[start:stop], args
        torch.manual_seed(derived_seed(self.seed, RANK_NOISE, self.rank, epoch, number))
        x = x_train[mine]
        return (torch.bernoulli(x) if binary else x), args

    def noise(self, epoch: int, number: int, size: int, data_plate: str, latent: tuple[str, ...], device):
        """The :class:`KeyedNoise` of step ``number`` of ``epoch`` (a global minibatch of ``size``), or ``None`` when
        the noise is not keyed."""
        if not self.keyed:
            return None
        start, stop = self.rows(size)
        generator = keyed_generator(torch.device("cpu"), self.seed, GUIDE, epoch, number)
        return KeyedNoise(generator, start, stop, size, data_plate, latent, device)


class KeyedNoise(Messenger):
    """Draws the guide's latent sites from noise keyed to the global minibatch: at a site of ``latent`` (not yet
    drawn, e.g. not replayed into the model) whose distribution is ``Normal`` (or ``Independent(Normal)``) with the data
    plate ``data_plate`` among its plates, the standard normals ``eps`` of the whole global minibatch (the site's full
    shape with ``size`` rows on the data plate's dimension) come from ``generator`` and this rank keeps rows
    ``start:stop``: ``z = loc + scale * eps``, reparameterized. Enter it outside the ELBO (outermost on Pyro's stack),
    so that the particle and enumeration plates have expanded the distribution first. Draws are made on the CPU, in
    the order the guide reaches its sites, and moved to ``device``: the same numbers on every rank and device."""

    def __init__(self, generator, start: int, stop: int, size: int, data_plate: str, latent, device):
        super().__init__()
        self.generator, self.start, self.stop, self.size = generator, start, stop, size
        self.data_plate, self.latent, self.device = data_plate, frozenset(latent), device

    def _process_message(self, msg) -> None:
        if msg["type"] != "sample" or msg["is_observed"] or msg["done"] or msg["name"] not in self.latent:
            return
        if msg["infer"].get("enumerate"):
            return  # summed out, not drawn
        fn = msg["fn"]
        base = fn.base_dist if isinstance(fn, Independent) else fn
        if not isinstance(base, Normal):
            raise InputError(
                f"--keyed-noise draws Normal latent sites, and site {msg['name']!r} is {type(fn).__name__}"
                f"{f'({type(base).__name__})' if base is not fn else ''}: leave out --keyed-noise"
            )
        frame = next((frame for frame in msg["cond_indep_stack"] if frame.name == self.data_plate), None)
        if frame is None:
            raise InputError(
                f"--keyed-noise keys the noise to the examples, and site {msg['name']!r} is outside the data plate "
                f"{self.data_plate!r}: leave out --keyed-noise"
            )
        shape = list(fn.shape())
        dim = len(fn.batch_shape) + frame.dim
        if shape[dim] != self.stop - self.start:
            raise InputError(
                f"--keyed-noise: site {msg['name']!r} has {shape[dim]} rows on the data plate, this process trains "
                f"{self.stop - self.start}: the data plate must be as large as the minibatch"
            )
        shape[dim] = self.size
        eps = torch.randn(shape, generator=self.generator, dtype=base.loc.dtype).to(self.device)
        eps = eps.narrow(dim, self.start, self.stop - self.start)
        msg["value"] = base.loc + base.scale * eps
        msg["done"] = True
