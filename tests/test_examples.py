"""Every example runs with short settings (they are thin: the library does the work); benchmarks: test_benchmarks."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pyro
import pytest
from idx_files import write_fake_mnist

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name, folder=EXAMPLES):
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart(tmp_path):
    metrics = load_example("quickstart").main(["--epochs", "1", "--k", "10", "--out", str(tmp_path / "run")])
    assert (tmp_path / "run" / "samples.png").exists() and metrics["epochs"] == 1


def test_mnist_from_local_idx_files(tmp_path):
    write_fake_mnist(tmp_path, "MNIST", np.random.default_rng(0), num_train=40, num_test=10)
    metrics = load_example("mnist").main(
        ["--data-root", str(tmp_path), "--epochs", "1", "--k", "5", "--out", str(tmp_path / "run")]
    )
    assert metrics["epochs"] == 1 and np.isfinite(metrics["test_log_likelihood"])


def test_pyro_vs_handwritten(tmp_path):
    out = tmp_path / "curves.json"
    curves = load_example("pyro_vs_handwritten").main(["--epochs", "1", "--seeds", "0", "--out", str(out)])
    assert set(curves) == set(json.loads(out.read_text())["curves"]) and len(curves) == 5


def test_digits_to_npz_feeds_the_npz_loader(tmp_path):
    from ppl_vae.data import load_dataset

    path = tmp_path / "digits12.npz"
    load_example("digits_to_npz").main(["--size", "12", "--out", str(path)])
    data = load_dataset(str(path))
    assert data.image_shape == (1, 12, 12) and data.x_train.shape == (1497, 144) and data.num_classes == 10


def test_flow_guide(tmp_path):
    load_example("flow_guide").main(["--epochs", "1", "--k", "10", "--out", str(tmp_path)])
    assert (tmp_path / "iaf" / "metrics.json").exists() and (tmp_path / "diagonal" / "metrics.json").exists()


def test_mc_vs_analytic_kl(tmp_path):
    load_example("mc_vs_analytic_kl").main(["--epochs", "1", "--repetitions", "5", "--out", str(tmp_path)])
    assert any(path.suffix == ".png" for path in tmp_path.rglob("*"))


def test_log_scale_vs_log_var(tmp_path):
    load_example("log_scale_vs_log_var").main(["--epochs", "1", "--out", str(tmp_path)])
    assert any(path.suffix == ".png" for path in tmp_path.rglob("*"))


@pytest.mark.parametrize("name", ["iwae", "beta_vae_annealing"])
def test_objective_examples(tmp_path, name):
    rows = load_example(name).main(["--epochs", "1", "--k", "10", "--out", str(tmp_path / name)])
    assert len(rows) >= 2 and all(np.isfinite(row["test_log_likelihood"]) for row in rows.values())


def test_cvae_example(tmp_path):
    result = load_example("cvae").main(["--epochs", "1", "--k", "10", "--out", str(tmp_path)])
    assert 0.0 <= result["recognised"] <= 1.0 and np.isfinite(result["test_log_likelihood"])
    assert any(path.suffix == ".png" for path in tmp_path.rglob("*"))


def test_custom_model_guide_example(tmp_path):
    result = load_example("custom_model_guide").main(["--epochs", "1", "--k", "10", "--out", str(tmp_path)])
    assert len(result["history"]) == 1 and np.isfinite(result["test_log_likelihood"])


@pytest.mark.parametrize("name", ["hierarchical_vae", "missing_pixels", "student_t_prior"])
def test_user_program_examples(name):
    result = load_example(name).main(["--epochs", "1", "--k", "10"])
    assert np.isfinite(result["test_elbo"]) and np.isfinite(result["test_log_likelihood"])
    assert result["test_log_likelihood"] > result["test_elbo"]  # IWAE with k = 10 is above the ELBO, 300 examples


def test_nested_plate_example_matches_the_builtin_vae(digits):
    """The per-pixel plate is the built-in VAE written differently: same seed, same networks, same numbers."""
    from ppl_vae import VAE, TrainConfig, elbo, fit, model_config_for, observed_test_set

    nested = load_example("nested_plate").main(["--epochs", "1", "--k", "10"])
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae = VAE(model_config_for(digits, z_dim=8, hidden=(128,)))
    fit(vae, digits, TrainConfig(epochs=1), progress=False)
    builtin = elbo(vae.model, vae.guide, observed_test_set(digits.x_test, binary=True), num_particles=100)
    assert abs(nested["test_elbo"] - builtin.mean) < 1e-3
