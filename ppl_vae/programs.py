"""The program contract, in one place: what the workbench needs of a Pyro ``model`` / ``guide`` pair, and the Pyro
plumbing that serves every program that keeps it (site discovery, trace and replay, the importance-sample plate,
per-example log-densities that honour masks).

The contract::

    model(x, *args)   guide(x, *args)        extra arguments (labels, masks) go to both, unchanged
    one data plate over the examples of x   any name; found from a trace, or named with ``data_plate=``
    latent sites                             every non-observed sample site of the guide (any names, any number)
    observed sites                           model sites with ``obs`` (``obs_mask`` allowed)

Every per-example quantity is a sum over the sites inside the data plate; a site outside it (a global latent) or a
subsampled data plate is refused with an :class:`~ppl_vae.errors.InputError`, because per-example numbers would be
wrong. ``max_plate_nesting`` is found from the traces; the workbench's own plate (importance samples, particles) goes
to the left of all of the user's plates.

For ``S`` draws ``z_s ~ q(z | x)`` (every latent site at once), the log importance weight of example ``i`` is::

    log w_is = sum over model sites m of log p_m(.)  -  sum over guide sites g of log q_g(.)        (nats)

where each site's log-density is summed over its event dimensions and over every plate nested inside the data plate,
multiplied by its mask (``poutine.mask``, ``obs_mask``, ``Distribution.mask``: a masked-out term contributes nothing,
exactly as in Pyro's ELBOs) and **not** by its scale (β, subsampling): evaluation estimates the true ``log p(x)``.

A pair that keeps the contract travels with the modules holding its weights as a :class:`UserProgram` (what training,
run folders and the KL lab take; the built-in VAE becomes one with :func:`as_user_program`). Which latent sites a
site's distribution depends on, in the guide or in the model, is found by one mechanism: :func:`latent_parents`.

Example::

    sites = inspect_programs(vae.model, vae.guide, x)          # ProgramSites(data_plate='data', latent=('z',), ...)
    log_w = log_importance_weights(vae.model, vae.guide, x, num_samples=100)    # (100, B)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.distributions.torch_distribution import MaskedDistribution
from pyro.distributions.util import scale_and_mask
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import nn

from ppl_vae.errors import InputError
from ppl_vae.heads import HeadLayer

IMPORTANCE_PLATE = "importance_samples"
"""The name of the workbench's own plate of samples, placed left of every user plate."""


@dataclass(frozen=True)
class ProgramSites:
    """The shape of a model/guide pair, found from one trace of each (:func:`inspect_programs`).

    Attributes:
        data_plate: the name of the plate over the examples of ``x``.
        data_dim: that plate's dimension (negative, as in ``pyro.plate(..., dim=...)``).
        max_plate_nesting: the deepest plate dimension of either program (``-dim`` of the leftmost plate).
        latent: the guide's non-observed sample sites, in the order the guide draws them.
        observed: the model's observed sample sites.
        enumerated: the latent sites the guide marks for enumeration (``infer={"enumerate": ...}``).
    """

    data_plate: str
    data_dim: int
    max_plate_nesting: int
    latent: tuple[str, ...]
    observed: tuple[str, ...]
    enumerated: tuple[str, ...] = ()

    @property
    def sample_dim(self) -> int:
        """The dimension of the workbench's plate of samples: left of every user plate."""
        return -(self.max_plate_nesting + 1)


