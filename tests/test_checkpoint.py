"""Checkpoints: atomic writes, weights-only loads, a config that must match its weights."""

import errno
import json
import os
import pickle

import pytest
import torch

from ppl_vae.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from ppl_vae.config import RunConfig
from ppl_vae.errors import InputError
from ppl_vae.run import load, model_config_for


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {}, "step": torch.tensor(1)})

    def fail_half_way(file):
        file.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(InputError, match="cannot write .*checkpoint.pt': No space left on device; its previous"):
        atomic_write(path, fail_half_way)
    assert load_checkpoint(path)["step"].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_loading_never_unpickles_arbitrary_objects(tmp_path):
    path = tmp_path / "checkpoint.pt"

    class Payload:
        def __reduce__(self):
            return (print, ("this code must not run",))

    with open(path, "wb") as file:
        torch.save({"evil": Payload()}, file, pickle_module=pickle)
    with pytest.raises(InputError, match="holds objects other than tensors") as refused:
        load_checkpoint(path)
    assert "\n" not in str(refused.value) and "weights_only" not in str(refused.value)


def write_run(run_dir, digits, z_dim=4):
    from ppl_vae.vae import VAE

    config = RunConfig(model=model_config_for(digits, z_dim=z_dim, hidden=(16,)))
    run_dir.mkdir()
    (run_dir / "config.json").write_text(config.to_json())
    save_checkpoint(run_dir / "checkpoint.pt", {"model": VAE(config.model).state_dict()})
    return config


def test_load_rebuilds_the_vae_from_its_config(tmp_path, digits):
    write_run(tmp_path / "run", digits)
    vae = load(tmp_path / "run")
    assert vae.config.z_dim == 4 and not vae.training


def test_a_checkpoint_that_does_not_match_its_config_is_refused(tmp_path, digits):
    run_dir = tmp_path / "run"
    write_run(run_dir, digits, z_dim=4)
    config = json.loads((run_dir / "config.json").read_text())
    config["model"]["z_dim"] = 6
    (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="does not match its config.json: .*size mismatch"):
        load(run_dir)


def test_a_missing_run_folder_is_named(tmp_path):
    with pytest.raises(InputError, match="run folder .*nowhere' does not exist"):
        load(tmp_path / "nowhere")
