"""The KL lab: closed-form detection, measurements at fixed parameters, head alignment, the report and the CLI."""

import json

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.distributions as td
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from ppl_vae import lab
from ppl_vae.cli import main
from ppl_vae.config import EvalConfig, RunConfig, TrainConfig
from ppl_vae.data import load_dataset
from ppl_vae.errors import InputError
from ppl_vae.evaluate import observed_test_set
from ppl_vae.heads import HEADS
from ppl_vae.run import model_config_for, train_run
from ppl_vae.train import seed_everything
from ppl_vae.vae import VAE


@pytest.fixture(autouse=True)
def clean_pyro_state():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def small_vae(digits, **options) -> VAE:
    seed_everything(0)
    return VAE(model_config_for(digits, **{"z_dim": 4, "hidden": (32,), **options}))


# --- where TraceMeanField_ELBO is analytic ------------------------------------------------------------------------
def test_has_analytic_kl():
    normal = td.Normal(torch.zeros(3), torch.ones(3))
    assert lab.has_analytic_kl(normal, normal)
    assert lab.has_analytic_kl(
        dist.Normal(0.0, 2.0).expand([3]).to_event(1), dist.Normal(0.0, 1.0).expand([3]).to_event(1)
    )
    flow = dist.TransformedDistribution(dist.Normal(0.0, 1.0), [dist.transforms.AffineTransform(1.0, 2.0)])
    assert not lab.has_analytic_kl(flow, dist.Normal(0.0, 1.0))


def affine_flow_guide(vae: VAE):
    """q(z | x) = N(loc, scale) written as a flow: the same distribution as ``vae.guide``, with no registered KL."""

    def guide(x):
        pyro.module(vae.pyro_name, vae)
        loc, scale = vae.encode(x)
        base = dist.Normal(torch.zeros_like(loc), torch.ones_like(loc))
        with pyro.plate("data", x.shape[0]):
            flow = dist.TransformedDistribution(base, [dist.transforms.AffineTransform(loc, scale)])
            pyro.sample("z", flow.to_event(1))

    return guide


def test_meanfield_silently_falls_back_to_monte_carlo_and_the_lab_says_so(digits):
    vae = small_vae(digits)
    x = observed_test_set(digits.x_test[:16], binary=True)
    flow_guide = affine_flow_guide(vae)
    assert lab.analytic_kl_sites(vae.model, vae.guide, x) == {"z": True}
    assert lab.analytic_kl_sites(vae.model, flow_guide, x) == {"z": False}
    assert "falls back to the Monte Carlo KL" in lab.describe_meanfield({"z": False})
    assert "closed-form KL at z" in lab.describe_meanfield({"z": True})

    def loss(elbo, guide):
        pyro.set_rng_seed(7)
        return elbo.loss(vae.model, guide, x)

    # same noise: with the flow, "meanfield" is the Monte Carlo estimator exactly; with the Normal guide it is not
    assert loss(TraceMeanField_ELBO(), flow_guide) == pytest.approx(loss(Trace_ELBO(), flow_guide), rel=1e-6)
    assert loss(Trace_ELBO(), flow_guide) == pytest.approx(loss(Trace_ELBO(), vae.guide), rel=1e-5)
    assert abs(loss(TraceMeanField_ELBO(), vae.guide) - loss(Trace_ELBO(), vae.guide)) > 1e-3


def test_fixed_noise_refuses_a_guide_that_is_not_normal(digits):
    vae = small_vae(digits)
    x = observed_test_set(digits.x_test[:4], binary=True)
    with pytest.raises(TypeError, match="Normal guide"):
        Trace_ELBO().loss(vae.model, lab.FixedNoise(torch.zeros(4, 4))(affine_flow_guide(vae)), x)


# --- measurements at fixed parameters -----------------------------------------------------------------------------
def test_measure_estimator_leaves_the_weights_and_ranks_the_variances(digits):
    vae = small_vae(digits)
    x = observed_test_set(digits.x_test[:32], binary=True)
    before = {name: value.clone() for name, value in vae.state_dict().items()}
    settings = lab.LabConfig(repetitions=40, epochs=0)
    measured = {name: lab.measure_estimator(vae, name, x, settings) for name in ("trace", "meanfield", "stl")}
    for name, value in vae.state_dict().items():
        assert torch.equal(value, before[name])
    trace, meanfield, stl = measured["trace"], measured["meanfield"], measured["stl"]
    # the closed form removes the KL's sampling noise from the encoder's gradient; STL removes its score term
    assert meanfield["grad_var_encoder"] < trace["grad_var_encoder"] / 3
    assert stl["grad_var_encoder"] < trace["grad_var_encoder"] / 3
    # the decoder never sees the KL: the same seed draws the same z, so its gradients are the same draw by draw
    assert meanfield["grad_var_decoder"] == pytest.approx(trace["grad_var_decoder"], rel=1e-5)
    assert stl["elbo_mean"] == pytest.approx(trace["elbo_mean"], rel=1e-6)  # same value as Monte Carlo KL
    difference = trace["elbo_mean"] - meanfield["elbo_mean"]
    assert abs(difference) < 3 * (trace["elbo_se"] ** 2 + meanfield["elbo_se"] ** 2) ** 0.5
    assert all(row["ms_per_step"] > 0 for row in measured.values())


