"""A user's own program in a run folder: ``ppl-vae train --program``, then load, evaluate, resume and the KL lab, each
of which imports the stored program only when trusted; and one clear line for every kind of bad input.

The programs are in ``tests/user_programs.py``: ``build_vae`` (a VAE with the sites "code" and "pixels" in the plate
"examples", one module) and ``build_two_level`` (latent sites z1 and z2, four modules in a dict).
"""

import dataclasses
import json
import re

import pyro
import pytest
import torch
from cli_checks import one_error_line

import ppl_vae
from ppl_vae import lab
from ppl_vae.checkpoint import load_checkpoint
from ppl_vae.cli import main
from ppl_vae.config import ProgramSpec
from ppl_vae.errors import InputError
from ppl_vae.evaluate import elbo, observed_test_set
from ppl_vae.heads import HEADS
from ppl_vae.train import seed_everything
from ppl_vae.user_program import build_program, parse_program_args

VAE_PROGRAM = "user_programs:build_vae"
TWO_LEVEL = "user_programs:build_two_level"
FAST = ["--k", "20", "--eval-particles", "5", "--batch-size", "128", "--lr", "0.003", "--no-progress"]


def train(run_dir, *argv):
    return main(["train", *FAST, "--out", str(run_dir), *map(str, argv)])


def without_seconds(history):
    return [{key: value for key, value in record.items() if key != "seconds"} for record in history]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """``build_vae`` trained for 2 epochs through the CLI; the folder and its metrics as training wrote them."""
    run_dir = tmp_path_factory.mktemp("program") / "vae"
    assert train(run_dir, "--program", VAE_PROGRAM, "--program-arg", "z_dim=2", "--epochs", 2) == 0
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def two_level_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("program") / "two-level"
    assert train(run_dir, "--program", TWO_LEVEL, "--program-arg", "hidden=8", "--epochs", 1) == 0
    return run_dir


def test_train_writes_the_program_into_config_json_and_the_figures_it_offers(vae_run):
    run_dir, metrics = vae_run
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] is None
    assert config["program"] == {
        "path": VAE_PROGRAM, "args": {"z_dim": 2}, "x_dim": 64, "image_shape": [1, 8, 8], "num_classes": 10,
    }  # fmt: skip
    assert ppl_vae.RunConfig.from_json((run_dir / "config.json").read_text()).program.args == {"z_dim": 2}
    assert metrics["epochs"] == 2 and len(metrics["history"]) == 2 and metrics["k"] == 20
    assert metrics["test_log_likelihood"] >= metrics["test_elbo"] - 3 * metrics["test_elbo_se"]
    assert metrics["history"][-1]["test_elbo"] > metrics["history"][0]["test_elbo"]
    for name in ("elbo.png", "reconstructions.png", "samples.png"):
        assert (run_dir / name).stat().st_size > 0, name
    assert not (run_dir / "latent.png").exists()
    assert list(metrics["figures_skipped"]) == ["latent.png"] and "encode" in metrics["figures_skipped"]["latent.png"]


def test_load_imports_the_program_only_when_trusted_and_loads_its_weights(vae_run, digits):
    run_dir, _ = vae_run
    with pytest.raises(InputError, match=f"was trained with the program '{VAE_PROGRAM}'; loading it imports and runs"):
        ppl_vae.load(run_dir)
    program = ppl_vae.load(run_dir, trust_program=True)
    assert isinstance(program, ppl_vae.UserProgram) and not program.modules.training
    stored = load_checkpoint(run_dir / "checkpoint.pt")["model"]
    assert stored.keys() == program.modules.state_dict().keys()
    assert all(torch.equal(value, stored[name]) for name, value in program.modules.state_dict().items())
    fresh = build_program(ppl_vae.RunConfig.from_json((run_dir / "config.json").read_text()).program)
    x = observed_test_set(digits.x_test, binary=True)
    gain = elbo(program.model, program.guide, x, num_particles=5).per_example
    gain -= elbo(fresh.model, fresh.guide, x, num_particles=5).per_example
    assert gain.mean() > 10 * gain.std() / len(gain) ** 0.5  # paired over the test images: the trained weights


