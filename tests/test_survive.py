"""Runs that survive: signals, non-finite steps, divergence, atomic checkpoints, exact resumes (every fault injected,
and shown to lose nothing)."""

import copy
import dataclasses
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pyro
import pytest
import torch
from cli_checks import SMALL_RUN

from ppl_vae import train as train_module
from ppl_vae.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from ppl_vae.cli import main
from ppl_vae.config import TrainConfig
from ppl_vae.errors import InputError
from ppl_vae.interrupt import Interrupted
from ppl_vae.nonfinite import Diverged, NonFiniteStep, divergence_threshold
from ppl_vae.objectives import make_step
from ppl_vae.programs import as_user_program
from ppl_vae.resume import rng_state, set_rng_state
from ppl_vae.train import fit, seed_everything
from ppl_vae.vae import VAE

STEPS = math.ceil(1497 / 64)
"""Minibatches of 64 in an epoch of the digits' 1497 training images."""


def without_seconds(history):
    return [{key: value for key, value in record.items() if key != "seconds"} for record in history]


def at_step(monkeypatch, when, action):
    """Call ``action(x)`` (it may return a replacement minibatch) at the training steps numbered in ``when`` (from 1,
    counted over the run), by wrapping the trainer's per-step binarization of the digits."""
    calls = []
    binarize = train_module.binarize

    def counted(x, generator=None):
        calls.append(1)
        x = binarize(x, generator)
        if len(calls) in when:
            replaced = action(x)
            return x if replaced is None else replaced
        return x

    monkeypatch.setattr(train_module, "binarize", counted)


def send(signum, times=1):
    def action(x):
        for _ in range(times):
            os.kill(os.getpid(), signum)

    return action


def noisy_program(config):
    """The built-in VAE whose model also draws from NumPy and Python's ``random`` at every call, so that their states
    move during training (and a resume must bring back all of them)."""
    seed_everything(0)
    vae = VAE(config)
    program = as_user_program(vae)

    def model(x, *args):
        np.random.standard_normal()  # a cached Gaussian half the time: NumPy's whole state matters
        random.random()
        return program.model(x, *args)

    return vae, dataclasses.replace(program, model=model)


def draws(generator_state):
    generator = torch.Generator().manual_seed(0)
    generator.set_state(generator_state)
    return (
        torch.rand(3).tolist(),
        random.random(),
        np.random.standard_normal(3).tolist(),
        torch.rand(3, generator=generator).tolist(),
    )


def test_a_signal_mid_epoch_leaves_a_checkpoint_that_resumes_to_the_uninterrupted_numbers(
    digits, small_config, tmp_path, monkeypatch
):
    """SIGINT at step 30 (epoch 2, step 7): the step finishes, a checkpoint part-way through the epoch is written and
    Interrupted raised; the resumed run has the uninterrupted run's history, weights and every RNG's next draws.
    (The program draws from Python's random and NumPy, which the compiled tier refuses with a warning: fast path.)"""
    config = TrainConfig(epochs=3, eval_particles=2, path="fast")
    vae, program = noisy_program(small_config)
    straight = fit(program, digits, config, run_dir=tmp_path / "straight", progress=False)
    expected = draws(load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["rng"]["generator"])
    weights = {name: value.clone() for name, value in vae.state_dict().items()}

    at_step(monkeypatch, {STEPS + 7}, send(signal.SIGINT))
    vae, program = noisy_program(small_config)
    with pytest.raises(Interrupted, match="SIGINT at epoch 2, step 7") as stopped:
        fit(program, digits, config, run_dir=tmp_path / "run", progress=False)
    assert stopped.value.exit_status == 130
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert len(saved["history"]) == 1 and saved["partial"]["done"] == 7

    monkeypatch.undo()
    torch.manual_seed(123), np.random.seed(5), random.seed(7)  # whatever happens in between must not matter
    vae, program = noisy_program(small_config)
    resumed = fit(program, digits, config, run_dir=tmp_path / "run", resume=True, progress=False)
    assert without_seconds(resumed) == without_seconds(straight)
    for name, value in vae.state_dict().items():
        assert torch.equal(value, weights[name]), name
    assert draws(load_checkpoint(tmp_path / "run" / "checkpoint.pt")["rng"]["generator"]) == expected


def test_the_whole_numpy_state_survives_a_checkpoint(tmp_path):
    """NumPy part-way through its key (position != 624) with a cached Gaussian, Python's random, torch's and a
    generator's states, through a weights-only checkpoint: the same draws after restoring."""
    np.random.seed(3)
    np.random.standard_normal(5)  # odd count: one Gaussian cached
    random.seed(4)
    generator = torch.Generator().manual_seed(9)
    torch.rand(7, generator=generator)
    save_checkpoint(tmp_path / "c.pt", {"model": {}, "rng": rng_state(generator)})
    assert np.random.get_state()[2] != 624 and np.random.get_state()[3] == 1
    before = draws(generator.get_state())
    np.random.seed(0), random.seed(0), torch.manual_seed(0)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"], generator)
    assert draws(generator.get_state()) == before


