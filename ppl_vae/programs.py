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

Example::

    sites = inspect_programs(vae.model, vae.guide, x)          # ProgramSites(data_plate='data', latent=('z',), ...)
    log_w = log_importance_weights(vae.model, vae.guide, x, num_samples=100)    # (100, B)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ppl_vae.errors import InputError

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


def latent_dependencies(guide: Callable, x: torch.Tensor, *args, sites: ProgramSites) -> dict[str, tuple[str, ...]]:
    """For each latent site of ``guide``, the other latent sites whose values its distribution depends on: every entry
    ``()`` for a mean-field guide; ``{"z1": (), "z2": ("z1",)}`` for q(z1 | x) q(z2 | z1).

    The guide runs once to draw values, then again with every latent site conditioned on its value as a fresh leaf
    tensor; site ``s`` depends on site ``u`` when the autograd graph of ``log q_s`` at its own (detached) value reaches
    ``u``'s leaf. Only real-valued latent values can be leaves: a dependence on a discrete (integer) latent site is not
    seen. The RNG is left as it was.
    """
    with poutine.block(), rng_preserved(x.device):
        with torch.no_grad():
            drawn = poutine.trace(guide).get_trace(x, *args)
        leaves = {}
        for name in sites.latent:
            value = drawn.nodes[name]["value"].detach()
            leaves[name] = value.clone().requires_grad_() if value.is_floating_point() else value
        with torch.enable_grad():
            conditioned = poutine.trace(poutine.condition(guide, data=leaves)).get_trace(x, *args)
            dependencies = {}
            for name in sites.latent:
                site = conditioned.nodes[name]
                others = [other for other in sites.latent if other != name and leaves[other].requires_grad]
                log_prob = site["fn"].log_prob(site["value"].detach())
                if not others or not log_prob.requires_grad:
                    dependencies[name] = ()
                    continue
                inputs = [leaves[other] for other in others]
                grads = torch.autograd.grad(log_prob.sum(), inputs, retain_graph=True, allow_unused=True)
                dependencies[name] = tuple(other for other, grad in zip(others, grads, strict=True) if grad is not None)
    return dependencies


def rng_preserved(device: torch.device):
    """Draws made inside leave torch's RNG (on the CPU and on ``device``) as they found it: looking at a program must
    not change the numbers that the next seeded computation gives."""
    return torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else [])


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
    if not isinstance(log_prob, torch.Tensor):
        log_prob = torch.as_tensor(log_prob)
    log_prob = site_layout(log_prob, 0, site["name"], sites)
    if log_prob.dim() > 2:
        log_prob = log_prob.sum(tuple(range(2, log_prob.dim())))
    return log_prob.expand(shape)


def trace_log_prob(trace, sites: ProgramSites, shape: tuple[int, int], names: Sequence[str] | None = None):
    """The sum of :func:`site_log_prob` over the random sites of ``trace`` (or the sites ``names``): ``(S, B)``."""
    total = torch.zeros(shape, dtype=torch.get_default_dtype())
    for name, site in trace.nodes.items():
        if is_random_site(site) and (names is None or name in names):
            log_prob = site_log_prob(site, sites, shape)
            total = total.to(log_prob) + log_prob  # follows the sites' device and dtype
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


def conditioned_sites(program: Callable, program_trace, guide_trace, x: torch.Tensor, *args, sites: ProgramSites):
    """The latent sites whose distribution in ``program`` depends on the values of other latent sites.

    ``guide_trace`` and ``program_trace`` come from :func:`importance_traces` (``program`` is the model, replayed on
    the guide's draws, or the guide itself). ``program`` is replayed once more with the values of every latent site
    shifted by one draw and one example (``roll`` along the sample and the data dimension), so that each site's
    parents take other values while ``x`` and ``args`` stay; a site whose distribution gives a different
    ``log_prob`` at the same point then depends on another latent site. The replay draws nothing and leaves the RNG
    as it was. With a single draw of a single example nothing can be shifted: every site counts as conditioned.

    Returns a ``frozenset`` of site names.
    """
    num_samples, num_examples = _trace_shape(guide_trace, sites)
    if num_samples == 1 and num_examples == 1:
        return frozenset(sites.latent)
    shifted = poutine.Trace()
    for name in sites.latent:
        site = guide_trace.nodes[name]
        batch_dims = site["value"].dim() - site["fn"].event_dim
        dims = [batch_dims + dim for dim in (sites.sample_dim, sites.data_dim) if batch_dims + dim >= 0]
        shifted.add_node(name, **{**site, "value": site["value"].roll([1] * len(dims), dims)})
    with (
        torch.no_grad(),
        poutine.block(),
        rng_preserved(x.device),
        pyro.plate(IMPORTANCE_PLATE, num_samples, dim=sites.sample_dim),
    ):
        replayed = poutine.trace(poutine.replay(program, trace=shifted)).get_trace(x, *args)
    conditioned = set()
    for name in sites.latent:
        point = shifted.nodes[name]["value"]
        before = program_trace.nodes[name]["fn"].log_prob(point)
        after = replayed.nodes[name]["fn"].log_prob(point)
        tolerance = 16 * torch.finfo(before.dtype).eps
        same = before.shape == after.shape and torch.allclose(before, after, tolerance, tolerance, equal_nan=True)
        if not same:
            conditioned.add(name)
    return frozenset(conditioned)


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
