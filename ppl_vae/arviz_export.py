"""ArviZ export: draws of the guide, the log-likelihood and the importance weights as an ``az.InferenceData``.

For ``S`` draws ``z_s ~ q(z | x_i)`` per example (one chain), the groups are::

    posterior          z           (chain, draw, example, latent)   draws of the guide q(z | x) (approximate posterior)
    log_likelihood     x           (chain, draw, example)           log p(x_i | z_s), nats
    importance_weights log_weight  (chain, draw, example)           log p(x_i, z_s) - log q(z_s | x_i), nats
                       pareto_k    (example)                        PSIS k-hat of those weights (-inf: constant weights)
                       ess         (example)                        effective sample size of those weights
    observed_data      x           (example, pixel)                 the observations

so ArviZ's functions apply directly::

    idata = to_inference_data(vae, x_test[:50], num_samples=500)
    az.summary(idata, var_names=["z"], coords={"example": [0]}, kind="stats")
    az.plot_posterior(idata, var_names=["z"], coords={"example": [0]})
    az.plot_khat(idata.importance_weights.pareto_k)     # or ppl_vae.plots.plot_khat
    idata.to_netcdf("posterior.nc")

``importance_weights`` is a group of its own (ArviZ keeps groups outside its scheme, in memory and in netCDF).
"""

from __future__ import annotations

import numpy as np
import torch

from ppl_vae.diagnostics import effective_sample_size, import_arviz, pareto_khat
from ppl_vae.evaluate import MAX_ELEMENTS, sample_chunks
from ppl_vae.programs import importance_traces, trace_log_prob


def to_inference_data(vae, x: torch.Tensor, num_samples: int, batch_size: int = 256, max_elements: int = MAX_ELEMENTS):
    """An ``az.InferenceData`` of ``num_samples`` guide draws per example of ``x`` ``(N, D)`` (groups in the module's
    docstring).

    Arguments:
        vae: a :class:`~ppl_vae.vae.VAE`, or any object with Pyro programs ``model(x)`` and ``guide(x)`` over sites
            ``"z"`` and ``"x"`` in plate ``"data"``.
        x: observations ``(N, D)``.
        num_samples: draws per example (at least ``MIN_KHAT_SAMPLES`` = 100, for the k-hat).
        batch_size, max_elements: examples at a time, and the bound on ``samples x examples x pixels`` per pass.
    """
    az = import_arviz()
    import xarray as xr

    z, log_likelihood, log_weight = [], [], []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        parts = [_draw(vae.model, vae.guide, xb, size) for size in sample_chunks(xb, num_samples, max_elements)]
        for values, collected in zip(zip(*parts, strict=True), (z, log_likelihood, log_weight), strict=True):
            collected.append(torch.cat(values, dim=0))
    z, log_likelihood, log_weight = (torch.cat(values, dim=1) for values in (z, log_likelihood, log_weight))
    khat = pareto_khat(log_weight.T)
    ess = effective_sample_size(log_weight.T)

    def array(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().cpu().numpy()

    coords = {
        "chain": [0],
        "draw": np.arange(num_samples),
        "example": np.arange(x.shape[0]),
        "latent": np.arange(z.shape[-1]),
        "pixel": np.arange(x.shape[-1]),
    }
    draws = ("chain", "draw", "example")

    def dataset(variables: dict) -> xr.Dataset:
        used = {dim for dims, _ in variables.values() for dim in dims}
        return xr.Dataset(
            variables, coords={name: values for name, values in coords.items() if name in used}, attrs={"units": "nats"}
        )

    return az.InferenceData(
        posterior=dataset({"z": ((*draws, "latent"), array(z)[None])}),
        log_likelihood=dataset({"x": (draws, array(log_likelihood)[None])}),
        importance_weights=dataset(
            {
                "log_weight": (draws, array(log_weight)[None]),
                "pareto_k": (("example",), array(khat)),
                "ess": (("example",), array(ess)),
            }
        ),
        observed_data=dataset({"x": (("example", "pixel"), array(x))}),
    )


def _draw(model, guide, x: torch.Tensor, num_samples: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``z`` ``(S, B, z_dim)``, ``log p(x | z)`` ``(S, B)`` and the log weights ``(S, B)`` of one pass."""
    guide_trace, model_trace, sites = importance_traces(model, guide, x, num_samples)
    shape = (num_samples, x.shape[0])
    log_weight = trace_log_prob(model_trace, sites, shape) - trace_log_prob(guide_trace, sites, shape)
    log_likelihood = trace_log_prob(model_trace, sites, shape, names=sites.observed)
    return guide_trace.nodes["z"]["value"], log_likelihood, log_weight
