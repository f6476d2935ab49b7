"""The command line end to end, and one clear line for every kind of bad input."""

import json
import re

import numpy as np
import pytest

from ppl_vae.cli import main
from ppl_vae.run import PLOT_FILES

METRIC_KEYS = {
    "test_elbo", "test_elbo_se", "test_log_likelihood", "test_log_likelihood_se", "k", "train_elbo", "epochs",
    "seconds", "history",
}  # fmt: skip


def run_cli(capsys, *argv):
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_train_then_evaluate_writes_every_file(tmp_path, capsys):
    run_dir = tmp_path / "run"
    status, out, err = run_cli(
        capsys, "train", "--epochs", 2, "--z-dim", 2, "--hidden", "32,16", "--k", 50, "--eval-particles", 5,
        "--out", run_dir, "--no-progress",
    )  # fmt: skip
    assert status == 0, err
    assert "nats per example" in out and "test log p(x) (IWAE, k=50)" in out
    for name in ("config.json", "checkpoint.pt", "metrics.json", *PLOT_FILES):
        assert (run_dir / name).stat().st_size > 0, name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["epochs"] == 2 and len(metrics["history"]) == 2 and metrics["k"] == 50
    assert metrics["test_log_likelihood"] >= metrics["test_elbo"] - 3 * metrics["test_elbo_se"]

    assert metrics["eval_examples_per_second"] > 0 and metrics["eval_memory_mb"] is None
    assert "test examples per second (k=50)" in out

    evaluate = ["evaluate", run_dir, "--k", 100, "--eval-particles", 4, "--gap-examples", 0, "--eval-memory-mb", 2]
    status, out, err = run_cli(capsys, *evaluate)
    assert status == 0, err
    updated = json.loads((run_dir / "metrics.json").read_text())
    assert updated["k"] == 100 and updated["history"] == metrics["history"]
    assert updated["eval_memory_mb"] == 2 and updated["eval_examples_per_second"] > 0
    assert f"{updated['eval_examples_per_second']:.1f} test examples per second (k=100)" in out

    status, out, err = run_cli(capsys, "train", "--resume", "--out", run_dir, "--epochs", 3, "--k", 10, "--no-progress")
    assert status == 0, err
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 3


