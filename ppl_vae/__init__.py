"""ppl_vae: variational autoencoders written the Pyro way, evaluated honestly.

Example::

    import ppl_vae

    data = ppl_vae.load_dataset("digits")
    vae = ppl_vae.VAE(ppl_vae.model_config_for(data, z_dim=8))
    history = ppl_vae.fit(vae, data, ppl_vae.TrainConfig(epochs=10))
    print(ppl_vae.iwae_log_likelihood(vae.model, vae.guide, ppl_vae.observed_test_set(data.x_test, True), k=1000))
"""

import importlib

_EXPORTS = {
    "VAE": "ppl_vae.vae",
    "DataConfig": "ppl_vae.config",
    "Dataset": "ppl_vae.data",
    "Diagnostics": "ppl_vae.diagnostics",
    "Estimate": "ppl_vae.evaluate",
    "EvalConfig": "ppl_vae.config",
    "HeadLayer": "ppl_vae.heads",
    "InferenceGap": "ppl_vae.inference_gap",
    "InputError": "ppl_vae.errors",
    "ModelConfig": "ppl_vae.config",
    "ProgramSpec": "ppl_vae.config",
    "ReportConfig": "ppl_vae.report",
    "RunConfig": "ppl_vae.config",
    "SemiSupervisedVAE": "ppl_vae.semisupervised",
    "TrainConfig": "ppl_vae.config",
    "UserProgram": "ppl_vae.programs",
    "diagnose": "ppl_vae.diagnostics",
    "discrete_program": "ppl_vae.semisupervised",
    "elbo": "ppl_vae.evaluate",
    "evaluate_run": "ppl_vae.run",
    "fit": "ppl_vae.train",
    "inference_gap": "ppl_vae.inference_gap",
    "iwae_log_likelihood": "ppl_vae.evaluate",
    "load": "ppl_vae.run",
    "load_dataset": "ppl_vae.data",
    "log_importance_weights": "ppl_vae.evaluate",
    "model_config_for": "ppl_vae.run",
    "observed_test_set": "ppl_vae.evaluate",
    "program_spec_for": "ppl_vae.run",
    "to_inference_data": "ppl_vae.arviz_export",
    "train_run": "ppl_vae.run",
    "write_report": "ppl_vae.report",
}
"""Each public name and the module that defines it: imported on first use (PEP 562), so that ``import ppl_vae`` and
the command line start without loading torch, Pyro and ArviZ before they are needed (and a Ctrl-C while they load is
caught: :mod:`ppl_vae.console`)."""

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ppl_vae' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
