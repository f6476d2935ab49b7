"""Hostile files and unwritable places: each one line naming the file and the problem (exit 2), nothing lost."""

import errno
import json
import os
import stat

import numpy as np
import pytest
import torch
from cli_checks import SMALL_RUN, one_line

from ppl_vae import checkpoint, run
from ppl_vae.checkpoint import load_checkpoint, save_checkpoint
from ppl_vae.cli import main
from ppl_vae.config import RunConfig
from ppl_vae.data import load_dataset
from ppl_vae.errors import InputError


class Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"is empty \(0 bytes\)"),
        ("truncated", r"\(RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central"),
        (b"just some text", r"\(UnpicklingError|\(KeyError|truncated, or not a file written by 'ppl-vae train'"),
        ("payload", r"holds objects other than tensors and plain containers.*: refused, weights-only loading runs no"),
        ("list", r"has no model weights \(found list\)"),
        ("foreign", r"has no model weights \(found dict with keys \['weights'\]\)"),
    ],
)
def test_a_damaged_or_malicious_checkpoint_is_one_line_and_runs_no_code(tmp_path, content, message):
    path, marker = tmp_path / "checkpoint.pt", tmp_path / "marker"
    if content == "truncated":
        save_checkpoint(path, {"model": {"w": torch.ones(100)}})
        path.write_bytes(path.read_bytes()[:200])
    elif content == "payload":
        torch.save({"model": Payload(str(marker))}, path)
    elif content in ("list", "foreign"):
        torch.save([1, 2] if content == "list" else {"weights": torch.ones(1)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message) as refused:
        load_checkpoint(path)
    assert "\n" not in str(refused.value) and "weights_only" not in str(refused.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda path: path.write_text("{not json"), "config.json': config is not valid JSON"),
        (lambda path: path.write_bytes(b'{"model": "\xff"}'), "config.json' is not UTF-8 text (byte 11)"),
        (lambda raw: raw["train"].update(surprise=1), "config section 'train' has unknown keys ['surprise']"),
        (lambda raw: raw["model"].update(pixel_scale=True), "--pixel-scale must be a positive number, got True"),
        (lambda raw: raw["data"].update(name=5), "--data must be a name"),
        (lambda raw: raw["model"].update(hidden=[[1]]), "--hidden widths must be an integer"),
        (lambda raw: raw.update(schema_version=99), "schema_version 99: this ppl_vae reads versions 1 to 2"),
    ],
)
def test_a_damaged_config_json_is_one_line_naming_it(run_dir, capsys, edit, message):
    path = run_dir / "config.json"
    if edit.__code__.co_varnames[0] == "path":
        edit(path)
    else:
        raw = json.loads(path.read_text())
        edit(raw)
        path.write_text(json.dumps(raw))
    for argv in (["evaluate", str(run_dir)], ["train", "--resume", "--out", str(run_dir)]):
        assert main(argv) == 2
        line = one_line(capsys)
        assert f"'{path}'" in line and message in line, line


def test_a_config_json_without_a_schema_version_is_version_1_with_todays_defaults(run_dir):
    raw = json.loads((run_dir / "config.json").read_text())
    assert raw["schema_version"] == 2
    del raw["schema_version"], raw["train"]["on_nan"], raw["train"]["max_nan_skips"]
    config = RunConfig.from_json(json.dumps(raw))
    assert (config.train.on_nan, config.train.max_nan_skips) == ("stop", 10)


def test_garbage_metrics_json_at_evaluate_is_one_line(run_dir, capsys):
    (run_dir / "metrics.json").write_bytes(b"\x00garbage")
    assert main(["evaluate", str(run_dir), "--k", "100", "--gap-examples", "0", "--draws", "100"]) == 2
    assert f"'{run_dir / 'metrics.json'}' is not JSON" in one_line(capsys)


def npz(path, **arrays):
    np.savez(path, **arrays)
    return path