@dataclass(frozen=True)
class UserProgram:
    """A model and guide keeping the program contract, with the modules that hold their weights: what training, the
    run folders and the KL lab take, for a user's programs (what ``build(spec)`` returns, see
    :mod:`ppl_vae.user_program`) and the built-in VAE alike (:func:`as_user_program`).

    Attributes:
        model, guide: Pyro programs ``model(x, *args)`` / ``guide(x, *args)`` keeping the program contract (see the
            module's docstring): one data plate over the examples of ``x`` ``(B, D)``, any latent site names.
        modules: the ``nn.Module``, or a dict of name -> ``nn.Module``, holding every trained parameter (a dict
            becomes an ``nn.ModuleDict``; its names are the groups of the KL lab's gradient variance). The programs
            register them with ``pyro.module`` under names that do not change between processes (or see
            ``pyro_name``). Moved to the training device and saved in checkpoints.
        binary: the likelihood reads 0/1 pixels: train on images binarized afresh per minibatch, evaluate on test
            images binarized once with a fixed seed (as the built-in Bernoulli VAE); grey levels in [0, 1] otherwise.
        labels: the programs take the class labels ``y`` ``(B,)`` int64 as their second argument.
        encode: optional ``encode(x[, y]) -> (B, d)``, a point summary of the code of each example (``latent.png``).
        reconstruct: optional ``reconstruct(x[, y]) -> (B, D)``, pixel means in [0, 1] (``reconstructions.png``).
        sample: optional ``sample(n[, y]) -> (n, D)``, pixel means of p(x | z) for ``z`` from the prior, ``y`` ``(n,)``
            classes when ``labels`` (``samples.png``).
        decode: optional ``decode(z[, y]) -> (B, D)``, pixel means of p(x | z) for codes ``z`` ``(B, d)`` of the guide's
            first latent site (the one the decoder reads), laid out as :func:`ppl_vae.use.encode` gives them: what
            ``ppl-vae traverse`` and ``ppl-vae interpolate`` decode (:mod:`ppl_vae.use`).
        scale_head: optional :class:`~ppl_vae.heads.HeadLayer`: where the Normal guide's scale head sits and how to
            rebuild the program with another head (the KL lab's heads study, ``--heads``).
        pyro_name: the name of the one ``pyro.module`` that registers every parameter when it is specific to this
            process (the built-in VAE's ``vae0``): taken off the parameters' names in the saved optimizer state, so
            that a run resumes in another process; ``None`` keeps the parameter store's names.
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
    pyro_name: str | None = None
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


def as_user_program(trained) -> UserProgram:
    """``trained`` itself, or the built-in :class:`~ppl_vae.vae.VAE` seen as a :class:`UserProgram` (its programs,
    the VAE as the modules, its ``pyro_name``, and its ``encode`` (the guide's ``loc``), ``reconstruct`` and
    ``sample``), so that code serving both handles one kind of object."""
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
        pyro_name=trained.pyro_name,
    )


def is_random_site(site: dict) -> bool:
    """A sample site that carries a log-density: not a plate's subsample site, not ``pyro.deterministic``."""
    return site["type"] == "sample" and not site_is_subsample(site) and not site["infer"].get("_deterministic", False)


def program_args(x: torch.Tensor, args: Sequence = (), y: torch.Tensor | None = None) -> tuple:
    """The arguments after ``x``: ``args``, or ``(y,)`` for the older ``y=`` keyword (not both)."""
    if y is not None:
        if args:
            raise InputError("pass the labels either as y= or inside args=, not both")
        return (y,)
    return tuple(args)


def split_args(args: Sequence, num_examples: int, start: int, stop: int) -> tuple:
    """``args`` for the examples ``start:stop``: a tensor whose first dimension has ``num_examples`` entries (labels,
    per-example masks) is sliced with ``x``; every other argument is passed as it is."""
    return tuple(
        arg[start:stop] if isinstance(arg, torch.Tensor) and arg.dim() >= 1 and arg.shape[0] == num_examples else arg
        for arg in args
    )


def inspect_programs(
    model: Callable, guide: Callable, x: torch.Tensor, *args, data_plate: str | None = None
) -> ProgramSites:
    """Trace ``guide(x, *args)`` once and ``model`` replayed on it, and describe the pair (see :class:`ProgramSites`).

    Raises :class:`~ppl_vae.errors.InputError` when the pair breaks the contract: no observed site, no plate of
    ``x.shape[0]`` examples around every latent and observed site (or several, and none named), a subsampled plate
    (the data plate or any other: evaluation ignores scales, so a subsample would stand for the whole), a latent site
    of the model that the guide does not sample, or a ``data_plate`` that the programs lack.
    """
    guide_trace, model_trace = trace_programs(model, guide, x, *args)
    latent = tuple(name for name, site in guide_trace.nodes.items() if is_random_site(site) and not site["is_observed"])
    observed = tuple(name for name, site in model_trace.nodes.items() if is_random_site(site) and site["is_observed"])
    model_only = [
        name
        for name, site in model_trace.nodes.items()
        if is_random_site(site) and not site["is_observed"] and name not in latent
    ]
    if model_only:
        raise InputError(
            f"the model samples {', '.join(map(repr, model_only))} but the guide does not: every latent site of the "
            "model needs a guide site of the same name (sample it in the guide, or observe it)"
        )
    if not observed:
        raise InputError("the model has no observed site: pass the data as obs=x to pyro.sample inside the data plate")
    per_example = [(name, model_trace.nodes[name]) for name in observed] + [
        (name, guide_trace.nodes[name]) for name in latent
    ]
    frame = _data_frame(per_example, x.shape[0], data_plate)
    frames = [
        f
        for trace in (guide_trace, model_trace)
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for f in site["cond_indep_stack"]
        if f.vectorized
    ]
    for f in frames:
        if f.full_size is not None and f.full_size != f.size:
            raise InputError(
                f"the plate {f.name!r} subsamples {f.size} of {f.full_size}: evaluation ignores the subsampling scale, "
                f"so per-example numbers need every entry: pyro.plate({f.name!r}, {f.full_size}) without subsample_size"
            )
    enumerated = tuple(name for name in latent if guide_trace.nodes[name]["infer"].get("enumerate") is not None)
    return ProgramSites(
        data_plate=frame.name,
        data_dim=frame.dim,
        max_plate_nesting=max(-f.dim for f in frames),
        latent=latent,
        observed=observed,
        enumerated=enumerated,
    )


def trace_programs(model: Callable, guide: Callable, x: torch.Tensor, *args):
    """One trace of ``guide(x, *args)`` and of ``model`` replayed on it, without gradients, hidden from any handler
    around the call, leaving the RNG as it was: ``(guide_trace, model_trace)``, with their param sites."""
    with torch.no_grad(), poutine.block(), rng_preserved(x.device):
        guide_trace = poutine.trace(guide).get_trace(x, *args)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, *args)
    return guide_trace, model_trace