def test_lab_config_rejects_bad_values():
    with pytest.raises(InputError, match="--repetitions"):
        lab.LabConfig(repetitions=1)
    with pytest.raises(InputError, match="--estimators: unknown objective 'bogus'"):
        lab.LabConfig(estimators=("trace", "bogus"))
    with pytest.raises(InputError, match="--epochs"):
        lab.LabConfig(epochs=-1)


# --- heads --------------------------------------------------------------------------------------------------------
def test_start_heads_alike_gives_every_head_the_same_initial_q(digits):
    source = small_vae(digits).double()
    with torch.no_grad():
        source.encoder.net[-1].bias.add_(0.5 * torch.randn(8, dtype=torch.float64))
    x = observed_test_set(digits.x_test[:20], binary=True).double()
    loc_source, _ = source.encode(x)
    expected_scale = HEADS["log_scale"].scale(source.encoder.net[-1].bias[4:]).detach()
    for head in HEADS:
        vae = VAE(model_config_for(digits, z_dim=4, hidden=(32,), scale_param=head)).double()
        vae.load_state_dict(source.state_dict())
        lab.start_heads_alike(vae, "log_scale")
        loc, scale = vae.encode(x)
        torch.testing.assert_close(loc, loc_source, rtol=0.0, atol=0.0)
        torch.testing.assert_close(scale, expected_scale.expand_as(scale), rtol=1e-12, atol=1e-14)


# --- the whole comparison, the report and the command line --------------------------------------------------------
ESTIMATOR_KEYS = {"name", "elbo_mean", "elbo_se", "grad_var_encoder", "grad_var_decoder", "ms_per_step"}


def test_compare_kl_with_heads_writes_the_report(digits, tmp_path):
    vae = small_vae(digits, z_dim=2, hidden=(16,))
    settings = lab.LabConfig(estimators=("trace", "meanfield", "stl"), repetitions=4, epochs=2, batch_size=128)
    result = lab.compare_kl(vae, digits, settings, heads=True, progress=False)
    text = lab.write_report(result, tmp_path)
    stored = json.loads((tmp_path / "compare_kl.json").read_text())
    assert [row["name"] for row in stored["estimators"]] == ["trace", "meanfield", "stl"]
    for row in stored["estimators"]:
        assert ESTIMATOR_KEYS | {"test_elbo_curve"} <= set(row)
        assert len(row["test_elbo_curve"]) == 2 and all(-100 < value < 0 for value in row["test_elbo_curve"])
    assert {(row["head"], row["estimator"]) for row in stored["heads"]} == {
        (head, estimator) for head in HEADS for estimator in ("trace", "meanfield")
    }
    assert all(len(row["test_elbo_curve"]) == 2 for row in stored["heads"])
    assert [check["estimator"] for check in stored["agreement"]] == ["trace", "stl"]
    assert "nats per example" in text and (tmp_path / "compare_kl.md").read_text() == text
    assert (tmp_path / "compare_kl.png").stat().st_size > 0 and (tmp_path / "compare_kl_heads.png").stat().st_size > 0


def test_cli_compare_kl_on_a_trained_run_folder(digits, tmp_path):
    config = RunConfig(
        model=model_config_for(digits, z_dim=2, hidden=(16,)),
        train=TrainConfig(epochs=1),
        evaluation=EvalConfig(k=5, num_particles=5),
    )
    train_run(config, tmp_path / "run", progress=False)
    out = tmp_path / "lab"
    argv = ["compare-kl", "--run", str(tmp_path / "run"), "--estimators", "trace,meanfield", "--repetitions", "3"]
    assert main([*argv, "--epochs", "0", "--out", str(out)]) == 0
    stored = json.loads((out / "compare_kl.json").read_text())
    assert stored["model"]["z_dim"] == 2 and stored["meanfield_kl"] == {"z": True}
    assert all(row["test_elbo_curve"] == [] for row in stored["estimators"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--repetitions", "1"], "--repetitions must be an integer >= 2"),
        (["--estimators", "trace,bogus"], "unknown objective 'bogus'"),
        (["--run", "somewhere", "--z-dim", "3"], "--z-dim: the model comes from --run"),
        (["--run", "no/such/folder"], "does not exist"),
        (["--hidden", "a,b"], "--hidden 'a,b'"),
    ],
)
def test_cli_compare_kl_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(["compare-kl", *argv]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ppl-vae: error: ") and message in error and error.count("\n") == 1
