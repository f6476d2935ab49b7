"""The mechanism behind "log-variance or log-sigma": log_var is log_scale with the scale rows' step rescaled.

From matched weights (``h_log_var = 2 h_log_scale``) log_var's gradient at its h rows is half log_scale's and every
other gradient is the same (tests/test_heads.py). Adam's step does not depend on the gradient's scale except through
``eps``, so log_scale with the h rows' learning rate halved (:func:`ppl_vae.optim.rows_lr_factor`) takes log_var's
steps up to ``eps``; SGD's step is the gradient times lr, so there the factor is 0.25 and the agreement is exact.
Float64, a few steps of the hand-written loss with fixed noise; then the study's own plumbing (compare_heads, the
command line) on a tiny digits VAE.
"""

import json
import math

import pytest
import torch
from test_heads import Z_DIM, binary_images, matched_pair

from ppl_vae import lab, reference
from ppl_vae.cli import main
from ppl_vae.data import load_dataset
from ppl_vae.lab.heads_study import HeadRun, fresh_vae, heads_grid
from ppl_vae.optim import rows_lr_factor
from ppl_vae.run import model_config_for
from ppl_vae.train import seed_everything
from ppl_vae.vae import VAE


def train_hand_written(vae: VAE, head: str, factor: float, make_optimizer, steps: int = 5) -> None:
    """``steps`` updates of the Monte Carlo loss on fixed images, the noise of each step from one seed, with the
    h rows of the encoder's last layer at ``factor`` times the learning rate."""
    x = binary_images()
    last = vae.encoder.net[-1]
    optimizer = make_optimizer(vae.parameters())
    generator = torch.Generator().manual_seed(3)
    h_rows = slice(Z_DIM, None)
    with rows_lr_factor([(last.weight, h_rows), (last.bias, h_rows)], factor):
        for _ in range(steps):
            eps = torch.randn(1, x.shape[0], Z_DIM, dtype=torch.float64, generator=generator)
            optimizer.zero_grad()
            (-reference.elbo_monte_carlo_kl(vae.encoder.net, vae.decoder, x, eps, head=head).sum()).backward()
            optimizer.step()


def log_scale_vs_log_var(factor: float, make_optimizer) -> float:
    """Largest relative difference, over the parameter tensors, between log_scale trained with the h rows at
    ``factor`` and log_var trained plainly, its h rows halved back to log-sigma units."""
    log_scale, log_var = matched_pair()
    train_hand_written(log_scale, "log_scale", factor, make_optimizer)
    train_hand_written(log_var, "log_var", 1.0, make_optimizer)
    with torch.no_grad():
        log_var.encoder.net[-1].weight[Z_DIM:] /= 2
        log_var.encoder.net[-1].bias[Z_DIM:] /= 2
    return max(
        ((a - b).abs().max() / a.abs().max()).item()
        for a, b in zip(log_scale.parameters(), log_var.parameters(), strict=True)
    )


def test_adam_log_scale_at_half_the_scale_step_is_log_var_up_to_eps():
    """Adam's step from gradient g is lr m/(sqrt(v) + eps); log_var's m and sqrt(v) at its h rows are half
    log_scale's, so it moves log-sigma by (lr/2) m/(sqrt(v) + 2 eps) where log_scale at factor 0.5 moves
    (lr/2) m/(sqrt(v) + eps). The difference is eps's: a 100 times larger eps makes it 100 times larger."""
    difference = log_scale_vs_log_var(0.5, lambda p: torch.optim.Adam(p, lr=1e-2))
    larger_eps = log_scale_vs_log_var(0.5, lambda p: torch.optim.Adam(p, lr=1e-2, eps=1e-6))
    full_step = log_scale_vs_log_var(1.0, lambda p: torch.optim.Adam(p, lr=1e-2))
    assert difference < 1e-8
    assert larger_eps / difference == pytest.approx(100, rel=0.05)
    assert full_step > 1e-2  # at the same step the heads part at once: the test sees the difference


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_log_scale_at_a_quarter_of_the_scale_step_is_log_var_exactly(momentum):
    """SGD moves log_var's h rows by lr g/2, i.e. log-sigma by lr g/4: factor 0.25 agrees to rounding, 0.5 does not."""
    sgd = lambda p: torch.optim.SGD(p, lr=1e-3, momentum=momentum)  # noqa: E731
    assert log_scale_vs_log_var(0.25, sgd) < 1e-13
    assert log_scale_vs_log_var(0.5, sgd) > 1e-3


def test_rows_lr_factor_rescales_only_the_rows_and_only_inside_the_context():
    weight = torch.nn.Parameter(torch.zeros(4, 2))
    other = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([weight, other], lr=1.0)
    weight.grad, other.grad = -torch.ones(4, 2), -torch.ones(3)
    with rows_lr_factor([(weight, slice(2, 4))], 0.25):
        optimizer.step()
    assert weight.tolist() == [[1, 1], [1, 1], [0.25, 0.25], [0.25, 0.25]] and other.tolist() == [1, 1, 1]
    optimizer.step()  # the hooks are gone
    assert weight.tolist() == [[2, 2], [2, 2], [1.25, 1.25], [1.25, 1.25]]


# --- the study's plumbing ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def tiny_vae(digits, z_dim=3) -> VAE:
    seed_everything(0)
    return VAE(model_config_for(digits, z_dim=z_dim, hidden=(16,)))