def test_evaluate_needs_trust_and_reports_the_programs_elbo(vae_run, digits, capsys):
    run_dir, trained = vae_run
    assert main(["evaluate", str(run_dir), "--k", "30", "--eval-particles", "4"]) == 2
    assert f"'{VAE_PROGRAM}'; loading it imports and runs that module: pass --trust-program" in one_error_line(capsys)
    evaluate = ["evaluate", str(run_dir), "--k", "100", "--eval-particles", "4", "--gap-examples", "2"]
    assert main([*evaluate, "--gap-steps", "5", "--trust-program"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["k"] == 100 and metrics["elbo_particles"] == 4 and metrics["history"] == trained["history"]
    report = json.loads((run_dir / "report.json").read_text())  # the diagnostics, per latent site of the program
    assert list(report["latent_sites"]) == ["code"] and len(report["latent_sites"]["code"]["kl_per_dim"]) == 2
    assert metrics["test_log_likelihood"] == report["log_likelihood"] and (run_dir / "posterior.nc").is_file()
    # the same estimate, recomputed from the loaded program with the run's seed
    program = ppl_vae.load(run_dir, trust_program=True)
    seed_everything(0)
    expected = elbo(program.model, program.guide, observed_test_set(digits.x_test, binary=True), num_particles=4)
    assert metrics["test_elbo"] == expected.mean and metrics["test_elbo_se"] == expected.se


def test_resume_needs_trust_and_continues_with_the_numbers_of_an_uninterrupted_run(vae_run, tmp_path, capsys):
    _, straight = vae_run
    run_dir = tmp_path / "interrupted"
    assert train(run_dir, "--program", VAE_PROGRAM, "--program-arg", "z_dim=2", "--epochs", 1) == 0
    assert main(["train", "--resume", "--out", str(run_dir), "--epochs", "2", "--no-progress"]) == 2
    assert f"trained with the program '{VAE_PROGRAM}'" in one_error_line(capsys)
    resume = ["train", "--resume", "--out", str(run_dir), "--epochs", "2", "--no-progress", "--trust-program"]
    assert main(resume) == 0
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert without_seconds(resumed["history"]) == without_seconds(straight["history"])
    for key in ("test_elbo", "test_elbo_se", "test_log_likelihood", "test_log_likelihood_se", "train_elbo"):
        assert resumed[key] == straight[key], key
    # config.json edited to build other modules than the checkpoint's: one line, before any training
    config = json.loads((run_dir / "config.json").read_text())
    config["program"]["args"]["z_dim"] = 3
    (run_dir / "config.json").write_text(json.dumps(config))
    assert main(["train", "--resume", "--out", str(run_dir), "--epochs", "3", "--no-progress", "--trust-program"]) == 2
    expected = r"does not match its config.json, edited after training: --program-arg \{'z_dim': 2\} -> \{'z_dim': 3\}"
    assert re.search(expected, one_error_line(capsys))


def test_two_latent_sites_train_evaluate_and_run_in_the_kl_lab(two_level_run, tmp_path, capsys):
    run_dir = two_level_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["figures_skipped"]) == {"reconstructions.png", "samples.png", "latent.png"}
    assert sorted(path.name for path in run_dir.glob("*.png")) == ["elbo.png"]
    evaluate = ["evaluate", str(run_dir), "--k", "100", "--eval-particles", "2", "--gap-examples", "0"]
    assert main([*evaluate, "--trust-program"]) == 0
    assert json.loads((run_dir / "metrics.json").read_text())["k"] == 100
    assert list(json.loads((run_dir / "report.json").read_text())["latent_sites"]) == ["z1", "z2"]

    argv = ["compare-kl", "--run", str(run_dir), "--estimators", "trace", "--repetitions", "2", "--epochs", "0"]
    assert main([*argv, "--out", str(tmp_path / "lab")]) == 2
    assert f"trained with the program '{TWO_LEVEL}'" in one_error_line(capsys)
    assert main([*argv, "--trust-program", "--out", str(tmp_path / "lab")]) == 0
    result = json.loads((tmp_path / "lab" / "compare_kl.json").read_text())
    groups = ["p_z1", "p_x", "q_z1", "q_z2"]
    assert result["model"] is None and result["parameter_groups"] == groups
    assert set(result["meanfield_kl"]) == {"z1", "z2"} and result["meanfield_dependent"] == {"z2": ["z1"]}
    (row,) = result["estimators"]
    assert all(0 < row[f"grad_var_{group}"] < float("inf") for group in groups)
    assert (
        "a user's program (parameter groups p_z1, p_x, q_z1, q_z2)" in (tmp_path / "lab" / "compare_kl.md").read_text()
    )


def test_compare_kl_trains_a_program_in_place_and_restores_its_weights(vae_run, digits):
    program, data = lab.prepare(run_dir=vae_run[0], trust_program=True)
    before = {name: value.clone() for name, value in program.modules.state_dict().items()}
    settings = lab.LabConfig(estimators=("trace", "meanfield"), repetitions=3, epochs=1, batch_size=128)
    x = observed_test_set(digits.x_test, binary=True)
    expected = lab.measure_estimator(program, "meanfield", x[:128], settings)
    result = lab.compare_kl(program, data, settings, progress=False)
    for name, value in program.modules.state_dict().items():
        assert torch.equal(value, before[name]), name
    trace, meanfield = result["estimators"]
    # meanfield is measured at the weights trace started from, not where its training ended
    assert {key: meanfield[key] for key in expected if key != "ms_per_step"} == {
        key: value for key, value in expected.items() if key != "ms_per_step"
    }
    # training moved the weights (a stale parameter store would leave them frozen): the test ELBO rose
    start = elbo(program.model, program.guide, x, num_particles=10)
    assert trace["test_elbo_curve"][0] > start.mean + 3 * start.se


def test_the_heads_study_rebuilds_a_program_with_each_head_from_the_same_q(vae_run, digits, tmp_path):
    program, data = lab.prepare(run_dir=vae_run[0], trust_program=True)
    x = observed_test_set(digits.x_test[:20], binary=True)
    state = program.modules.state_dict()

    def q_code(candidate):
        pyro.clear_param_store()  # every rebuilt program registers the same pyro.module names
        guide_trace = pyro.poutine.trace(candidate.guide).get_trace(x)
        normal = guide_trace.nodes["code"]["fn"].base_dist
        return normal.loc, normal.scale

    aligned = {}
    for head in HEADS:
        student = program.scale_head.rebuild(head)
        assert student.scale_head.head == head
        student.modules.load_state_dict(state)
        lab.start_heads_alike(student, "log_scale")
        aligned[head] = q_code(student)
    for head in ("log_var", "softplus"):
        torch.testing.assert_close(aligned[head][0], aligned["log_scale"][0], rtol=0, atol=0)
        torch.testing.assert_close(aligned[head][1], aligned["log_scale"][1], rtol=1e-5, atol=1e-7)
    assert not torch.allclose(aligned["log_scale"][1], q_code(program)[1])  # the start is h constant in x

    argv = ["compare-kl", "--run", str(vae_run[0]), "--trust-program", "--heads", "--estimators", "trace"]
    assert main([*argv, "--repetitions", "2", "--epochs", "1", "--batch-size", "128", "--out", str(tmp_path)]) == 0
    heads = json.loads((tmp_path / "compare_kl.json").read_text())["heads"]
    assert {(row["head"], row["estimator"]) for row in heads} == {
        (head, estimator) for head in HEADS for estimator in ("trace", "meanfield")
    }
    assert all(len(row["test_elbo_curve"]) == 1 and -100 < row["test_elbo_curve"][0] < 0 for row in heads)
    assert (tmp_path / "compare_kl_heads.png").stat().st_size > 0


def test_the_heads_study_names_what_a_program_lacks(two_level_run, vae_run, digits):
    two_level, data = lab.prepare(run_dir=two_level_run, trust_program=True)
    settings = lab.LabConfig(estimators=("trace",), repetitions=2, epochs=1, batch_size=128)
    with pytest.raises(InputError, match=r"its UserProgram needs scale_head=HeadLayer\(head, layer, rows, rebuild\)"):
        lab.compare_kl(two_level, data, settings, heads=True, progress=False)
    program, _ = lab.prepare(run_dir=vae_run[0], trust_program=True)
    misplaced = dataclasses.replace(program.scale_head, layer="decoder.9")
    with pytest.raises(InputError, match="HeadLayer: the modules have no submodule 'decoder.9'"):
        lab.start_heads_alike(dataclasses.replace(program, scale_head=misplaced), "log_scale")
    with pytest.raises(InputError, match="HeadLayer: head 'log_sigma' is not a scale head"):
        ppl_vae.HeadLayer("log_sigma", "encoder.2", (2, 4), print)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--program", VAE_PROGRAM, "--z-dim", "3", "--likelihood", "gaussian"], "--z-dim, --likelihood: --program"),
        (["--program", VAE_PROGRAM, "--conditional"], "--conditional: --program builds its own model and guide"),
        (["--program-arg", "z_dim=2"], "--program-arg needs --program"),
        (["--program", "user_programs"], "--program 'user_programs': expected package.module:function"),
        (["--program", "no_such_module_here:build"], "no module named 'no_such_module_here'"),
        (["--program", "user_programs:missing"], "module 'user_programs' has no attribute 'missing'"),
        (["--program", "user_programs:NOT_CALLABLE"], "'NOT_CALLABLE' is a int, not a function"),
        (["--program", "user_programs:not_a_program"], r"not_a_program\(spec\) returned a dict, expected ppl_vae"),
        (
            ["--program", VAE_PROGRAM, "--program-arg", "z_dim=0"],
            r"build_vae\(spec\) raised ValueError: z_dim must be at least 1, got 0",
        ),
        (["--program", VAE_PROGRAM, "--program-arg", "z_dim"], "--program-arg 'z_dim': expected key=value"),
        (["--program", VAE_PROGRAM, "--program-arg", "2d=1"], "the key '2d' is not a Python identifier"),
        (["--program", VAE_PROGRAM, "--program-arg", "a=1", "--program-arg", "a=2"], "--program-arg a: given twice"),
        (["--program", VAE_PROGRAM, "--program-arg", "a=NaN"], "program args must be JSON values"),
        (["--resume", "--out", "{tmp}", "--program", VAE_PROGRAM], "--resume continues the program named in"),
    ],
)
def test_bad_program_input_is_one_clear_line_and_writes_nothing(capsys, tmp_path, argv, message):
    run_dir = tmp_path / "run"
    argv = [arg.format(tmp=run_dir) for arg in argv]
    assert main(["train", "--epochs", "1", "--out", str(run_dir), "--no-progress", *argv]) == 2
    assert re.search(message, one_error_line(capsys))
    assert not run_dir.exists()


