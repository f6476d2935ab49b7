"""``ppl-vae compare``: three small runs (plain seed 0, mog seed 0, plain seed 1) compared; settings that differ, the
results as metrics.json has them, paired differences against a hand computation from the per-example values, seeds
aggregated, sorting, the files, and one clear line for folders that are not runs or runs of different data."""

import csv
import io
import json
import math
import shutil

import numpy as np
import pytest
from cli_checks import one_error_line

from ppl_vae.cli import main
from ppl_vae.compare import compare, load_runs, paired_difference
from ppl_vae.config import EvalConfig, RunConfig, TrainConfig
from ppl_vae.environment import ENVIRONMENT_FILE
from ppl_vae.run import model_config_for, train_run
from ppl_vae.test_values import load_test_values


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory, digits):
    parent = tmp_path_factory.mktemp("compare")
    evaluation = EvalConfig(k=20, num_particles=5)
    for name, prior, seed in (("plain0", "normal", 0), ("mog0", "mog", 0), ("plain1", "normal", 1)):
        model = model_config_for(digits, z_dim=2, hidden=(16,), prior=prior, prior_components=3)
        train = TrainConfig(epochs=2, batch_size=256, lr=3e-3, seed=seed, eval_particles=5)
        train_run(RunConfig(model=model, train=train, evaluation=evaluation), parent / name, progress=False)
    return parent


def test_a_run_folder_stores_its_per_example_values_and_its_environment(three_runs):
    metrics = json.loads((three_runs / "plain0" / "metrics.json").read_text())
    values = load_test_values(three_runs / "plain0")
    assert values["elbo"].shape == values["log_likelihood"].shape == (300,)
    assert values["elbo"].mean() == pytest.approx(metrics["test_elbo"], abs=1e-4)
    assert values["log_likelihood"].mean() == pytest.approx(metrics["test_log_likelihood"], abs=1e-4)
    assert values["elbo"].std(ddof=1) / math.sqrt(300) == pytest.approx(metrics["test_elbo_se"], rel=1e-4)
    environment = json.loads((three_runs / "plain0" / ENVIRONMENT_FILE).read_text())
    assert all(environment["packages"][name] for name in ("torch", "pyro-ppl", "arviz", "numpy"))
    assert environment["device"] == "cpu" and environment["threads"] >= 1
    assert {"python", "git_commit", "git_dirty"} <= set(environment)


def test_compare_finds_the_differing_settings_and_pairs_runs_of_one_seed(three_runs):
    runs = load_runs([three_runs / "plain0", three_runs / "mog0", three_runs / "plain1"])
    result = compare(runs)
    assert result.settings == ["model.prior", "train.seed"]
    assert [row["run"] for row in result.rows] == ["plain0", "mog0", "plain1"]
    for row, run in zip(result.rows, runs, strict=True):
        assert row["test_elbo"] == run.metrics["test_elbo"]
        assert row["test_log_likelihood_se"] == run.metrics["test_log_likelihood_se"]
        assert row["seconds"] == run.metrics["seconds"]
    # only mog0 shares plain0's seed (and test set): one paired row, computed by hand here
    assert [row["run"] for row in result.paired] == ["mog0"]
    a, b = runs[1].values, runs[0].values
    for key in ("elbo", "log_likelihood"):
        d = a[key] - b[key]
        assert result.paired[0][f"{key}_diff"] == pytest.approx(d.sum() / d.size, abs=1e-9)
        hand_se = math.sqrt(((d - d.mean()) ** 2).sum() / (d.size - 1) / d.size)
        assert result.paired[0][f"{key}_diff_se"] == pytest.approx(hand_se, rel=1e-9)


def test_seeds_aggregate_into_mean_and_standard_error_over_seeds(three_runs):
    runs = load_runs([three_runs / "plain0", three_runs / "mog0", three_runs / "plain1"])
    result = compare(runs, aggregate_seeds=True)
    assert result.settings == ["model.prior"]
    rows = {row["run"]: row for row in result.rows}
    assert rows["plain0"]["seeds"] == 2 and rows["mog0"]["seeds"] == 1
    seeds = [runs[0].metrics["test_elbo"], runs[2].metrics["test_elbo"]]
    assert rows["plain0"]["test_elbo"] == pytest.approx(np.mean(seeds))
    assert rows["plain0"]["test_elbo_se"] == pytest.approx(abs(seeds[0] - seeds[1]) / 2)  # std(ddof=1) / sqrt(2)
    assert rows["mog0"]["test_elbo_se"] == runs[1].metrics["test_elbo_se"]
    assert result.paired[0]["seeds"] == 1
    d_mean, d_se = paired_difference(runs[1].values["elbo"], runs[0].values["elbo"])
    assert (result.paired[0]["elbo_diff"], result.paired[0]["elbo_diff_se"]) == pytest.approx((d_mean, d_se))


