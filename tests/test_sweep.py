"""``ppl-vae sweep``: grids and variants files parsed, every combination checked before any training, runs trained in
this process into one folder, finished runs skipped after an interrupt, and the comparison written with seeds
aggregated."""

import json

import pytest
from cli_checks import one_error_line

import ppl_vae.run
from ppl_vae.cli import main
from ppl_vae.errors import InputError
from ppl_vae.sweep import grid_names, parse_grid, read_variants

TINY = ["--epochs", "1", "--z-dim", "2", "--hidden", "16", "--batch-size", "256", "--k", "10"]
TINY += ["--eval-particles", "3", "--no-progress"]


def test_a_grid_is_every_combination_named_by_its_values():
    grid = parse_grid(["prior=normal,mog", "--z_dim=2,4,8"])
    assert grid == [("prior", ["normal", "mog"]), ("z-dim", ["2", "4", "8"])]
    names = grid_names(grid)
    assert len(names) == 6
    assert names[0] == ("prior=normal,z-dim=2", {"prior": "normal", "z-dim": "2"})
    assert names[-1][0] == "prior=mog,z-dim=8"
    for bad, message in (
        ("prior", "expected KEY=VALUE"),
        ("prior=normal,,mog", "expected KEY=VALUE"),
        ("prior=a/b", "letters, digits"),
        ("seed=1,1", "repeats a value"),
    ):
        with pytest.raises(InputError, match=message):
            parse_grid([bad])
    with pytest.raises(InputError, match="given twice"):
        parse_grid(["seed=0", "seed=1"])


def test_a_variants_file_is_named_flag_sets(tmp_path):
    path = tmp_path / "variants.txt"
    path.write_text("# the table\n\nplain:\niwae: --elbo iwae --num-particles 10  # K = 10\nwarm: --anneal 'linear'\n")
    assert read_variants(path) == [
        ("plain", []),
        ("iwae", ["--elbo", "iwae", "--num-particles", "10"]),
        ("warm", ["--anneal", "linear"]),
    ]
    path.write_text("plain:\nplain: --prior mog\n")
    with pytest.raises(InputError, match=r"variants.txt:2: variant 'plain' is named twice"):
        read_variants(path)
    path.write_text("no colon here\n")
    with pytest.raises(InputError, match=r"variants.txt:1: 'no colon here': expected 'NAME: FLAGS'"):
        read_variants(path)
    path.write_bytes(b"plain: --lr \xae\n")  # found by scripts/fuzz_flags.py: an npz passed as --variants
    with pytest.raises(InputError, match=r"variants.txt' is not UTF-8 text \(byte 12\)"):
        read_variants(path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--grid", "guide=diagonal,iaf", "--z-dim", "1"], "sweep run 'guide=iaf': --guide iaf needs --z-dim >= 2"),
        (["--grid", "prior=normal,mog", "--elbo", "meanfield"], "sweep run 'prior=mog': "),
        (["--grid", "priors=normal"], "--grid key 'priors' is not a flag of 'ppl-vae train'"),
        (["--grid", "seed=0", "--seed", "1"], "--seed given twice"),
        (["--grid", "seed=0", "--resume"], "--resume in the sweep's train flags: the sweep sets it itself"),
        (["--grid", "conditional=yes"], "--conditional is a switch, expected true or false"),
        ([], "sweep needs --grid KEY=V1,V2 or --variants FILE"),
        (["--grid", "tensorboard=true,false"], "--tensorboard is for the whole sweep: give it among the common flags"),
    ],
)
def test_invalid_combinations_are_refused_before_any_training(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ppl_vae.run, "fit", lambda *args, **kwargs: pytest.fail("trained before checking"))
    assert main(["sweep", "--out", str(tmp_path / "sweep"), *argv]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "sweep").exists()


def test_a_sweep_resumes_after_an_interrupt_without_repeating_finished_runs(tmp_path, capsys, monkeypatch):
    variants = tmp_path / "variants.txt"
    variants.write_text("plain:\nwarm: --anneal linear --anneal-epochs 2\n")
    argv = ["sweep", "--variants", str(variants), "--grid", "seed=1", "--out", str(tmp_path / "sweep"), *TINY]
    trained = []
    original = ppl_vae.run.train_run

    def interrupted_at_the_second(config, run_dir, **options):
        if len(trained) == 1:
            raise KeyboardInterrupt
        trained.append(run_dir.name)
        return original(config, run_dir, **options)

    monkeypatch.setattr(ppl_vae.run, "train_run", interrupted_at_the_second)
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 130 and trained == ["plain,seed=1"]

    def counted(config, run_dir, **options):
        trained.append(run_dir.name)
        return original(config, run_dir, **options)

    monkeypatch.setattr(ppl_vae.run, "train_run", counted)
    capsys.readouterr()
    assert main(argv) == 0
    assert trained == ["plain,seed=1", "warm,seed=1"]  # each run trained once
    printed = capsys.readouterr().out
    assert "1 trained, 0 resumed, 1 skipped" in printed
    assert "| run | seeds | train.anneal | train.anneal_epochs | test ELBO |" in printed
    config = json.loads((tmp_path / "sweep" / "warm,seed=1" / "config.json").read_text())
    assert (config["train"]["seed"], config["train"]["anneal"], config["train"]["epochs"]) == (1, "linear", 1)
    rows = (tmp_path / "sweep" / "compare.csv").read_text().splitlines()
    assert rows[0].startswith("run,seeds,") and [row.split(",")[0] for row in rows[1:]] == ["plain", "warm"]


def test_the_readmes_variant_table_command_names_valid_runs():
    from pathlib import Path

    from ppl_vae.cli_compare import sweep_configs

    variants = Path(__file__).parent.parent / "docs" / "variants.txt"
    configs = sweep_configs([], variants, ["--seed", "0", "--epochs", "10", "--z-dim", "8", "--k", "1000"])
    assert len(configs) == 15 and configs["iwae"].train.num_particles == 10
    assert configs["conditional"].model.num_classes == 10 and configs["plain"].model.prior == "normal"
