"""The flag table (ppl_vae.flags): defaults from the schema, shown once by --help, argparse's errors in one line."""

import dataclasses
import re

import pytest
from cli_checks import one_error_line

from ppl_vae import flags
from ppl_vae.cli import _config_from_args, build_parser, main
from ppl_vae.config import DataConfig, EvalConfig, ModelConfig, TrainConfig
from ppl_vae.report import ReportConfig

COMMAND_NAMES = [command.name for command in flags.commands()]


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_help_shows_every_default_once(capsys, name):
    assert main([name, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare with single spaces
    command = flags.command(name)
    for flag in command.flags:
        shown = " ".join(flag.help_text().replace("%%", "%").split())
        assert shown in text, flag.name
        if flag.kind not in (flags.POSITIONAL, flags.POSITIONALS):
            assert shown.count("(default: ") + shown.count("(required)") == 1, flag.name
    assert "default: None" not in text


def test_train_defaults_are_the_schema_defaults():
    """Parsing ``train`` with no flags gives exactly the dataclasses' defaults (``eval_particles`` of the per-epoch
    test ELBO included: ``--epoch-eval-particles``)."""
    config = _config_from_args(build_parser().parse_args(["train"]))
    assert config.train == TrainConfig()
    assert config.evaluation == EvalConfig()
    sized = {"x_dim": 64, "image_shape": (1, 8, 8)}
    assert config.model == ModelConfig(**sized)


def test_every_run_field_a_person_sets_is_set_by_one_train_flag():
    """Each field of a RunConfig's train, model, evaluation and data sections that a person sets is the ``sets`` of
    exactly one ``train`` flag (what ``--resume`` lays over config.json; the rest are sized from the data or set from
    Python), and a flag's ``sets`` names a real field."""
    sets = [flag.sets for flag in flags.command("train").flags if flag.sets is not None]
    assert len(sets) == len(set(sets))
    python_only = {"latent_sites", "lr_horizon", "lr_factors", "x_dim", "image_shape"}
    sections = {"train": TrainConfig, "model": ModelConfig, "evaluation": EvalConfig, "data": DataConfig}
    fields = {(section, field.name) for section, schema in sections.items() for field in dataclasses.fields(schema)}
    assert set(sets) <= fields
    assert {(section, name) for section, name in fields if name not in python_only} == set(sets)


def test_epoch_eval_particles_reaches_the_config():
    args = build_parser().parse_args(["train", "--epoch-eval-particles", "3", "--eval-particles", "7"])
    config = _config_from_args(args)
    assert (config.train.eval_particles, config.evaluation.num_particles) == (3, 7)


def test_evaluate_defaults_are_the_report_defaults():
    args = build_parser().parse_args(["evaluate", "run"])
    assert ReportConfig(gap_examples=args.gap_examples, gap_steps=args.gap_steps, draws=args.draws) == ReportConfig()
    assert EvalConfig(k=args.k, num_particles=args.eval_particles) == EvalConfig()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--z-dim", "x"], "argument --z-dim: invalid int value: 'x'"),
        (["train", "--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (["train", "--epochs"], "argument --epochs: expected one argument"),
        (["interpolate", "run"], "the following arguments are required: --a, --b"),
        (["evaluate"], "the following arguments are required: run_dir"),
        ([], "the following arguments are required: COMMAND"),
        (["fly"], "argument COMMAND: invalid choice: 'fly'"),
    ],
)
def test_argparse_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    assert message in one_error_line(capsys)


def test_a_flag_is_one_entry():
    """A Flag added to a command's table is parsed into ``args.<dest>`` with its default, and shown by --help."""
    command = flags.Command("demo", "a demo", (flags.option("--alpha-weight", float, TrainConfig, "beta", "a weight"),))
    parser = build_parser()
    subparsers = next(action for action in parser._actions if action.dest == "command")
    flags.add_command(subparsers, command)
    assert parser.parse_args(["demo"]).alpha_weight == 1.0
    assert parser.parse_args(["demo", "--alpha-weight", "2.5"]).alpha_weight == 2.5
    help_text = subparsers.choices["demo"].format_help()
    assert re.search(r"--alpha-weight ALPHA_WEIGHT\s+a weight \(default: 1.0\)", help_text)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--device", "cuda:99"], "--device 'cuda:99' is not available on this machine"),
        (["train", "--device", "foo"], "--device 'foo' is not a torch device"),
        (["train", "--seed", "-1"], r"--seed must be an integer from 0 to 4294967295 \(2\^32 - 1\), got -1"),
        (["train", "--epochs", "1000000"], "--epochs must be at most 100,000"),
        (["train", "--k", "1000000"], "--k must be at most 100,000"),
        (["compare-kl", "--device", "cuda:99"], "--device 'cuda:99' is not available on this machine"),
        (["evaluate", "{tmp}/run", "--draws", "1000000"], "--draws must be at most 100,000"),
    ],
)
def test_devices_seeds_and_counts_are_one_line(capsys, tmp_path, argv, message):
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "run"), "--no-progress"]
    assert main(argv) == 2
    assert re.search(message, one_error_line(capsys))
    assert not (tmp_path / "run").exists()