X = np.random.default_rng(0).random((10, 64)).astype(np.float32)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
        (lambda p: p.write_text("hello"), "is not a zip file: expected an .npz archive"),
        (lambda p: p.mkdir(), "is a folder: expected an .npz file"),
        (lambda p: npz(p, x_train=X, x_test=np.full_like(X, np.nan)), "x_test has 640 NaN or infinite values"),
        (lambda p: npz(p, x_train=X, x_test=X[:0]), "x_test has shape (0, 64): expected a non-empty"),
        (lambda p: npz(p, x_train=X.astype(np.int64), x_test=X), "x_train has dtype int64"),
        (lambda p: npz(p, x_train=X, x_test=X, y_train=np.arange(9), y_test=np.arange(10)), "y_train has shape (9,)"),
        (lambda p: npz(p, x_train=X, x_test=X, y_train=np.arange(10), y_test=-np.arange(10)), "y_test has min -9"),
        (
            lambda p: npz(p, x_train=X, x_test=X, y_train=np.full(10, 10**12), y_test=np.arange(10)),
            "y_train has max 1000000000000: expected class labels below 10000",
        ),
        (lambda p: npz(p, x_train=np.array([{}] * 10), x_test=X), "holds arrays of Python objects"),
    ],
)
def test_a_damaged_npz_is_one_line_naming_it(tmp_path, make, message):
    path = tmp_path / "data.npz"
    make(path)
    with pytest.raises(InputError) as refused:
        load_dataset(str(path))
    assert str(path) in str(refused.value) and message in str(refused.value), refused.value


def test_a_test_set_of_one_example_trains_and_evaluates_to_valid_json_without_a_false_collapse(digits, tmp_path):
    data = npz(tmp_path / "one.npz", x_train=digits.x_train[:200].numpy(), x_test=digits.x_test[:1].numpy())
    run_dir = tmp_path / "run"
    argv = ["--data", str(data), "--z-dim", "3", "--hidden", "16", "--eval-particles", "2", "--out", str(run_dir)]
    assert main(["train", "--epochs", "1", "--k", "5", "--no-progress", *argv]) == 0
    assert main(["evaluate", str(run_dir), "--k", "100", "--gap-examples", "0", "--draws", "100"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text(), parse_constant=pytest.fail)
    assert metrics["test_elbo_se"] is None and np.isfinite(metrics["test_elbo"])
    report = json.loads((run_dir / "report.json").read_text(), parse_constant=pytest.fail)
    assert report["collapsed"] is False and report["activity"] == []
    assert (run_dir / "latent.png").stat().st_size > 0


def test_out_that_is_a_file_or_unwritable_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out, message in ((afile, "is a file: expected a folder"), (afile / "run", "is a file, so the folder cannot")):
        assert main(["train", "--epochs", "1", *SMALL_RUN, "--out", str(out)]) == 2
        assert message in one_line(capsys)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(run.tempfile, "TemporaryFile", full)
    out = tmp_path / "new" / "run"
    assert main(["train", "--epochs", "1", *SMALL_RUN, "--out", str(out)]) == 2
    assert one_line(capsys) == (
        f"ppl-vae: error: --out '{out}': cannot write in '{tmp_path}' (No space left on device)"
    )
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()
    assert main(["train", "--epochs", "1", *SMALL_RUN, "--out", str(out)]) == 0  # missing parents are made


def test_a_disk_that_fills_during_training_keeps_the_last_checkpoint_and_reports_no_result(
    tmp_path, capsys, monkeypatch
):
    """The second checkpoint's write fails half way (ENOSPC): exit 2, one line, the epoch-1 checkpoint loads, no
    metrics.json and no temporary file are left."""
    writes, save = [], torch.save

    def failing(state, file, *args, **kwargs):
        writes.append(1)
        if len(writes) == 2:
            file.write(b"PK half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(state, file, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", failing)
    run_dir = tmp_path / "run"
    assert main(["train", "--epochs", "3", *SMALL_RUN, "--out", str(run_dir)]) == 2
    assert one_line(capsys).endswith("checkpoint.pt': No space left on device; its previous contents are kept")
    assert len(load_checkpoint(run_dir / "checkpoint.pt")["history"]) == 1
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint.pt", "config.json", "environment.json"]


def test_a_read_only_run_folder_at_evaluate_is_one_line(run_dir, capsys, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(run.tempfile, "TemporaryFile", read_only)
    assert main(["evaluate", str(run_dir), "--k", "100", "--gap-examples", "0", "--draws", "100"]) == 2
    assert one_line(capsys) == (
        f"ppl-vae: error: evaluate '{run_dir}': cannot write in '{run_dir}' (Read-only file system)"
    )


def test_the_files_of_a_run_folder_share_their_permissions(one_epoch_run):
    umask = os.umask(0)
    os.umask(umask)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in one_epoch_run.iterdir()}
    assert set(modes) >= {"config.json", "checkpoint.pt", "metrics.json", "elbo.png"}
    assert set(modes.values()) == {0o666 & ~umask}, modes
