"""The benchmarks of issue 10 run with tiny sizes (training: epoch_speed.py, evaluation: eval_speed.py), and their
baselines are the same computation as the project's step and evaluation."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # their shared modules (machine.py), as when a benchmark runs as a script


def load_benchmark(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


epoch_speed = load_benchmark("epoch_speed")


def test_epoch_speed_reports_every_configuration_and_runner(tmp_path):
    out = tmp_path / "results.json"
    tiny = ["--rounds", "1", "--steps", "2", "--warmup", "1", "--train-examples", "130", "--memory", "none"]
    result = epoch_speed.main([*tiny, "--out", str(out)])
    assert out.exists() and result["environment"]["threads"] == 1
    assert set(result["configurations"]) == set(epoch_speed.CONFIGURATIONS)
    runners = {*epoch_speed.BASELINES, *epoch_speed.OBJECTIVES}
    for configuration in result["configurations"].values():
        assert set(configuration["rows"]) == runners
        for row in configuration["rows"].values():
            for key in (
                "epoch_seconds",
                "ms_per_step",
                "images_per_second",
                "epoch_seconds_ratio",
                "ms_per_step_ratio",
            ):
                assert math.isfinite(row[key]) and row[key] > 0, (key, row)
            assert row["steps_per_epoch"] >= 1
    assert "iwae" not in result  # training only: evaluation is eval_speed.py's


def test_memory_probe_measures_each_runner_in_a_subprocess():
    args = epoch_speed.parse(["--train-examples", "64", "--warmup", "1"])
    data = epoch_speed.load_data("digits", 64)
    setup = epoch_speed.Setup.create("mlp-64-128-8-b64", data, torch.device("cpu"), seed=0)
    runners = [*epoch_speed.BASELINES, "trace"]
    memory = epoch_speed.measure_memory(setup, runners, ["--train-examples", "64", "--warmup", "1"], args)
    assert set(memory) == set(runners) and all(math.isfinite(value) and value >= 0 for value in memory.values())


@pytest.mark.parametrize("configuration", list(epoch_speed.CONFIGURATIONS))
@pytest.mark.parametrize("plain, project", [("plain-mc", "reference-mc"), ("plain-analytic", "reference-analytic")])
def test_plain_loop_computes_the_projects_first_loss(configuration, plain, project):
    """One minibatch per epoch: the epoch's loss is the first step's. Same weights, seed, data path and noise."""
    batch_size = epoch_speed.CONFIGURATIONS[configuration].batch_size
    data = epoch_speed.load_data(epoch_speed.CONFIGURATIONS[configuration].data, min(batch_size, 128))
    setup = epoch_speed.Setup.create(configuration, data, torch.device("cpu"), seed=3)
    plain_loss = epoch_speed.build_runner(setup, plain).epoch()
    project_loss = epoch_speed.build_runner(setup, project).epoch()
    assert plain_loss == pytest.approx(project_loss, rel=1e-5)
    # and a different seed gives a different loss: the comparison sees the draws
    other = epoch_speed.Setup.create(configuration, data, torch.device("cpu"), seed=4)
    assert epoch_speed.build_runner(other, plain).epoch() != pytest.approx(plain_loss, rel=1e-5)


m2_labels = load_benchmark("m2_labels")


def test_m2_labels_writes_a_table_and_a_plot(tmp_path, monkeypatch):
    from ppl_vae import semisupervised

    monkeypatch.setattr(semisupervised, "BASELINE_STEPS", 20)  # the plumbing, not the baseline
    out = tmp_path / "m2.json"
    tiny = ["--labelled", "10,20", "--seeds", "0,1", "--epochs", "1", "--batch-size", "512", "--k", "2"]
    result = m2_labels.main([*tiny, "--hidden", "8", "--z-dim", "2", "--eval-particles", "2", "--out", str(out)])
    assert [row["labelled"] for row in result["summary"]] == [10, 20]
    assert all(row["seeds"] == 2 and 0 <= row["test_accuracy"] <= 1 for row in result["summary"])
    assert "| 10 |" in out.with_suffix(".md").read_text() and out.with_suffix(".png").stat().st_size > 0


def test_eval_speed_quick_run_on_a_tiny_size(tmp_path):
    """The evaluation benchmark's --quick run, tiny: both sides timed, JSON and Markdown written, and the hand-written
    IWAE computes the project's numbers from the same draws (a baseline that did other work would differ)."""
    eval_speed = load_benchmark("eval_speed")
    out = tmp_path / "eval.json"
    argv = ["--quick", "--examples", "40", "--k", "24", "--batch-size", "16", "--rounds", "1", "--out", str(out)]
    result = eval_speed.main(argv)
    assert result["examples"] == 40 and result["environment"]["threads"] == 1
    assert out.exists() and "hand-written vectorized IWAE" in out.with_suffix(".md").read_text()
    for side in ("ppl_vae", "plain"):
        assert math.isfinite(result[side]["examples_per_second"]) and result[side]["examples_per_second"] > 0
    assert math.isfinite(result["ratio"]) and result["ratio"] > 0
    assert result["max_abs_difference"] < 1e-3, result["max_abs_difference"]


def test_ddp_speed_times_a_torchrun_run_on_a_tiny_size(tmp_path):
    """The data-parallel benchmark with tiny sizes: one configuration, 2 processes under torchrun, its seconds per
    epoch read from the run's metrics.json and written to the JSON result."""
    ddp_speed = load_benchmark("ddp_speed")
    out = tmp_path / "ddp.json"
    argv = ["--configurations", "mlp", "--processes", "2", "--epochs", "1", "--train-examples", "40"]
    result = ddp_speed.main([*argv, "--batch-size", "20", "--cpu-threads", "2", "--out", str(out)])
    (row,) = result["rows"]["mlp"].values()
    assert row["processes"] == 2 and row["epoch_seconds"] > 0 and row["speed_up"] == 1.0
    assert json.loads(out.read_text())["rows"] == result["rows"]


def test_heads_study_quick_writes_every_question(tmp_path):
    heads_study = load_benchmark("heads_study")
    result = heads_study.main(["--quick", "--out", str(tmp_path)])
    assert set(result["questions"]) == {"mechanism", "optimizer", "lr", "zdim", "inactive"}
    assert len(result["heads"]) == len({tuple(run.values()) for runs in result["questions"].values() for run in runs})
    text = (tmp_path / "heads_study.md").read_text()
    assert "log_scale, scale step x0.5 - log_var" in text and "log_scale, scale step x0.25 - log_var" in text
    for name in ("mechanism", "optimizer", "lr", "zdim", "inactive"):
        assert (tmp_path / f"heads_{name}.png").stat().st_size > 0