class _AtMeans(Messenger):
    """Every latent sample site takes its distribution's mean instead of a draw (observed sites are left alone)."""

    def _process_message(self, msg) -> None:
        if msg["type"] != "sample" or msg["is_observed"] or site_is_subsample(msg) or msg["value"] is not None:
            return
        fn = msg["fn"]
        if fn.support.is_discrete:
            raise InputError(f"latent site {msg['name']!r} is discrete: it has no mean to run the guide at")
        try:
            msg["value"] = fn.mean
        except NotImplementedError:
            raise InputError(
                f"latent site {msg['name']!r} of the guide is a {type(fn).__name__}, which has no analytic mean "
                "(a flow?): expected a Normal (or another distribution with a mean and a variance)"
            ) from None


def guide_at_means(guide: Callable, x: torch.Tensor, *args):
    """One trace of ``guide(x, *args)`` in which every latent site takes the mean of its distribution rather than a
    draw, without gradients, hidden from any handler around the call; it draws nothing.

    A site whose distribution depends on other latent sites (``q(z2 | z1)``) is thus read at their means
    (``q(z2 | z1 = E[z1 | x])``): the result is a function of ``x`` alone. Each site's ``"fn"`` is its distribution
    there (batch shape from the plates, as in any trace). A discrete site, or one without an analytic mean (a flow),
    is an :class:`~ppl_vae.errors.InputError` naming it.
    """
    with torch.no_grad(), poutine.block():
        return poutine.trace(_AtMeans()(guide)).get_trace(x, *args)


def prior_trace(model: Callable, x: torch.Tensor, num_samples: int, *args, sites: ProgramSites):
    """One trace of ``model(x, *args)`` run without a guide, under the workbench's plate of ``num_samples`` draws
    (left of every user plate), without gradients: every latent site is drawn from its prior ``p(z_s | parents)``, so
    its values are ``num_samples x B`` draws of the model's marginal prior (for a prior that does not read ``x``).
    The observed sites keep ``x``."""
    with torch.no_grad(), poutine.block(), pyro.plate(IMPORTANCE_PLATE, num_samples, dim=sites.sample_dim):
        return poutine.trace(model).get_trace(x, *args)


