"""ppl_vae: variational autoencoders written the Pyro way, evaluated honestly.

Example::

    import ppl_vae

    data = ppl_vae.load_dataset("digits")
    vae = ppl_vae.VAE(ppl_vae.model_config_for(data, z_dim=8))
    history = ppl_vae.fit(vae, data, ppl_vae.TrainConfig(epochs=10))
    print(ppl_vae.iwae_log_likelihood(vae.model, vae.guide, ppl_vae.observed_test_set(data.x_test, True), k=1000))
"""

from ppl_vae.arviz_export import to_inference_data
from ppl_vae.config import DataConfig, EvalConfig, ModelConfig, ProgramSpec, RunConfig, TrainConfig
from ppl_vae.data import Dataset, load_dataset
from ppl_vae.diagnostics import Diagnostics, diagnose
from ppl_vae.errors import InputError
from ppl_vae.evaluate import Estimate, elbo, iwae_log_likelihood, log_importance_weights, observed_test_set
from ppl_vae.heads import HeadLayer
from ppl_vae.inference_gap import InferenceGap, inference_gap
from ppl_vae.programs import UserProgram
from ppl_vae.report import ReportConfig, write_report
from ppl_vae.run import evaluate_run, load, model_config_for, program_spec_for, train_run
from ppl_vae.semisupervised import SemiSupervisedVAE, discrete_program
from ppl_vae.train import fit
from ppl_vae.vae import VAE

__all__ = [
    "VAE",
    "DataConfig",
    "Dataset",
    "Diagnostics",
    "Estimate",
    "EvalConfig",
    "HeadLayer",
    "InferenceGap",
    "InputError",
    "ModelConfig",
    "ProgramSpec",
    "ReportConfig",
    "RunConfig",
    "SemiSupervisedVAE",
    "TrainConfig",
    "UserProgram",
    "diagnose",
    "discrete_program",
    "elbo",
    "evaluate_run",
    "fit",
    "inference_gap",
    "iwae_log_likelihood",
    "load",
    "load_dataset",
    "log_importance_weights",
    "model_config_for",
    "observed_test_set",
    "program_spec_for",
    "to_inference_data",
    "train_run",
    "write_report",
]