def test_sigterm_during_training_exits_143_with_one_line_and_resumes(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    at_step(monkeypatch, {5}, send(signal.SIGTERM))
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--epochs", "2", *SMALL_RUN, "--out", str(run_dir)])
    assert stopped.value.code == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"ppl-vae: SIGTERM at epoch 1, step 5: the checkpoint holds every finished step; continue with: "
        f"ppl-vae train --resume --out {run_dir}"
    )
    assert not (run_dir / "metrics.json").exists()
    monkeypatch.undo()
    assert main(["train", "--resume", "--out", str(run_dir), "--no-progress"]) == 0
    assert json.loads((run_dir / "metrics.json").read_text())["resumes"] == [
        {"epoch": 0, "step": 5, "changes": {}, "world_size": 1}
    ]


def test_a_second_sigint_stops_at_once_and_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    at_step(monkeypatch, {STEPS + 3}, send(signal.SIGINT, times=2))
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--epochs", "2", *SMALL_RUN, "--out", str(run_dir)])
    assert stopped.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"ppl-vae: interrupted at once: the last checkpoint is kept; continue with: ppl-vae train --resume --out "
        f"{run_dir}"
    )
    saved = load_checkpoint(run_dir / "checkpoint.pt")
    assert len(saved["history"]) == 1 and "partial" not in saved
    assert sorted(path.name for path in run_dir.iterdir()) == ["checkpoint.pt", "config.json", "environment.json"]