def test_the_command_sorts_prints_and_writes_markdown_csv_and_the_overlay(three_runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", str(three_runs / "*"), "--sort", "test_elbo", "--descending", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO((out / "compare.csv").read_text())))
    elbos = [float(row["test_elbo"]) for row in rows]
    assert elbos == sorted(elbos, reverse=True) and len(rows) == 3
    assert {row["model.prior"] for row in rows} == {"normal", "mog"}
    assert "| run | model.prior | train.seed | test ELBO | test log p(x) |" in printed
    assert (out / "compare.md").read_text() in printed
    assert (out / "compare_curves.png").stat().st_size > 0


def test_an_unknown_sort_column_and_a_bad_baseline_are_one_line(three_runs, tmp_path, capsys):
    run = str(three_runs / "plain0")
    assert main(["compare", run, "--sort", "elbo", "--out", str(tmp_path)]) == 2
    assert "--sort 'elbo' is not a column: expected one of run, " in one_error_line(capsys)
    assert main(["compare", run, "--baseline", "nope", "--out", str(tmp_path)]) == 2
    assert "--baseline 'nope' is none of the compared runs" in one_error_line(capsys)


def test_folders_that_are_not_runs_and_runs_of_other_data_are_refused(three_runs, tmp_path, capsys):
    assert main(["compare", str(three_runs / "plain0"), str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "has no config.json: expected a folder written by 'ppl-vae train'" in one_error_line(capsys)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(three_runs / "plain0" / "config.json", unfinished)
    assert main(["compare", str(three_runs / "plain0"), str(unfinished), "--out", str(tmp_path / "o")]) == 2
    assert "has no metrics.json: its training did not finish" in one_error_line(capsys)
    other = tmp_path / "other"
    shutil.copytree(three_runs / "plain0", other)
    config = json.loads((other / "config.json").read_text())
    config["data"]["name"] = "elsewhere.npz"
    (other / "config.json").write_text(json.dumps(config))
    assert main(["compare", str(three_runs / "plain0"), str(other), "--out", str(tmp_path / "o")]) == 2
    assert "runs on different data" in one_error_line(capsys)
    assert main(["compare", str(tmp_path / "nothing-*"), "--out", str(tmp_path / "o")]) == 2
    assert "matches no folder" in one_error_line(capsys)


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("config.json", b"\xae\xff", "config.json': 'utf-8' codec can't decode byte 0xae"),
        ("config.json", b'{"data": {}}', "config.json': config has sections ['data']"),
        ("metrics.json", b"[1, 2]", "metrics.json' holds list, expected a JSON object"),
        ("test_values.npz", b"not a zip archive", "test_values.npz' is not an npz file (damaged?)"),
    ],
)
def test_damaged_files_of_a_run_folder_are_one_line(three_runs, tmp_path, capsys, file, content, message):
    damaged = tmp_path / "damaged"
    shutil.copytree(three_runs / "plain0", damaged)
    (damaged / file).write_bytes(content)
    assert main(["compare", str(three_runs / "plain0"), str(damaged), "--out", str(tmp_path / "o")]) == 2
    assert message in one_error_line(capsys)


def test_many_differing_settings_share_one_column_of_what_differs_from_the_baseline():
    from ppl_vae.compare import Comparison

    settings = ["model.guide", "model.net", "model.prior", "train.anneal", "train.elbo"]
    base = {"model.guide": "diagonal", "model.net": "mlp", "model.prior": "normal", "train.anneal": "none"}
    base["train.elbo"] = "trace"
    rows = [{"run": "plain", **base}, {"run": "conv", **base, "model.net": "conv", "train.anneal": "linear"}]
    markdown = Comparison(settings, [], rows, baseline="plain").markdown()
    assert "| run | settings unlike 'plain' |" in markdown
    assert "| plain | (baseline) |" in markdown and "| conv | net=conv anneal=linear |" in markdown


def test_report_numbers_and_any_other_metric_get_columns(three_runs, tmp_path):
    for name, accuracy in (("a", 0.9), ("b", None)):
        shutil.copytree(three_runs / "plain0", tmp_path / name)
        (tmp_path / name / "report.json").write_text(json.dumps({"khat_share_above_0_7": 0.25, "active_units": 2}))
        if accuracy is not None:  # a semi-supervised run's numbers (issue 9's M2 family)
            metrics = json.loads((tmp_path / name / "metrics.json").read_text())
            metrics.update(test_accuracy=accuracy, test_accuracy_se=0.01, labelled=100, figures_skipped={})
            (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    result = compare(load_runs([tmp_path / "a", tmp_path / "b"]))
    assert result.results == [
        "test_elbo",
        "test_log_likelihood",
        "khat_share_above_0_7",
        "active_units",
        "labelled",
        "test_accuracy",
        "train_elbo",
        "seconds",
    ]
    assert result.rows[0]["test_accuracy"] == 0.9 and result.rows[0]["test_accuracy_se"] == 0.01
    assert "test_accuracy" not in result.rows[1] and result.rows[1]["active_units"] == 2
    markdown = result.markdown()
    assert "| k-hat > 0.7 | active units | labelled | test_accuracy |" in markdown
    assert "| 25.0% | 2 | 100 | 0.900 +- 0.010 |" in markdown