@contextmanager
def rng_preserved(device: torch.device):
    """Draws made inside leave torch's RNG (on the CPU and on ``device``), Python's ``random`` and NumPy's as they found
    them: looking at a program (which may draw from any of them) must not change the numbers that the next seeded
    computation gives."""
    python, numpy = random.getstate(), np.random.get_state()
    try:
        cuda = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)


def _data_frame(sites: list[tuple[str, dict]], num_examples: int, named: str | None):
    """The plate frame around every per-example site whose size is the number of examples (or the one ``named``)."""
    common = None
    for _, site in sites:
        frames = {f for f in site["cond_indep_stack"] if f.vectorized}
        common = frames if common is None else common & frames
    if named is not None:
        matches = [f for f in common if f.name == named]
        if not matches:
            outside = [name for name, site in sites if named not in {f.name for f in site["cond_indep_stack"]}]
            raise InputError(
                f"data_plate {named!r}: sites {', '.join(map(repr, outside)) or '(none)'} are not inside a vectorized "
                f"plate of that name; every latent and observed site must be"
            )
        frame = matches[0]
    else:
        candidates = [f for f in common if f.size == num_examples or f.full_size == num_examples]
        if not candidates:
            everywhere = {f.name for _, site in sites for f in site["cond_indep_stack"]}
            outside = [
                name for name, site in sites if not any(f.size == num_examples for f in site["cond_indep_stack"])
            ]
            raise InputError(
                f"no plate of {num_examples} examples (x.shape[0]) holds every latent and observed site: "
                f"{', '.join(map(repr, outside)) or 'the sites'} lie outside it (plates seen: "
                f"{', '.join(sorted(everywhere)) or 'none'}). Put every site inside pyro.plate('data', x.shape[0]); "
                "a global latent has no per-example value"
            )
        if len(candidates) > 1:
            names = ", ".join(sorted(f.name for f in candidates))
            raise InputError(f"several plates of {num_examples} examples ({names}): name the data plate, data_plate=")
        frame = candidates[0]
    if frame.full_size is not None and frame.full_size != frame.size:
        raise InputError(
            f"the data plate {frame.name!r} subsamples {frame.size} of {frame.full_size}: per-example numbers need "
            f"pyro.plate({frame.name!r}, x.shape[0]) without subsample_size (the workbench draws the minibatches)"
        )
    if frame.size != num_examples:
        raise InputError(f"the data plate {frame.name!r} has size {frame.size}, but x has {num_examples} examples")
    return frame


def importance_traces(
    model: Callable, guide: Callable, x: torch.Tensor, num_samples: int, *args, sites: ProgramSites | None = None
):
    """The guide's trace and the model's trace replayed on it, for ``num_samples`` draws per example, without
    gradients. Every latent site's value carries the sample dimension at ``sites.sample_dim``, left of every user
    plate: for the built-in VAE ``z`` is ``(num_samples, B, z_dim)``. Returns ``(guide_trace, model_trace, sites)``."""
    sites = sites or inspect_programs(model, guide, x, *args)
    with torch.no_grad(), pyro.plate(IMPORTANCE_PLATE, num_samples, dim=sites.sample_dim):
        guide_trace = poutine.trace(guide).get_trace(x, *args)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, *args)
    return guide_trace, model_trace, sites


def site_layout(values: torch.Tensor, event_dim: int, name: str, sites: ProgramSites) -> torch.Tensor:
    """A per-site tensor (the site's batch dimensions, which follow its plates, then ``event_dim`` event dimensions)
    laid out per sample and example: ``(S or 1, B or 1, *other plate dimensions, *event dimensions)``.

    The batch dimensions are padded on the left to the depth of the sample plate; the data plate's dimension moves
    to position 1; every other plate dimension (nested in the data plate, or left of it) keeps its order after it.
    """
    depth = sites.max_plate_nesting + 1
    batch_dims = values.dim() - event_dim
    if batch_dims > depth:
        raise InputError(
            f"site {name!r} has batch shape {tuple(values.shape[:batch_dims])}, deeper than the "
            f"{sites.max_plate_nesting} plate(s) around it: declare its event dimensions with .to_event(n)"
        )
    values = values.reshape((1,) * (depth - batch_dims) + tuple(values.shape))
    return values.movedim(depth + sites.data_dim, 1)