@pytest.mark.parametrize("fault", [KeyboardInterrupt, OSError])
def test_a_write_that_fails_half_way_keeps_the_previous_checkpoint(tmp_path, fault):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}})

    def half(file):
        torch.save({"model": {"w": torch.zeros(1000)}}, file)
        file.truncate(file.tell() // 2)
        raise fault(28, "No space left on device") if fault is OSError else fault()

    with pytest.raises(InputError if fault is OSError else KeyboardInterrupt):
        atomic_write(path, half)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_sigkill_while_writing_leaves_the_previous_checkpoint_loadable(tmp_path):
    """A child process writes a checkpoint, then starts a second one and is killed (SIGKILL) half way through it."""
    path = tmp_path / "checkpoint.pt"
    child = textwrap.dedent(
        f"""
        import sys, time, torch
        from ppl_vae.checkpoint import atomic_write, save_checkpoint
        save_checkpoint({str(path)!r}, {{"model": {{"w": torch.ones(3)}}}})
        def slow(file):
            file.write(b"PK" + b"0" * 100000)
            file.flush()
            print("writing", flush=True)
            time.sleep(60)
        atomic_write({str(path)!r}, slow)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "writing"
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        process.kill()
        process.stdout.close()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("plain", "a distribution's parameters are not finite (Expected parameter loc (Tensor of shape (64, 2)))"),
        ("auto", "the loss is nan"),  # Pyro's validation is off after the first update: the NaN reaches the loss
    ],
)
def test_a_non_finite_step_stops_naming_epoch_step_and_site_and_keeps_the_last_checkpoint(
    path, reason, tmp_path, capsys, monkeypatch
):
    """NaN pixels at epoch 2, step 3 (the encoder turns them into NaN locations of q(z | x), which Pyro refuses on
    the plain path): exit 1, one line naming the epoch, the step and the guide's site; the epoch-1 checkpoint and
    finite weights stay, no metrics.json is written."""
    run_dir = tmp_path / "run"
    at_step(monkeypatch, {STEPS + 3}, lambda x: torch.full_like(x, math.nan))
    assert main(["train", "--epochs", "3", *SMALL_RUN, "--path", path, "--out", str(run_dir)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith(
        f"ppl-vae: error: non-finite training step at epoch 2, step 3: {reason}; the log-density of site 'z' of the "
        "guide is not finite; the update was not applied and training stopped; lower --lr (now 0.001) or "
        "pass --on-nan skip; the last finite checkpoint is kept in"
    ), err
    saved = load_checkpoint(run_dir / "checkpoint.pt")
    assert len(saved["history"]) == 1
    assert all(torch.isfinite(value).all() for value in saved["model"].values())
    assert not (run_dir / "metrics.json").exists()


def test_a_step_that_is_not_finite_changes_neither_weights_nor_optimizer(digits, small_config):
    vae = VAE(small_config)
    step = make_step(as_user_program(vae), TrainConfig())
    x = digits.x_train[:64].bernoulli()
    step(x)
    weights, optimizer = copy.deepcopy(vae.state_dict()), copy.deepcopy(step.state_dict())
    with pyro.validation_enabled(False), pytest.raises(NonFiniteStep, match="the loss is nan"):
        step(torch.full_like(x, math.nan))
    assert same(vae.state_dict(), weights) and same(step.state_dict(), optimizer)
    step(x)
    assert not same(vae.state_dict(), weights)


def same(a, b) -> bool:
    """Equal nested dicts / lists of tensors and numbers."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(u, v) for u, v in zip(a, b, strict=True))
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def test_skip_drops_non_finite_steps_counts_them_and_stops_past_the_limit(digits, small_config, monkeypatch):
    nan = lambda x: torch.full_like(x, math.nan)  # noqa: E731
    at_step(monkeypatch, {3, STEPS + 4}, nan)
    seed_everything(0)
    history = fit(VAE(small_config), digits, TrainConfig(epochs=2, on_nan="skip", max_nan_skips=2), progress=False)
    assert [record.get("nan_skips", 0) for record in history] == [1, 1]
    assert all(math.isfinite(record["test_elbo"]) for record in history)

    at_step(monkeypatch, {3, 5}, nan)
    seed_everything(0)
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 5 after 1 skipped steps \(--max-nan-skips\)"):
        fit(VAE(small_config), digits, TrainConfig(epochs=1, on_nan="skip", max_nan_skips=1), progress=False)


def test_a_learning_rate_far_too_large_is_one_line_not_pyros_traceback(digits, small_config):
    """lr 1e3: the weights are still finite, but the encoder's outputs overflow and Pyro refuses the guide's Normal
    ("Expected parameter ... found invalid values"): the same one-line stop, naming the guide's site."""
    seed_everything(0)
    with pytest.raises(FloatingPointError) as stopped:
        fit(VAE(small_config), digits, TrainConfig(epochs=1, lr=1e3), progress=False)
    message = str(stopped.value)
    assert "\n" not in message and "found invalid values" not in message
    assert re.search(r"at epoch 1, step \d+: .*site 'z' of the guide is not finite", message), message


def test_a_run_that_diverges_while_finite_stops_instead_of_reporting_a_result(digits, small_config):
    """--scale-param softplus --lr 1e4 stays finite but its test ELBO falls to about -1e18 nats per example."""
    seed_everything(0)
    vae = VAE(dataclasses.replace(small_config, scale_param="softplus"))
    with pytest.raises(Diverged, match=r"training diverged: test ELBO -\d.*e\+\d+ nats per example at epoch 1, far"):
        fit(vae, digits, TrainConfig(epochs=2, lr=1e4), progress=False)
    assert divergence_threshold(-44.0) == -440.0 and divergence_threshold(0.5) == -8.5


def test_ctrl_c_in_evaluate_is_one_line(tmp_path, capsys, monkeypatch):
    from ppl_vae import run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "evaluate_run", interrupted)
    assert main(["evaluate", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip() == "ppl-vae: interrupted"


def test_a_reader_that_leaves_early_stops_the_run_in_one_line_and_it_resumes(tmp_path):
    """``ppl-vae train | head -1``: the first epoch's line is read, the pipe is closed; the writer stops with exit
    141 (128 + SIGPIPE) and one stderr line after its progress bars, no traceback, and the run resumes from its last
    checkpoint."""
    run_dir = tmp_path / "run"
    flags = [flag for flag in SMALL_RUN if flag != "--no-progress"]  # the epoch lines are progress output
    command = [sys.executable, "-m", "ppl_vae", "train", "--epochs", "3", *flags, "--out", str(run_dir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().startswith("epoch   1/3")
        process.stdout.close()
        assert process.wait(timeout=120) == 141
        stderr = process.stderr.read()
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()
    assert "Traceback" not in stderr
    assert stderr.endswith("ppl-vae: output closed (broken pipe), stopped\n"), stderr[-300:]
    assert len(load_checkpoint(run_dir / "checkpoint.pt")["history"]) >= 1
    assert main(["train", "--resume", "--out", str(run_dir), "--no-progress"]) == 0
    assert len(json.loads((run_dir / "metrics.json").read_text())["history"]) == 3


class _InterruptedImport:
    """A meta-path finder that raises KeyboardInterrupt when ``ppl_vae.cli`` is imported: a Ctrl-C in the seconds
    while torch, Pyro and ArviZ load."""

    def find_spec(self, name, path=None, target=None):
        if name == "ppl_vae.cli":
            raise KeyboardInterrupt
        return None


def test_a_ctrl_c_while_the_command_line_imports_is_one_line(monkeypatch, capsys):
    from ppl_vae import console

    monkeypatch.delitem(sys.modules, "ppl_vae.cli")
    monkeypatch.setattr(sys, "meta_path", [_InterruptedImport(), *sys.meta_path])
    assert console.main() == 130
    assert capsys.readouterr().err.strip() == "ppl-vae: interrupted"


def test_importing_the_package_loads_neither_torch_nor_pyro():
    """``import ppl_vae`` is light (its names load on first use), so that the console script's guard above covers
    the heavy imports; ``from ppl_vae import fit`` still works."""
    code = "import sys, ppl_vae; print(sorted({'torch', 'pyro'} & set(sys.modules))); from ppl_vae import fit, VAE"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