def test_train_two_latent_layers_then_resume(tmp_path, capsys):
    from ppl_vae.run import load

    run_dir = tmp_path / "run"
    argv = ["--k", 10, "--eval-particles", 5, "--out", run_dir, "--no-progress"]
    status, out, err = run_cli(capsys, "train", "--latent-layers", 2, "--top-z-dim", 3, "--epochs", 1, *argv)
    assert status == 0, err
    for name in PLOT_FILES:
        assert (run_dir / name).stat().st_size > 0, name
    model = json.loads((run_dir / "config.json").read_text())["model"]
    assert (model["latent_layers"], model["top_z_dim"]) == (2, 3)
    assert load(run_dir).guide_z2 is not None
    status, out, err = run_cli(capsys, "train", "--resume", "--epochs", 2, *argv)
    assert status == 0, err
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.fixture
def npz_files(tmp_path):
    good = np.random.default_rng(0).random((4, 8, 8), dtype=np.float32)
    nan = good.copy()
    nan[0, 0, 0] = np.nan
    inf = good.copy()
    inf[1, 2, 3] = np.inf
    return {
        "no_test": write_npz(tmp_path / "no_test.npz", x_train=good),
        "too_bright": write_npz(tmp_path / "bright.npz", x_train=good * 1.5, x_test=good),
        "nan": write_npz(tmp_path / "nan.npz", x_train=nan, x_test=good),
        "inf": write_npz(tmp_path / "inf.npz", x_train=good, x_test=inf),
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["train", "--data", "cifar"],
            "unknown data set 'cifar': expected one of digits, fashion-mnist, kmnist, mnist",
        ),
        (["train", "--data", "{no_test}"], "x_test"),
        (["train", "--data", "{too_bright}"], r"expected values in \[0, 1\]"),
        (["train", "--data", "{nan}"], "NaN"),
        (["train", "--data", "{inf}"], "inf"),
        (["train", "--z-dim", "0"], "--z-dim must be an integer >= 1, got 0"),
        (["train", "--hidden", ""], "--hidden '' is empty"),
        (["train", "--hidden", "64,x"], "--hidden '64,x': expected comma-separated integers"),
        (["train", "--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
        (["train", "--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
        (["train", "--elbo", "elbo"], "--elbo: unknown objective 'elbo'"),
        (["train", "--optim", "rmsprop"], "--optim: unknown optimizer 'rmsprop': expected one of adam, adamw"),
        (["train", "--lr-schedule", "step"], "--lr-schedule: unknown learning-rate schedule 'step'"),
        (["train", "--lr-decay", "0"], r"--lr-decay must be a number in \(0, 1\], got 0.0"),
        (["train", "--lr-decay", "nan"], r"--lr-decay must be a number in \(0, 1\], got nan"),
        (
            ["train", "--elbo", "enum", "--no-progress", "--out", "{tmp}/run"],
            "--elbo enum sums out .* marks none of 'z'",
        ),
        (["evaluate", "{tmp}/missing"], "run folder .*missing' does not exist"),
        (["train", "--resume"], "--resume needs --out"),
        (["train", "--eval-memory-mb", "0"], "--eval-memory-mb 0.0: expected a positive number of megabytes"),
        (["evaluate", "{tmp}", "--eval-memory-mb", "nan"], "--eval-memory-mb nan: expected a positive number"),
        (["train", "--latent-layers", "3"], "--latent-layers must be an integer from 1 to 2, got 3"),
        (["train", "--latent-layers", "true"], "--latent-layers must be an integer from 1 to 2, got 'true'"),
        (["train", "--latent-layers", "2", "--top-z-dim", "9"], "--top-z-dim must be an integer from 1 to --z-dim 8"),
    ],
)
def test_bad_input_is_one_clear_line(capsys, tmp_path, npz_files, argv, message):
    argv = [arg.format(tmp=tmp_path, **npz_files) for arg in argv]
    status, out, err = run_cli(capsys, *argv)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ppl-vae: error: "), err
    assert re.search(message, lines[0]), lines[0]


def test_a_run_folder_is_never_overwritten(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["train", "--epochs", 1, "--z-dim", 2, "--hidden", 16, "--k", 5, "--out", run_dir, "--no-progress"]
    assert run_cli(capsys, *argv)[0] == 0
    status, out, err = run_cli(capsys, *argv)
    assert status == 2 and "already holds a run" in err


def test_evaluate_refuses_a_checkpoint_that_does_not_match(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_cli(capsys, "train", "--epochs", 1, "--z-dim", 2, "--hidden", 16, "--k", 5, "--out", run_dir, "--no-progress")
    config = json.loads((run_dir / "config.json").read_text())
    config["model"]["hidden"] = [24]
    (run_dir / "config.json").write_text(json.dumps(config))
    status, out, err = run_cli(capsys, "evaluate", run_dir, "--k", 100, "--gap-examples", 0)
    assert status == 2 and "does not match its config.json" in err


def test_optimizer_flags_reach_the_run_and_the_schedule_keeps_its_horizon(tmp_path, capsys):
    """config.json holds the schedule's horizon fixed at the start (1 epoch of 1497 images in minibatches of 64: 24
    steps); a resume that adds an epoch keeps it."""
    run_dir = tmp_path / "run"
    argv = [
        "train", "--epochs", 1, "--z-dim", 2, "--hidden", 16, "--k", 5, "--eval-particles", 2, "--no-progress",
        "--optim", "adamw", "--lr-schedule", "cosine", "--lr-decay", 0.5, "--elbo", "tracegraph", "--out", run_dir,
    ]  # fmt: skip
    status, out, err = run_cli(capsys, *argv)
    assert status == 0, err
    train = json.loads((run_dir / "config.json").read_text())["train"]
    expected = {"optim": "adamw", "lr_schedule": "cosine", "lr_decay": 0.5, "elbo": "tracegraph", "lr_horizon": 24}
    assert {key: train[key] for key in expected} == expected
    status, out, err = run_cli(capsys, "train", "--resume", "--out", run_dir, "--epochs", 2, "--k", 5, "--no-progress")
    assert status == 0, err
    assert json.loads((run_dir / "config.json").read_text())["train"]["lr_horizon"] == 24
