"""What a Python caller hands a model: every wrong value is one line of InputError, never a torch error or NaN."""

import pytest
import torch

import ppl_vae
from ppl_vae import use
from ppl_vae.config import ModelConfig, RunConfig
from ppl_vae.errors import InputError
from ppl_vae.evaluate import elbo, iwae_log_likelihood, log_weights_per_example
from ppl_vae.inputs import require_device
from ppl_vae.vae import VAE

SIZED = {"x_dim": 64, "image_shape": (1, 8, 8), "z_dim": 2, "hidden": (16,)}


@pytest.fixture(scope="module")
def models():
    return VAE(ModelConfig(**SIZED)), VAE(ModelConfig(**SIZED, num_classes=10))


def binary(n=5):
    return torch.bernoulli(torch.full((n, 64), 0.5))


CASES = {
    "vae.sample(-1)": (lambda v, c: v.sample(-1), "num_samples must be an integer >= 1, got -1"),
    "vae.sample(2.5)": (lambda v, c: v.sample(2.5), "num_samples must be an integer >= 1, got 2.5"),
    "use.sample(-1)": (lambda v, c: use.sample(v, -1), "--n must be an integer from 1"),
    "use.sample(2.5)": (lambda v, c: use.sample(v, 2.5), "--n must be an integer from 1 .* got 2.5"),
    "encode width": (lambda v, c: v.encode(torch.rand(5, 10)), "x has 10 values per example, the model expects 64"),
    "use.encode width": (lambda v, c: use.encode(v, torch.rand(5, 10)), "x has 10 values per example"),
    "encode int": (lambda v, c: v.encode(torch.ones(5, 64, dtype=torch.int64)), "x has dtype torch.int64"),
    "use.encode f64": (
        lambda v, c: use.encode(v, torch.rand(5, 64, dtype=torch.float64)),
        "x has dtype torch.float64, the model's parameters torch.float32",
    ),
    "encode NaN": (lambda v, c: v.encode(torch.full((5, 64), float("nan"))), "x holds NaN or infinite values"),
    "use.encode NaN": (lambda v, c: use.encode(v, torch.full((5, 64), float("nan"))), "x holds NaN or infinite"),
    "encode empty": (lambda v, c: v.encode(torch.rand(0, 64)), r"x must have shape \(N, D\) with N >= 1"),
    "encode list": (lambda v, c: v.encode([[0.5] * 64]), "x must be a torch tensor"),
    "encode y=99": (lambda v, c: c.encode(binary(), torch.full((5,), 99)), r"labels y \[99\]: expected int64 class"),
    "use.encode y=99": (lambda v, c: use.encode(c, binary(), torch.full((5,), 99)), r"encode: y \[99\]: expected"),
    "decode width": (lambda v, c: v.decode(torch.rand(5, 7)), r"z must have shape \(..., 2\), got \(5, 7\)"),
    "use.decode width": (lambda v, c: use.decode(v, torch.rand(5, 7)), "z has 7 values per example"),
    "iwae k=0": (lambda v, c: iwae_log_likelihood(v.model, v.guide, binary(), k=0), "k must be an integer >= 1"),
    "iwae k=True": (lambda v, c: iwae_log_likelihood(v.model, v.guide, binary(), k=True), "got True"),
    "weights k=2.5": (lambda v, c: log_weights_per_example(v.model, v.guide, binary(), k=2.5), "got 2.5"),
    "elbo particles=0": (
        lambda v, c: elbo(v.model, v.guide, binary(), num_particles=0),
        "num_particles must be an integer >= 1, got 0",
    ),
    "elbo empty": (lambda v, c: elbo(v.model, v.guide, binary(0)), "x holds no examples"),
    "elbo grey": (
        lambda v, c: elbo(v.model, v.guide, torch.rand(5, 64), num_particles=2),
        r"the model cannot score x: Expected value argument .* within the support \(Boolean\(\)\)",
    ),
    "elbo NaN": (lambda v, c: elbo(v.model, v.guide, torch.full((5, 64), float("nan"))), "cannot score x"),
    "scores grey": (
        lambda v, c: use.scores(v, torch.rand(5, 64), k=2, num_particles=2),
        "x holds values other than 0 and 1 .* the model's likelihood is binary",
    ),
    "load(None)": (lambda v, c: ppl_vae.load(None), r"a run folder is a path \(str or pathlib.Path\), got None"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_wrong_value_is_one_line(models, name):
    call, message = CASES[name]
    with pytest.raises(InputError, match=message) as error:
        call(*models)
    assert "\n" not in str(error.value)


def test_the_checks_let_right_values_through(models):
    vae, cvae = models
    x = binary()
    assert vae.encode(x)[0].shape == (5, 2) and cvae.encode(x, torch.arange(5))[0].shape == (5, 2)
    assert vae.sample(3).shape == (3, 64) and use.decode(vae, torch.zeros(4, 2)).shape == (4, 64)
    assert iwae_log_likelihood(vae.model, vae.guide, x, k=3).per_example.shape == (5,)


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("foo", "--device 'foo' is not a torch device: expected e.g. cpu, cuda, cuda:0"),
        ("cuda:99", "--device 'cuda:99' is not available on this machine"),
    ],
)
def test_load_names_the_device_before_reading_the_checkpoint(tmp_path, device, message):
    """A folder with a config.json and no checkpoint: the device is refused first, the checkpoint never blamed."""
    (tmp_path / "config.json").write_text(RunConfig(model=ModelConfig(**SIZED)).to_json())
    with pytest.raises(InputError, match=message) as error:
        ppl_vae.load(tmp_path, device=device)
    assert "\n" not in str(error.value)
    assert require_device("cpu") == torch.device("cpu")
