"""Every part checks its own constraints: the registries' names and each part's ``requires``, run at the boundary.

Parametrized over the registries (:data:`ppl_vae.parts.MODEL_PARTS`, :data:`~ppl_vae.parts.TRAIN_PARTS`), so a new
part, or a new requirement, is picked up: a requirement without a refusal case below fails
``test_every_requirement_has_a_refusal_case``.
"""

import json
import re

import pytest

from ppl_vae.cli import main
from ppl_vae.config import PART_NAME_FLAGS, TRAIN_PART_NAME_FLAGS, ModelConfig, RunConfig, TrainConfig
from ppl_vae.data import load_dataset
from ppl_vae.errors import InputError
from ppl_vae.objectives import make_step
from ppl_vae.parts import MODEL_PARTS, TRAIN_PARTS, check_model, check_run, check_train
from ppl_vae.registry import Registry
from ppl_vae.run import load_config
from ppl_vae.train import fit
from ppl_vae.vae import VAE


def model_config(**options) -> ModelConfig:
    return ModelConfig(x_dim=64, image_shape=(1, 8, 8), **options)


KINDS = {
    "model": (MODEL_PARTS, PART_NAME_FLAGS, model_config),
    "train": (TRAIN_PARTS, TRAIN_PART_NAME_FLAGS, TrainConfig),
}
"""config kind -> (field -> registry, field -> flag, a config of that kind from options)."""
CHECKS = {"model": check_model, "train": check_train}
FIELDS = [(kind, field) for kind, (parts, _, _) in KINDS.items() for field in parts]
ENTRIES = [(kind, field, name) for kind, field in FIELDS for name in sorted(KINDS[kind][0][field])]

REFUSALS = [
    # kind, field, name, options the part refuses, the message, the nearest options it accepts
    ("model", "likelihood", "gaussian", {"pixel_scale": 1e-3}, "--pixel-scale must be a number > 0.001, got 0.001",
     {"pixel_scale": 1.001e-3}),
    ("model", "likelihood", "laplace", {"pixel_scale": 5e-4}, "--pixel-scale must be a number > 0.001, got 0.0005",
     {"pixel_scale": 1.001e-3}),
    ("model", "likelihood", "gaussian-learned", {"pixel_scale": 1e-3},
     "--pixel-scale must be a number > 0.001, got 0.001", {"pixel_scale": 1.001e-3}),
    ("model", "prior", "vamp", {"num_classes": 10},
     "--conditional with --prior vamp: the VampPrior's pseudo-inputs carry no label; use --prior normal or mog",
     {"num_classes": 0}),
    ("model", "prior", "vamp", {"latent_layers": 2},
     "--latent-layers 2 with --prior vamp: the VampPrior is the guide q(z | u_k) at pseudo-inputs, which has no form "
     "for the top layer z2; use --prior normal or mog (the prior of z2)", {"latent_layers": 1}),
    ("model", "guide", "iaf", {"z_dim": 1},
     "--guide iaf needs --z-dim >= 2 (an autoregressive flow over one dimension is affine), got 1", {"z_dim": 2}),
    ("model", "net", "conv", {"num_classes": 10},
     "--conditional concatenates one-hot labels to flat inputs: it needs --net mlp, got --net conv",
     {"num_classes": 0}),
    ("train", "elbo", "iwae", {"beta": 4.0},
     "--elbo iwae cannot take --beta 4.0 --anneal none: RenyiELBO would scale the latent site inside its logsumexp, "
     "which is not the beta-VAE objective; use --elbo trace, meanfield or jit", {"beta": 1.0}),
    ("train", "elbo", "iwae", {"anneal": "cyclical"}, "--elbo iwae cannot take --beta 1.0 --anneal cyclical: ",
     {"anneal": "none"}),
]  # fmt: skip


def build(kind: str, **options):
    return KINDS[kind][2](**options)


@pytest.mark.parametrize(("kind", "field", "name"), ENTRIES)
def test_every_part_accepts_the_default_config(kind, field, name):
    config = build(kind, **{field: name})
    assert CHECKS[kind](config) is config


@pytest.mark.parametrize(("kind", "field"), FIELDS)
def test_an_unknown_name_is_refused_with_the_valid_names(kind, field):
    parts, flags, _ = KINDS[kind]
    registry = parts[field]
    config = build(kind, **{field: "bogus"})  # the schema takes any string: names are the registry's
    with pytest.raises(InputError) as refused:
        CHECKS[kind](config)
    names = ", ".join(sorted(registry))
    assert str(refused.value) == f"{flags[field]}: unknown {registry.what} 'bogus': expected one of {names}"


def test_every_requirement_has_a_refusal_case():
    declared = {(kind, field, name) for kind, field in FIELDS for name in KINDS[kind][0][field].requirements}
    assert declared == {row[:3] for row in REFUSALS}
    assert {"iaf", "vamp", "conv", "iwae", "gaussian"} <= {name for _, _, name in declared}


@pytest.mark.parametrize(("kind", "field", "name", "refused", "message", "accepted"), REFUSALS)
def test_each_part_refuses_what_it_cannot_be_built_from(kind, field, name, refused, message, accepted):
    """The part refuses ``refused`` with its one-line message and accepts the nearest ``accepted`` options; the
    registry's other parts accept ``refused`` (the rule is the part's, not the schema's)."""
    config = build(kind, **{field: name}, **refused)
    with pytest.raises(InputError, match="^" + re.escape(message)) as error:
        CHECKS[kind](config)
    assert "\n" not in str(error.value)
    CHECKS[kind](build(kind, **{field: name}, **accepted))
    registry = KINDS[kind][0][field]
    for other in sorted(set(registry) - {name} - set(registry.requirements)):
        CHECKS[kind](build(kind, **{field: other}, **refused))