def test_compare_heads_runs_the_design_from_one_start_per_seed(digits):
    """log_scale at half the scale step follows log_var through fit (float32, Adam: equal up to rounding and eps),
    log_scale at the full step does not; every run of a (z_dim, seed) starts from the same q(z | x); the
    per-dimension record."""
    settings = lab.LabConfig(estimators=("trace",), repetitions=2, epochs=2, batch_size=128)
    runs = [
        HeadRun(head, "meanfield", "adam", 1e-2, factor, z_dim, seed)
        for z_dim, seed in ((3, 0), (3, 1), (5, 0))
        for head, factor in (("log_var", 1.0), ("log_scale", 0.5), ("log_scale", 1.0))
    ]
    vae = tiny_vae(digits)
    rows = lab.compare_heads(vae, digits, settings, progress=False, runs=runs, fresh=fresh_vae(vae))
    assert [(row["head"], row["scale_lr_factor"], row["z_dim"], row["seed"]) for row in rows] == [
        (run.head, run.scale_lr_factor, run.z_dim, run.seed) for run in runs
    ]
    for start in range(0, len(rows), 3):
        log_var, half, full = (row["test_elbo_curve"] for row in rows[start : start + 3])
        assert max(abs(a - b) for a, b in zip(half, log_var, strict=True)) < 1e-3  # measured: at most 4e-6
        assert max(abs(a - b) for a, b in zip(full, log_var, strict=True)) > 5e-3  # measured: 0.014 to 0.046
    for row in rows:
        assert len(row["scale_curve"]) == 2 and len(row["scale_curve"][0]) == row["z_dim"]
        assert len(row["kl_per_dim"]) == row["z_dim"] and all(kl >= 0 for kl in row["kl_per_dim"])
        inactive = [dim for dim, kl in enumerate(row["kl_per_dim"]) if kl < lab.heads_study.INACTIVE_KL]
        assert row["inactive_dims"] == inactive
    with pytest.raises(lab.heads_study.InputError, match="--z-dims: the trained model has z_dim 3"):
        lab.compare_heads(vae, digits, settings, progress=False, runs=runs)


def test_heads_grid_applies_the_factors_to_log_scale_only():
    runs = heads_grid(
        lrs={"adam": [1e-3], "sgd": [1e-4]}, z_dims=[8], seeds=[0, 1], scale_lr_factors=[1, 0.5], estimators=["trace"]
    )
    assert len(runs) == 2 * 2 * (2 + 1 + 1)  # optimizers x seeds x (log_scale at two factors, log_var, softplus)
    assert {run.scale_lr_factor for run in runs if run.head != "log_scale"} == {1.0}
    assert {(run.optimizer, run.lr) for run in runs} == {("adam", 1e-3), ("sgd", 1e-4)}


def test_cli_heads_study_writes_the_entries_comparisons_and_figure(tmp_path):
    out = tmp_path / "lab"
    argv = ["compare-kl", "--hidden", "8", "--z-dim", "2", "--estimators", "trace", "--repetitions", "2"]
    argv += ["--epochs", "1", "--batch-size", "512", "--heads", "--head-estimators", "meanfield", "--out", str(out)]
    argv += ["--optimizers", "adam,sgd", "--lrs", "1e-3", "--sgd-lrs", "1e-4", "--scale-lr-factor", "1,0.5"]
    argv += ["--z-dims", "2", "--seeds", "0,1"]
    assert main(argv) == 0
    stored = json.loads((out / "compare_kl.json").read_text())
    keys = {"head", "estimator", "optimizer", "lr", "scale_lr_factor", "z_dim", "seed", "test_elbo_curve"}
    assert all(keys <= set(row) for row in stored["heads"])
    assert len(stored["heads"]) == 2 * 2 * 4  # optimizers x seeds x head runs
    text = (out / "compare_kl.md").read_text()
    assert "log_scale, scale step x0.5 - log_var" in text and "paired over 2 seeds" in text
    assert (out / "compare_kl_heads.png").stat().st_size > 0
    assert all(math.isfinite(row["test_elbo_curve"][0]) for row in stored["heads"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lrs", "a"], "--lrs 'a': expected comma-separated float values"),
        (["--lrs", "-1"], "a learning rate (--lrs, --sgd-lrs) must be a positive number"),
        (["--scale-lr-factor", "0"], "--scale-lr-factor must be a positive number"),
        (["--scale-lr-factor", "nan"], "--scale-lr-factor 'nan': expected finite numbers"),
        (["--optimizers", "rmsprop"], "unknown optimizer 'rmsprop'"),
        (["--optimizers", "sgd"], "--optimizers sgd needs --sgd-lrs"),
        (["--z-dims", "0"], "--z-dims must be an integer >= 1"),
        (["--z-dims", ","], "--z-dims ',' is empty"),
        (["--seeds", "0,0"], "--seeds repeats a value"),
        (["--head-estimators", "stl"], "--head-estimators: 'stl' is not one of trace, meanfield"),
        (["--lrs", "1e-3"], "--lrs: the heads study's flags need --heads"),
    ],
)
def test_cli_heads_flags_refuse_bad_values_in_one_line(flags, message, capsys):
    heads = [] if flags == ["--lrs", "1e-3"] else ["--heads"]
    assert main(["compare-kl", "--epochs", "0", *heads, *flags]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ppl-vae: error: ") and message in error and error.count("\n") == 1
