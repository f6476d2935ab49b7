"""Data-parallel training (ppl_vae.distributed, sharding, data_parallel, launch): two CPU processes on gloo, with
short collective timeouts so that a broken rank fails the test in seconds.

- after every update every rank holds rank 0's parameters; the train ELBO is the global one on every rank;
- with keyed noise, 2 processes with per-rank batch B/2 take the steps of 1 process with batch B (float64), and a run
  checkpointed by 2 processes resumes in 1 with the numbers of an uninterrupted single-process run;
- with keyed noise M2 (y enumerated, labels on either rank) trains in 2 processes as in 1;
- ``ppl-vae train --nproc 2`` trains a user's program, records ``world_size`` and resumes with another count;
- a rank killed mid-run (SIGKILL) leaves its last checkpoint intact and the run resumable.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from cli_checks import one_error_line
from ddp_workers import TIMEOUT_S, small_data, train_small, train_small_m2, train_two, train_until_killed

from ppl_vae.checkpoint import load_checkpoint
from ppl_vae.cli import main
from ppl_vae.errors import InputError
from ppl_vae.launch import torchrun_command, without_nproc
from ppl_vae.sharding import Sharding

TESTS = Path(__file__).parent
ROOT = TESTS.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, digits):
    """:func:`ddp_workers.train_two` on 2 forked processes: what rank 0 saved, and its folder."""
    folder = tmp_path_factory.mktemp("ddp")
    arguments = (2, free_port(), str(folder), small_data(digits))
    mp.start_processes(train_two, args=arguments, nprocs=2, join=True, start_method="fork")
    return torch.load(folder / "rank0.pt", weights_only=False), folder


@pytest.fixture
def data(digits, float64):
    return small_data(digits)


def assert_same_weights(a: dict, b: dict, rtol: float = 1e-9) -> None:
    for key, value in a.items():
        torch.testing.assert_close(value, b[key], rtol=rtol, atol=1e-12)


def test_every_update_leaves_the_ranks_with_the_same_parameters(two_process_run):
    saved, _ = two_process_run
    # 3 runs of 2 epochs of 5 global minibatches (15, 15, 15, 15, 4); each update checked on both ranks
    assert saved["steps"] == 10 and saved["checked"] == 30
    first, second = saved["train_elbos"]
    assert torch.equal(first, second)  # the global minibatches' loss, summed over the ranks, on every rank


def assert_same_run(two: tuple, one: tuple) -> None:
    """``(history, weights)`` of a two-process run equal to one process's: the weights, and every epoch's train and
    held-out ELBO, to float64 rounding."""
    assert_same_weights(two[1], one[1])
    for a, b in zip(two[0], one[0], strict=True):
        assert a["train_elbo"] == pytest.approx(b["train_elbo"], rel=1e-9)
        assert a["test_elbo"] == pytest.approx(b["test_elbo"], rel=1e-9)


def test_keyed_noise_two_processes_take_the_steps_of_one(two_process_run, data):
    saved, _ = two_process_run
    assert_same_run(saved["keyed"], train_small(data, keyed_noise=True))


def test_keyed_noise_two_processes_train_m2_as_one(two_process_run, data):
    """M2 with y enumerated and 20 labels among the 64 examples: the labelled rows of each global minibatch fall to
    either rank, and the classification term, the enumerated sum and the held-out ELBO still add up to one
    process's."""
    saved, _ = two_process_run
    assert_same_run(saved["m2"], train_small_m2(data, keyed_noise=True))


def test_without_keyed_noise_the_ranks_draw_their_own_noise(two_process_run, data):
    saved, _ = two_process_run
    history, weights = saved["default"]
    one = train_small(data)
    # the same data order and the same start, other draws: close, not equal
    assert not torch.allclose(weights["encoder.net.0.weight"], one[1]["encoder.net.0.weight"], rtol=1e-6)
    assert history[-1]["train_elbo"] == pytest.approx(one[0][-1]["train_elbo"], rel=0.05)


def test_a_run_of_two_processes_resumes_in_one_with_the_numbers_of_one(two_process_run, data, tmp_path):
    _, folder = two_process_run
    run_dir = tmp_path / "keyed"
    shutil.copytree(folder / "keyed", run_dir)
    assert load_checkpoint(run_dir / "checkpoint.pt")["world_size"] == 2
    resumed = train_small(data, run_dir=run_dir, resume=True, keyed_noise=True, epochs=3)
    uninterrupted = train_small(data, keyed_noise=True, epochs=3)
    assert_same_weights(resumed[1], uninterrupted[1])


def test_rows_split_every_global_minibatch_in_order():
    for size in (1, 2, 7, 15, 64):
        for world in (1, 2, 3, 8):
            if size < world:
                continue
            parts = [Sharding(seed=0, rank=rank, world=world).rows(size) for rank in range(world)]
            expected = [(int(part[0]), int(part[-1]) + 1) for part in torch.arange(size).tensor_split(world)]
            assert parts == expected


def test_keyed_noise_refuses_what_it_cannot_key(data):
    with pytest.raises(InputError, match="--keyed-noise draws Normal latent sites, and site 'z' is"):
        _train_lowrank(data)
    with pytest.raises(InputError, match="--path plain trains one process with its own noise; with --keyed-noise"):
        train_small(data, keyed_noise=True, path="plain")
    with pytest.raises(InputError, match="RenyiELBO \\(--elbo iwae\\) has no differentiable loss"):
        train_small(data, keyed_noise=True, elbo="iwae", num_particles=2)
    with pytest.raises(InputError, match="--elbo reference-mc trains one process"):
        train_small(data, keyed_noise=True, elbo="reference-mc")