def test_program_args_are_json_where_they_parse_and_strings_otherwise():
    args = parse_program_args(["z_dim=4", "name=laplace", "widths=[64, 32]", "scale=0.5", "flag=true", "empty="])
    assert args == {"z_dim": 4, "name": "laplace", "widths": [64, 32], "scale": 0.5, "flag": True, "empty": ""}


def test_user_program_checks_what_build_returns():
    with pytest.raises(InputError, match="modules hold no parameters"):
        ppl_vae.UserProgram(print, print, torch.nn.ReLU())
    with pytest.raises(InputError, match="modules must be an nn.Module or a dict of them, got list"):
        ppl_vae.UserProgram(print, print, [torch.nn.Linear(1, 1)])
    with pytest.raises(InputError, match="binary must be True or False"):
        ppl_vae.UserProgram(print, print, torch.nn.Linear(1, 1), binary=1)
    program = ppl_vae.UserProgram(print, print, {"net": torch.nn.Linear(1, 1)})
    assert isinstance(program.modules, torch.nn.ModuleDict) and list(program.modules) == ["net"]


def test_a_program_spec_names_a_bad_path_in_a_config_file():
    with pytest.raises(InputError, match=r"--program 'a.b:c:d': expected package.module:function"):
        ProgramSpec(path="a.b:c:d", x_dim=64, image_shape=(1, 8, 8))