def site_units(values: torch.Tensor, event_dim: int, name: str, sites: ProgramSites, shape: tuple[int, int]):
    """:func:`site_layout` flattened to ``(S, B, U)``: one column per unit, a unit being one position in the plates
    other than the sample and data plates times one element of the event (``U = z_dim`` for the built-in ``z``)."""
    values = site_layout(values, event_dim, name, sites)
    return values.expand(*shape, *values.shape[2:]).reshape(*shape, -1)


def site_log_prob(site: dict, sites: ProgramSites, shape: tuple[int, int]) -> torch.Tensor:
    """One site's log-density per sample and example, ``shape`` = ``(S, B)``, nats: the site's ``log_prob`` times its
    mask (not its scale), summed over every plate nested in the data plate."""
    log_prob = scale_and_mask(site["fn"].log_prob(site["value"]), mask=site["mask"])
    if not isinstance(log_prob, torch.Tensor):  # a log-density that is the number 0, on the site's device
        value = site["value"]
        log_prob = torch.as_tensor(log_prob, device=value.device if isinstance(value, torch.Tensor) else None)
    log_prob = site_layout(log_prob, 0, site["name"], sites)
    if log_prob.dim() > 2:
        log_prob = log_prob.sum(tuple(range(2, log_prob.dim())))
    return log_prob.expand(shape)


def trace_log_prob(trace, sites: ProgramSites, shape: tuple[int, int], names: Sequence[str] | None = None):
    """The sum of :func:`site_log_prob` over the random sites of ``trace`` (or the sites ``names``): ``(S, B)``, on
    the sites' device, in their dtype (zeros in the default dtype on the trace's device when no site is summed)."""
    total = None
    for name, site in trace.nodes.items():
        if is_random_site(site) and (names is None or name in names):
            log_prob = site_log_prob(site, sites, shape)
            total = log_prob.contiguous() if total is None else total + log_prob
    if total is None:
        values = [site["value"] for site in trace.nodes.values() if isinstance(site.get("value"), torch.Tensor)]
        return torch.zeros(shape, dtype=torch.get_default_dtype(), device=values[0].device if values else None)
    return total


def trace_log_weights(guide_trace, model_trace, sites: ProgramSites) -> torch.Tensor:
    """``log p(x, z_s) - log q(z_s | x)`` ``(S, B)`` of traces from :func:`importance_traces`, nats."""
    shape = _trace_shape(guide_trace, sites)
    return trace_log_prob(model_trace, sites, shape) - trace_log_prob(guide_trace, sites, shape)


def _trace_shape(guide_trace, sites: ProgramSites) -> tuple[int, int]:
    """``(S, B)`` of a guide trace drawn by :func:`importance_traces`: the sizes of its sample and data plates."""
    sizes = {
        frame.name: frame.size
        for site in guide_trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
    }
    return sizes[IMPORTANCE_PLATE], sizes[sites.data_plate]