def _train_lowrank(data):
    from ppl_vae.config import TrainConfig
    from ppl_vae.run import model_config_for
    from ppl_vae.train import fit
    from ppl_vae.vae import VAE

    vae = VAE(model_config_for(data, z_dim=2, hidden=(8,), guide="lowrank"))
    fit(vae, data, TrainConfig(epochs=1, batch_size=15, keyed_noise=True), progress=False)


@pytest.mark.parametrize("value", ["0", "-1", "true", "2.5", "100000"])
def test_nproc_takes_a_sane_count(value, capsys):
    assert main(["train", "--nproc", value, "--epochs", "1"]) == 2
    assert one_error_line(capsys).startswith("ppl-vae: error: --nproc must be an integer from 1 to 1024")


def test_nproc_runs_torchrun_with_the_other_flags():
    argv = ["train", "--nproc", "2", "--epochs", "1", "--nproc=3", "--out", "x"]
    assert without_nproc(argv) == ["train", "--epochs", "1", "--out", "x"]
    command = torchrun_command(2, without_nproc(argv))
    assert command[1:5] == ["-m", "ppl_vae.torchrun", "--standalone", "--nproc_per_node=2"]
    assert command[5:] == ["-m", "ppl_vae", "train", "--epochs", "1", "--out", "x"]


def test_nproc_trains_a_users_program_and_resumes_with_another_count(tmp_path, monkeypatch, capfd):
    # torchrun's workers: one thread each, short collective timeouts, tests/ importable (the users' programs)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PPL_VAE_DIST_TIMEOUT", str(TIMEOUT_S))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.chdir(ROOT)
    run_dir = tmp_path / "run"
    program = ["--program", "user_programs:build_vae", "--k", "5", "--eval-particles", "2", "--no-progress"]
    with pytest.raises(SystemExit) as exited:  # the status of torchrun, which --nproc ran
        main(["train", "--nproc", "2", "--epochs", "1", *program, "--out", str(run_dir)])
    out, err = capfd.readouterr()
    assert exited.value.code == 0, err[-2000:]
    assert out.count("run folder:") == 1  # rank 0 alone prints
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["epochs"] == 1
    assert main(["train", "--resume", "--trust-program", "--epochs", "2", "--no-progress", "--out", str(run_dir)]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 1 and metrics["epochs"] == 2
    assert metrics["resumes"] == [{"epoch": 1, "step": 0, "changes": {"train.epochs": [1, 2]}, "world_size": 1}]


def test_a_rank_killed_mid_run_leaves_the_last_checkpoint_and_the_run_resumable(data, tmp_path):
    run_dir = tmp_path / "run"
    arguments = (2, free_port(), str(run_dir), data)
    context = mp.start_processes(train_until_killed, args=arguments, nprocs=2, join=False, start_method="fork")
    deadline = time.monotonic() + 60
    while not (run_dir / "checkpoint.pt").is_file():
        assert all(process.is_alive() for process in context.processes) and time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(context.processes[1].pid, signal.SIGKILL)
    with pytest.raises(mp.ProcessExitedException, match="process 1 terminated with signal SIGKILL"):
        context.join(timeout=30)
    for process in context.processes:
        process.join(timeout=30)
        assert not process.is_alive()
    trained = len(load_checkpoint(run_dir / "checkpoint.pt")["history"])
    assert 1 <= trained < 200
    history, _ = train_small(data, run_dir=run_dir, resume=True, keyed_noise=True, epochs=trained + 1)
    assert [record["epoch"] for record in history] == list(range(1, trained + 2))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--elbo", "iwae"], "--elbo iwae trains one process with its own noise; with 2 processes use --elbo trace, "),
        (["--path", "plain"], "--path plain trains one process with its own noise; with 2 processes use --path auto"),
    ],
)
def test_nproc_refuses_what_a_sharded_run_cannot_train_before_starting_any_process(flags, message, capsys, monkeypatch):
    monkeypatch.setattr("ppl_vae.launch.launch", lambda *args: pytest.fail("launched"))
    assert main(["train", "--nproc", "2", "--epochs", "1", *flags]) == 2
    assert one_error_line(capsys).startswith(f"ppl-vae: error: {message}")


def test_a_failed_worker_under_nproc_is_one_line_with_its_exit_status(tmp_path, monkeypatch):
    """torchrun's report of a failed worker (a traceback and a framed table) becomes one line after the workers'
    own, and the exit status is the worker's (1: training stopped on a non-finite step)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PPL_VAE_DIST_TIMEOUT", str(TIMEOUT_S))
    monkeypatch.chdir(ROOT)
    flags = ["--lr", "1e6", "--epochs", "1", "--z-dim", "2", "--hidden", "8", "--no-progress"]
    argv = ["--standalone", "--nproc_per_node=2", "-m", "ppl_vae", "train", *flags, "--out", str(tmp_path / "run")]
    done = subprocess.run(
        [sys.executable, "-m", "ppl_vae.torchrun", *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"ppl-vae: rank [01] stopped with exit status 1 \(its message is above\)", last), last