def test_a_class_states_its_requirement_and_a_function_is_given_one():
    registry = Registry("thing")

    @registry.register("strict")
    class Strict:
        @classmethod
        def requires(cls, config):
            if config < 0:
                raise InputError(f"strict needs a number >= 0, got {config}")

    registry.register("loose")(lambda config: config)
    registry.register("given", requires=Strict.requires)(lambda config: config)
    assert set(registry.requirements) == {"strict", "given"}
    for name in ("strict", "given"):
        registry.check(name, 0)
        with pytest.raises(InputError, match="strict needs a number >= 0, got -1"):
            registry.check(name, -1, "--thing")
    registry.check("loose", -1)
    with pytest.raises(InputError, match=r"^--thing: unknown thing \['x'\]: expected one of given, loose, strict$"):
        registry.check(["x"], 0, "--thing")


# --- the boundary: where configs become things ------------------------------------------------------------------
def test_a_vae_is_built_only_from_a_config_its_parts_accept():
    with pytest.raises(InputError, match="--guide iaf needs --z-dim >= 2"):
        VAE(model_config(z_dim=1, guide="iaf", hidden=(8,)))
    with pytest.raises(InputError, match="--prior: unknown prior 'flat': expected one of mog, normal, vamp"):
        VAE(model_config(prior="flat", hidden=(8,)))


def test_make_step_and_fit_refuse_before_training():
    vae = VAE(model_config(z_dim=2, hidden=(8,)))
    with pytest.raises(InputError, match="--elbo iwae cannot take --beta 2.0"):
        make_step(vae, TrainConfig(elbo="iwae", beta=2.0))
    with pytest.raises(InputError, match="--optim: unknown optimizer 'rmsprop': expected one of adam, adamw"):
        fit(vae, load_dataset("digits"), TrainConfig(optim="rmsprop"), progress=False)


def hand_edited_run(tmp_path, section: str, **values):
    """A run folder whose config.json was edited by hand: ``values`` replace those of ``section``."""
    raw = json.loads(RunConfig(model=model_config()).to_json())
    raw[section].update(values)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    return tmp_path


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("model", {"likelihood": "poisson"}, "--likelihood: unknown likelihood 'poisson'"),
        ("model", {"guide": "iaf", "z_dim": 1}, "--guide iaf needs --z-dim >= 2"),
        ("model", {"net": "conv", "num_classes": 10}, "--conditional concatenates one-hot labels"),
        ("train", {"elbo": "renyi"}, "--elbo: unknown objective 'renyi': expected one of"),
        ("train", {"elbo": "iwae", "anneal": "linear"}, "--elbo iwae cannot take --beta 1.0 --anneal linear"),
        ("train", {"lr_schedule": "step"}, "--lr-schedule: unknown learning-rate schedule 'step': expected one of"),
    ],
)
def test_a_hand_edited_config_file_fails_where_it_is_read(tmp_path, capsys, section, values, message):
    """The schema reads it (``RunConfig.from_json``); ``load_config`` checks its parts, and so every command that
    reads a run folder stops with one line."""
    run_dir = hand_edited_run(tmp_path, section, **values)
    assert RunConfig.from_json((run_dir / "config.json").read_text()).to_json()
    with pytest.raises(InputError, match=message):
        load_config(run_dir)
    for argv in (["evaluate", run_dir], ["train", "--resume", "--out", run_dir]):
        assert main([str(arg) for arg in argv]) == 2
        error = capsys.readouterr().err
        assert error.startswith("ppl-vae: error: ") and error.count("\n") == 1 and re.search(message, error), error


def test_check_run_checks_the_model_only_for_a_built_in_run():
    from ppl_vae.config import ProgramSpec

    program = RunConfig(program=ProgramSpec(path="m:build", x_dim=64, image_shape=(1, 8, 8)))
    assert check_run(program) is program
    with pytest.raises(InputError, match="--elbo: unknown objective"):
        check_run(RunConfig(program=program.program, train=TrainConfig(elbo="bogus")))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--guide", "iaf", "--z-dim", "1"], "--guide iaf needs --z-dim >= 2"),
        (["--conditional", "--prior", "vamp"], "--conditional with --prior vamp"),
        (["--conditional", "--net", "conv"], "--conditional concatenates one-hot labels .* got --net conv"),
        (["--likelihood", "gaussian", "--pixel-scale", "0.001"], "--pixel-scale must be a number > 0.001"),
        (["--latent-layers", "2", "--prior", "vamp"], "--latent-layers 2 with --prior vamp"),
        # training's parts are checked before the data set loads: this data set does not exist
        (["--elbo", "iwae", "--beta", "2", "--data", "cifar"], "--elbo iwae cannot take --beta 2.0"),
        (["--anneal", "cosine", "--data", "cifar"], "--anneal: unknown annealing schedule 'cosine': expected one of"),
    ],
)
def test_the_command_line_refuses_a_part_in_one_line(tmp_path, capsys, flags, message):
    assert main(["train", *flags, "--epochs", "1", "--no-progress", "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ppl-vae: error: ") and error.count("\n") == 1 and re.search(message, error), error
    assert not (tmp_path / "run").exists()
