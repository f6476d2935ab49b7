"""Shared fixtures: the digits data set (loaded once), a clean Pyro state for every test, a one-epoch run folder."""

import shutil

import pyro
import pytest
import torch
from cli_checks import SMALL_RUN

from ppl_vae.data import load_dataset
from ppl_vae.run import model_config_for


@pytest.fixture(autouse=True)
def clean_pyro_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture
def small_config(digits):
    """A small model on the digits: 64 pixels, 4 latent dimensions, one hidden layer of 32."""
    return model_config_for(digits, z_dim=4, hidden=(32,))


@pytest.fixture(scope="session")
def trained_vae(digits):
    """A small VAE after 5 epochs on the digits (z_dim 4, hidden 32): its guide is informative but imperfect."""
    from ppl_vae.config import TrainConfig
    from ppl_vae.train import fit, seed_everything
    from ppl_vae.vae import VAE

    seed_everything(0)
    vae = VAE(model_config_for(digits, z_dim=4, hidden=(32,)))
    fit(vae, digits, TrainConfig(epochs=5, lr=3e-3, eval_every=5), progress=False)
    return vae


@pytest.fixture
def float64():
    """Every new tensor float64 by default, for tests that compare numbers to tight tolerances."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(scope="session")
def one_epoch_run(tmp_path_factory):
    """A run folder of ``ppl-vae train --epochs 1`` with :data:`cli_checks.SMALL_RUN` (trained once per session)."""
    from ppl_vae.cli import main

    run_dir = tmp_path_factory.mktemp("one-epoch") / "run"
    assert main(["train", "--epochs", "1", *SMALL_RUN, "--out", str(run_dir)]) == 0
    return run_dir


@pytest.fixture
def run_dir(one_epoch_run, tmp_path):
    """A copy of :func:`one_epoch_run` that the test may damage, resume or evaluate."""
    copy = tmp_path / "run"
    shutil.copytree(one_epoch_run, copy)
    return copy