def latent_parents(program: Callable, guide_trace, x: torch.Tensor, *args, sites: ProgramSites):
    """For each latent site, the other latent sites whose values its distribution in ``program`` (the guide, or the
    model) depends on directly: ``{"z1": (), "z2": ()}`` for a mean-field guide, ``{"z1": (), "z2": ("z1",)}`` for
    q(z1 | x) q(z2 | z1); of the model p(z2) p(z1 | z2), ``{"z1": ("z2",), "z2": ()}``.

    ``guide_trace`` comes from :func:`importance_traces` (its first two draws are used). ``program`` is replayed on
    those draws once as they are and once per latent site ``u`` with only ``u``'s values shifted by one draw and one
    example (``roll`` along the sample and data dimensions: the shifted values are values of ``u``'s support,
    whatever it is, real, integer or simplex); a site depends on ``u`` when its distribution gives another
    ``log_prob`` at its own unshifted value (masks of the distribution taken off, so a masked-out site shows its
    dependence too). Every replay starts from the same RNG state and draws nothing at sample sites, so randomness of
    the program's own (dropout) is the same in each and does not look like a dependence; the RNG is left as it was.

    This sees every direct dependence: through non-differentiable operations (rounding, comparisons, indexing) and on
    discrete latent sites alike. A shift that changes none of ``u``'s values (one draw of one example, or a discrete
    site with a single value everywhere) reveals nothing, and every other site then counts as depending on ``u``: the
    safe side for each caller (a Monte Carlo KL rather than a closed form; ``meanfield`` refused).

    Returns:
        ``{site: parents}``, one entry per latent site in ``sites.latent`` order, parents in that order too.
    """
    num_samples = min(2, _trace_shape(guide_trace, sites)[0])
    drawn, shifted, moved = poutine.Trace(), {}, set()
    for name in sites.latent:
        site = guide_trace.nodes[name]
        value = site["value"]
        batch_dims = value.dim() - site["fn"].event_dim
        sample_dim, data_dim = batch_dims + sites.sample_dim, batch_dims + sites.data_dim
        if sample_dim >= 0:
            value = value.narrow(sample_dim, 0, num_samples)
        drawn.add_node(name, **{**site, "value": value})
        dims = [dim for dim in (sample_dim, data_dim) if dim >= 0]
        shifted[name] = value.roll([1] * len(dims), dims)
        if not torch.equal(shifted[name], value):
            moved.add(name)

    def replay(trace):
        with rng_preserved(x.device):
            return poutine.trace(poutine.replay(program, trace=trace)).get_trace(x, *args)

    def log_probs(trace) -> dict[str, torch.Tensor]:
        return {name: _unmasked(trace.nodes[name]["fn"]).log_prob(drawn.nodes[name]["value"]) for name in sites.latent}

    with torch.no_grad(), poutine.block(), pyro.plate(IMPORTANCE_PLATE, num_samples, dim=sites.sample_dim):
        before = log_probs(replay(drawn))
        parents = {name: [] for name in sites.latent}
        for parent in sites.latent:
            others = [name for name in sites.latent if name != parent]
            if parent not in moved:
                for name in others:
                    parents[name].append(parent)
                continue
            one_shifted = poutine.Trace()
            for name, site in drawn.nodes.items():
                one_shifted.add_node(name, **{**site, "value": shifted[name] if name == parent else site["value"]})
            after = log_probs(replay(one_shifted))
            for name in others:
                if not _same(before[name], after[name]):
                    parents[name].append(parent)
    return {name: tuple(p for p in sites.latent if p in parents[name]) for name in sites.latent}


def _unmasked(fn):
    """``fn`` without its outer ``MaskedDistribution`` wrappers (``Distribution.mask``)."""
    while isinstance(fn, MaskedDistribution):
        fn = fn.base_dist
    return fn


def _same(before: torch.Tensor, after: torch.Tensor) -> bool:
    """Equal log-densities, up to a few units of rounding (replays of the same computation)."""
    tolerance = 16 * torch.finfo(before.dtype).eps
    return before.shape == after.shape and torch.allclose(before, after, tolerance, tolerance, equal_nan=True)


def log_importance_weights(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    num_samples: int,
    y: torch.Tensor | None = None,
    *,
    args: Sequence = (),
    sites: ProgramSites | None = None,
) -> torch.Tensor:
    """``log p(x, z_s) - log q(z_s | x)`` for ``num_samples`` draws per example, in one vectorized pass.

    Arguments:
        model, guide: Pyro programs keeping the contract, called as ``model(x, *args)``.
        x: observations ``(B, ...)``.
        num_samples: draws per example (the workbench's plate, left of every user plate).
        y: labels ``(B,)``, the programs' second argument (the older spelling of ``args=(y,)``).
        args: extra arguments of both programs.
        sites: the pair's :class:`ProgramSites`, when already known.

    Returns:
        ``(num_samples, B)`` log weights, nats; masks honoured, scales ignored (the true joint).
    """
    args = program_args(x, args, y)
    guide_trace, model_trace, sites = importance_traces(model, guide, x, num_samples, *args, sites=sites)
    return trace_log_weights(guide_trace, model_trace, sites)


def example_batches(x: torch.Tensor, args: Sequence, batch_size: int) -> Iterator[tuple[torch.Tensor, tuple]]:
    """``(x[start:stop], args for those examples)`` for consecutive batches of ``batch_size`` examples."""
    for start in range(0, x.shape[0], batch_size):
        stop = min(start + batch_size, x.shape[0])
        yield x[start:stop], split_args(args, x.shape[0], start, stop)
