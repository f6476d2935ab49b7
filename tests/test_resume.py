"""``--resume`` is exact or refuses: the flags a user gives are compared with the run's config.json and checkpoint."""

import json

import pytest
import torch
from cli_checks import one_line

from ppl_vae.checkpoint import load_checkpoint, save_checkpoint
from ppl_vae.cli import given_options, main
from ppl_vae.config import TrainConfig
from ppl_vae.errors import InputError
from ppl_vae.train import fit, seed_everything
from ppl_vae.vae import VAE


def test_given_options_are_those_typed_not_the_defaults():
    assert given_options(["train", "--resume", "--out", "r", "--lr", "0.001", "--epochs", "3"]) == {
        "resume",
        "out",
        "lr",
        "epochs",
    }


def test_changes_that_would_change_the_numbers_are_refused_in_one_line_naming_each(run_dir, capsys):
    before = (run_dir / "config.json").read_text()
    argv = ["train", "--resume", "--out", str(run_dir), "--z-dim", "3", "--lr", "0.01", "--elbo", "iwae", "--seed", "1"]
    assert main([*argv, "--conditional", "--epochs", "2"]) == 2
    assert one_line(capsys) == (
        f"ppl-vae: error: cannot resume '{run_dir}' with other numbers than it was trained with: --z-dim 2 -> 3, "
        "--elbo 'trace' -> 'iwae', --lr 0.001 -> 0.01, --seed 0 -> 1, --conditional (the run is not conditional) (a "
        "resume may change only --data-root, --device, --download, --epochs, --eval-memory-mb, --eval-particles, --k, "
        "--max-nan-skips, --on-nan, --path; start a new run with another --out to change the rest)"
    )
    assert (run_dir / "config.json").read_text() == before  # nothing written
    assert main(["train", "--resume", "--out", str(run_dir), "--lr", "0.001", "--batch-size", "64"]) == 0  # the same


def test_changes_that_keep_the_numbers_are_applied_and_recorded(run_dir, capsys):
    argv = ["train", "--resume", "--out", str(run_dir), "--no-progress"]
    assert main([*argv, "--epochs", "2", "--k", "7", "--device", "cpu"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["k"] == 7 and metrics["epochs"] == 2
    changes = {"evaluation.k": [5, 7], "train.epochs": [1, 2]}
    assert metrics["resumes"] == [{"epoch": 1, "step": 0, "changes": changes, "world_size": 1}]
    assert json.loads((run_dir / "config.json").read_text())["train"]["epochs"] == 2
    assert main([*argv, "--epochs", "3", "--on-nan", "skip"]) == 0
    resumes = load_checkpoint(run_dir / "checkpoint.pt")["resumes"]
    assert [r["changes"] for r in resumes][1] == {"train.epochs": [2, 3], "train.on_nan": ["stop", "skip"]}


def test_config_json_never_claims_fewer_epochs_than_were_trained(run_dir, capsys):
    assert main(["train", "--resume", "--out", str(run_dir), "--epochs", "2", "--no-progress"]) == 0
    before = (run_dir / "config.json").read_text()
    assert main(["train", "--resume", "--out", str(run_dir), "--epochs", "1", "--no-progress"]) == 2
    assert "--epochs 1 is fewer than the 2 epochs" in one_line(capsys)
    assert (run_dir / "config.json").read_text() == before


def test_a_config_json_edited_after_training_is_refused(run_dir, capsys):
    """The learning rate (the optimizer's state carries the old one) and the likelihood (the weights fit either)."""
    config = json.loads((run_dir / "config.json").read_text())
    config["train"]["lr"] = 0.01
    (run_dir / "config.json").write_text(json.dumps(config))
    assert main(["train", "--resume", "--out", str(run_dir), "--epochs", "2", "--no-progress"]) == 2
    assert "with other numbers than it was trained with: --lr 0.001 -> 0.01" in one_line(capsys)
    config["train"]["lr"] = 0.001
    config["model"]["likelihood"] = "gaussian"
    (run_dir / "config.json").write_text(json.dumps(config))
    for argv in (["evaluate", str(run_dir), "--k", "5"], ["train", "--resume", "--out", str(run_dir)]):
        assert main(argv) == 2
        assert "edited after training: --likelihood 'bernoulli' -> 'gaussian'" in one_line(capsys)


def test_a_checkpoint_without_its_training_settings_or_keys_is_a_clear_error(digits, small_config, tmp_path):
    """A checkpoint written before the training settings were stored, resumed with another objective: the optimizer
    state does not fit (was KeyError: 'param_groups'); one without a step or RNG state is named."""
    seed_everything(0)
    fit(VAE(small_config), digits, TrainConfig(epochs=1), run_dir=tmp_path, progress=False)
    with pytest.raises(InputError, match=r"with other numbers than it was trained with: --elbo 'trace' -> 'iwae'"):
        fit(VAE(small_config), digits, TrainConfig(epochs=2, elbo="iwae"), run_dir=tmp_path, resume=True)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    del state["train"]
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    with pytest.raises(InputError, match="optimizer state in checkpoint .* does not fit this objective"):
        fit(VAE(small_config), digits, TrainConfig(epochs=2, elbo="reference-mc"), run_dir=tmp_path, resume=True)
    save_checkpoint(tmp_path / "checkpoint.pt", {"model": state["model"]})
    with pytest.raises(InputError, match=r"lacks \['history', 'rng', 'step'\]"):
        fit(VAE(small_config), digits, TrainConfig(epochs=2), run_dir=tmp_path, resume=True)
    save_checkpoint(tmp_path / "checkpoint.pt", {**state, "model": {"w": torch.ones(1)}})
    with pytest.raises(InputError, match="does not match the model: Missing key"):
        fit(VAE(small_config), digits, TrainConfig(epochs=2), run_dir=tmp_path, resume=True)
