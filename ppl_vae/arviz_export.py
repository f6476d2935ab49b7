"""ArviZ export: draws of the guide, the log-likelihood and the importance weights as an ``az.InferenceData``.

For ``S`` draws ``z_s ~ q(z | x_i)`` per example (one chain), the groups are::

    posterior          one variable per latent site, named after it:  (chain, draw, example, *plates, *event)
                       draws of the guide q(z | x) (approximate posterior)
    log_likelihood     one variable per observed site, named after it: (chain, draw, example)
                       log p(x_obs | z_s), nats, summed over the site's event and the plates nested in the data
                       plate, masks honoured
    importance_weights log_weight  (chain, draw, example)     log p(x_i, z_s) - log q(z_s | x_i), nats
                       pareto_k    (example)                  PSIS k-hat of those weights (-inf: constant weights)
                       ess         (example)                  effective sample size of those weights
    observed_data      one variable per observed site: its observed values, (example, *plates, *event)

A dimension of a plate other than the data plate is named after the plate; an event dimension ``j`` of site ``s`` is
``s_dim_j``, except for the conventions of the built-in VAE: the event of the only latent site, when it has one
event dimension, is ``latent``, and that of the only observed site ``pixel``. ArviZ's functions apply directly::

    idata = to_inference_data(vae, x_test[:50], num_samples=500)
    az.summary(idata, var_names=["z"], coords={"example": [0]}, kind="stats")
    az.plot_posterior(idata, var_names=["z"], coords={"example": [0]})
    az.plot_khat(idata.importance_weights.pareto_k)     # or ppl_vae.plots.plot_khat
    idata.to_netcdf("posterior.nc")

``importance_weights`` is a group of its own (ArviZ keeps groups outside its scheme, in memory and in netCDF).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ppl_vae.diagnostics import effective_sample_size, import_arviz, pareto_khat
from ppl_vae.evaluate import MAX_ELEMENTS, inspected_batches, sample_chunks
from ppl_vae.programs import (
    ProgramSites,
    importance_traces,
    program_args,
    site_layout,
    site_log_prob,
    trace_log_weights,
)


def to_inference_data(
    vae,
    x: torch.Tensor,
    num_samples: int,
    batch_size: int = 256,
    max_elements: int = MAX_ELEMENTS,
    *,
    args: Sequence = (),
    y: torch.Tensor | None = None,
    data_plate: str | None = None,
):
    """An ``az.InferenceData`` of ``num_samples`` guide draws per example of ``x`` ``(N, ...)`` (groups in the
    module's docstring).

    Arguments:
        vae: a :class:`~ppl_vae.vae.VAE`, or any object with Pyro programs ``model(x, *args)`` and
            ``guide(x, *args)`` that keep the program contract (:mod:`ppl_vae.programs`).
        x: observations ``(N, ...)``.
        num_samples: draws per example (at least ``MIN_KHAT_SAMPLES`` = 100, for the k-hat).
        batch_size, max_elements: examples at a time, and the bound on ``samples x examples x pixels`` per pass.
        args: the programs' extra arguments; ``y=`` is the older spelling of ``args=(y,)`` (labels).
        data_plate: the plate over the examples, when the programs have several of ``N``.

    Not sharded across a ``torch.distributed`` group: the export holds every draw of every site (``S x N`` values
    each), which gathering to one rank would cost as much memory as drawing them there, and one process writes it;
    call it on one rank (its draws continue that rank's RNG).
    """
    az = import_arviz()
    import xarray as xr

    batches, sites = inspected_batches(vae.model, vae.guide, x, program_args(x, args, y), batch_size, data_plate)
    parts, observed = [], []  # per batch: every quantity's draws, every observed site's values
    for xb, argsb in batches:
        chunks = [
            _draw(vae.model, vae.guide, xb, argsb, size, sites) for size in sample_chunks(xb, num_samples, max_elements)
        ]
        parts.append({key: torch.cat([chunk[0][key] for chunk in chunks]) for key in chunks[0][0]})
        observed.append(chunks[0][1])
    values = {key: torch.cat([part[key] for part in parts], dim=1) for key in parts[0]}  # (S, N, ...) each
    observed = {name: torch.cat([part[name] for part in observed]) for name in sites.observed}  # (N, ...) each
    log_weight = values.pop("log_weight")
    khat = pareto_khat(log_weight.T)
    ess = effective_sample_size(log_weight.T)
    names = chunks[0][2]

    def array(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().cpu().numpy()

    def dataset(variables: dict) -> xr.Dataset:
        return xr.Dataset(variables, attrs={"units": "nats"})

    draws = ("chain", "draw", "example")
    return az.InferenceData(
        posterior=dataset({name: ((*draws, *names[name]), array(values[name])[None]) for name in sites.latent}),
        log_likelihood=dataset({name: (draws, array(values[f"log p({name})"])[None]) for name in sites.observed}),
        importance_weights=dataset(
            {
                "log_weight": (draws, array(log_weight)[None]),
                "pareto_k": (("example",), array(khat)),
                "ess": (("example",), array(ess)),
            }
        ),
        observed_data=dataset({name: (("example", *names[name]), array(observed[name])) for name in sites.observed}),
    )


def _draw(model, guide, x: torch.Tensor, args: tuple, num_samples: int, sites: ProgramSites):
    """One pass of ``num_samples`` draws. Returns ``(draws, observed, names)``: ``draws`` holds every latent site's
    values ``(S, B, *plates, *event)``, every observed site's ``log p(x_obs | z)`` ``(S, B)`` (key
    ``"log p(name)"``) and the log weights ``(S, B)``; ``observed`` every observed site's values ``(B, *plates,
    *event)``; ``names`` the dimension names after ``(S, B)`` of every site."""
    guide_trace, model_trace, _ = importance_traces(model, guide, x, num_samples, *args, sites=sites)
    shape = (num_samples, x.shape[0])
    draws, observed, names = {"log_weight": trace_log_weights(guide_trace, model_trace, sites)}, {}, {}
    for name in sites.latent:
        draws[name], names[name] = _per_example(guide_trace.nodes[name], sites, shape, "latent", len(sites.latent))
    for name in sites.observed:
        draws[f"log p({name})"] = site_log_prob(model_trace.nodes[name], sites, shape)
        values, names[name] = _per_example(model_trace.nodes[name], sites, shape, "pixel", len(sites.observed))
        observed[name] = values[0]
    return draws, observed, names


def _per_example(site: dict, sites: ProgramSites, shape: tuple[int, int], single: str, count: int):
    """A site's value as ``(S, B, *plates, *event)`` (the plates other than the sample and data plates that hold the
    site; broadcast dimensions of size 1 dropped) and the names of the dimensions after ``(S, B)``: plates by name,
    event dimensions ``{site}_dim_{j}``, or ``single`` for the only site of its kind with one event dimension."""
    event_dim = site["fn"].event_dim
    values = site_layout(site["value"], event_dim, site["name"], sites)
    values = values.expand(*shape, *values.shape[2:])
    frames = {frame.dim: frame.name for frame in site["cond_indep_stack"] if frame.vectorized}
    plate_dims = [dim for dim in range(-sites.max_plate_nesting, 0) if dim != sites.data_dim]  # site_layout's order
    keep = [position + 2 for position, dim in enumerate(plate_dims) if dim in frames]
    dropped = [index for index in range(2, 2 + len(plate_dims)) if index not in keep]
    event = [single] if count == 1 and event_dim == 1 else [f"{site['name']}_dim_{j}" for j in range(event_dim)]
    names = [frames[dim] for dim in plate_dims if dim in frames] + event
    return (values.squeeze(tuple(dropped)) if dropped else values), names
