"""The KL lab: closed-form detection, measurements at fixed parameters, head alignment, the report and the CLI."""

import dataclasses
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


def nested_programs(guide_reads_z: bool):
    """A global-free program with two latent sites, extra arguments and a plate nested in the data plate: z (B, 2)
    and u (B, 4) in a per-pixel plate, x masked by ``seen``; the guide's u reads z when ``guide_reads_z``."""

    def model(x, seen):
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(torch.zeros(1, 2), 1.0).to_event(1))
            with pyro.plate("pixels", 4, dim=-1):
                u = pyro.sample("u", dist.Normal(z.sum(-1), 1.0))
                with pyro.poutine.mask(mask=seen):
                    pyro.sample("x", dist.Normal(u, 0.5), obs=x)

    def guide(x, seen):
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(0.3 * x[:, None, :2], 0.8).to_event(1))
            with pyro.plate("pixels", 4, dim=-1):
                loc = 0.7 * x + (z.sum(-1) if guide_reads_z else 0.0)
                pyro.sample("u", dist.Normal(loc, 0.6))

    return model, guide


def test_meanfield_check_reads_any_program_with_extra_arguments_and_nested_plates():
    x = torch.randn(5, 4)
    seen = torch.rand(5, 4) > 0.3
    state = torch.get_rng_state()
    check = lab.meanfield_check(*nested_programs(guide_reads_z=False), x, seen)
    assert torch.equal(torch.get_rng_state(), state)  # looking at the programs draws nothing from the caller's RNG
    assert check == lab.MeanfieldCheck(closed_form={"z": True, "u": True}, dependent={})
    assert check.problem is None
    # p(u | z) depends on z, which a mean-field guide integrates correctly; q(u | z) does not
    dependent = lab.meanfield_check(*nested_programs(guide_reads_z=True), x, seen)
    assert dependent.dependent == {"u": ("z",)}
    assert lab.analytic_kl_sites(*nested_programs(guide_reads_z=True), x, seen) == {"z": True, "u": True}
    assert dependent.problem.startswith("meanfield is biased here: q(u | ...) depends on other latent sites")


def test_meanfield_is_described_as_biased_on_the_two_layer_vae(digits):
    vae = small_vae(digits, latent_layers=2)
    x = observed_test_set(digits.x_test[:16], binary=True)
    check = lab.meanfield_check(vae.model, vae.guide, x)
    assert check.closed_form == {"z1": True, "z2": True} and check.dependent == {"z2": ("z1",)}
    assert "meanfield is biased here: q(z2 | ...) depends on other latent sites (drawn before it: z1)" in check.problem
    note = lab.describe_meanfield({"z1": True, "z2": False}, {"z2": ("z1",)})
    assert "biased" in note and "no closed-form KL at z2" in note


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


def test_labels_reach_the_estimators_exactly(digits):
    vae = small_vae(digits, conditional=True, z_dim=2, hidden=(16,))
    x = observed_test_set(digits.x_test[:32], binary=True)
    y = digits.y_test[:32]
    settings = lab.LabConfig(repetitions=3, epochs=0)
    measured = lab.measure_estimator(vae, "trace", x, settings, y)
    seed_everything(settings.seed)
    elbo = Trace_ELBO(num_particles=1, vectorize_particles=True, max_plate_nesting=1)
    expected = [-elbo.loss(vae.model, vae.guide, x, y) / 32 for _ in range(3)]
    assert measured["elbo_mean"] == pytest.approx(sum(expected) / 3, rel=1e-6)


def test_compare_kl_trains_a_conditional_vae_with_its_labels(digits):
    vae = small_vae(digits, conditional=True, z_dim=2, hidden=(16,))
    settings = lab.LabConfig(estimators=("trace", "meanfield"), repetitions=3, epochs=1, batch_size=128)
    result = lab.compare_kl(vae, digits, settings, progress=False)
    assert result["fixed_minibatch"] == "the first 128 test images and their labels"
    assert [row["name"] for row in result["estimators"]] == ["trace", "meanfield"] and result["skipped"] == {}
    assert all(-100 < row["test_elbo_curve"][0] < 0 for row in result["estimators"])
    unlabelled = dataclasses.replace(digits, y_train=None, y_test=None)
    with pytest.raises(InputError, match="has no labels: this model takes labels y"):
        lab.compare_kl(vae, unlabelled, settings, progress=False)


def test_compare_kl_on_the_two_layer_vae_measures_trace_and_describes_meanfield(digits, capsys):
    vae = small_vae(digits, latent_layers=2, z_dim=2, hidden=(16,))
    settings = lab.LabConfig(estimators=("trace", "meanfield"), repetitions=3, epochs=1, batch_size=128)
    result = lab.compare_kl(vae, digits, settings, progress=False)
    (row,) = result["estimators"]
    assert row["name"] == "trace" and len(row["test_elbo_curve"]) == 1
    assert result["parameter_groups"] == ["encoder", "decoder", "prior_z1", "guide_z2"]
    assert all(0 < row[f"grad_var_{group}"] < float("inf") for group in result["parameter_groups"])
    assert result["meanfield_dependent"] == {"z2": ("z1",)} and "biased" in result["skipped"]["meanfield"]
    text = lab.format_report(result)
    assert "meanfield is biased here" in text and "Left out of the table for that reason: meanfield." in text
    # the classic losses are of the one-latent VAE: one line, before anything is measured
    for name in ("reference-mc", "reference-analytic", "reference-stl"):
        classic = lab.LabConfig(estimators=("trace", name), repetitions=2, epochs=0)
        with pytest.raises(InputError, match=f"--elbo {name} is the hand-written classic loss: .*--latent-layers 1"):
            lab.compare_kl(vae, digits, classic)
        assert capsys.readouterr().out == ""
    with pytest.raises(InputError, match="--latent-layers 2 the head also parameterizes p\\(z1 \\| z2\\)"):
        lab.compare_heads(vae, digits, settings, progress=False)


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
