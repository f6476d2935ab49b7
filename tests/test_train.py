"""fit(): learning on the digits, reproducibility, resume, every objective, bad input."""

import math

import pytest
import torch

from ppl_vae.config import TrainConfig
from ppl_vae.errors import InputError
from ppl_vae.evaluate import elbo, observed_test_set
from ppl_vae.objectives import OBJECTIVES
from ppl_vae.run import model_config_for
from ppl_vae.train import fit, seed_everything
from ppl_vae.vae import VAE


def fresh_vae(config, seed=0):
    seed_everything(seed)
    return VAE(config)


def without_seconds(history):
    return [{key: value for key, value in record.items() if key != "seconds"} for record in history]


def test_test_elbo_climbs_on_digits(digits):
    """z_dim 8, hidden 128, batch 64, 10 epochs. Measured with seeds 0 and 1: about -27.2 nats per example after
    10 epochs, from about -44 before training; the bound leaves more than a nat of margin."""
    vae = fresh_vae(model_config_for(digits, z_dim=8, hidden=(128,)))
    x_test = observed_test_set(digits.x_test, binary=True)
    before = elbo(vae.model, vae.guide, x_test, num_particles=10).mean
    history = fit(vae, digits, TrainConfig(epochs=10, batch_size=64, eval_every=5), progress=False)
    after = history[-1]["test_elbo"]
    assert before < -40.0
    assert after > -28.5, history
    assert history[-1]["train_elbo"] > history[0]["train_elbo"] + 3.0


def test_same_seed_gives_the_same_history(digits, small_config):
    config = TrainConfig(epochs=2, eval_particles=3)
    first = fit(fresh_vae(small_config), digits, config, progress=False)
    second = fit(fresh_vae(small_config), digits, config, progress=False)
    assert without_seconds(first) == without_seconds(second)
    other_seed = fit(fresh_vae(small_config), digits, TrainConfig(epochs=2, eval_particles=3, seed=1), progress=False)
    assert without_seconds(other_seed) != without_seconds(first)


STEPS_PER_EPOCH = math.ceil(1497 / 64)
"""Minibatches of 64 in an epoch of the digits' 1497 training images."""

SCHEDULED = {"lr_schedule": "cosine", "lr_decay": 0.05, "lr_horizon": 4 * STEPS_PER_EPOCH}
"""A cosine schedule over 4 epochs."""


@pytest.mark.parametrize(
    ("objective", "options"),
    [
        ("trace", {}),
        ("reference-mc", {}),
        ("trace", {"optim": "clipped-adam", **SCHEDULED}),
        ("reference-mc", {"optim": "adamw", "lr_factors": {"decoder": 0.5}, **SCHEDULED}),
    ],
)
def test_an_interrupted_run_resumes_with_the_same_numbers(digits, small_config, tmp_path, objective, options):
    """Optimizer and schedule states come back from the checkpoint: the resumed run is the uninterrupted one."""
    straight = fit(fresh_vae(small_config), digits, TrainConfig(epochs=4, elbo=objective, **options), progress=False)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    first_half = TrainConfig(epochs=2, elbo=objective, **options)
    fit(fresh_vae(small_config), digits, first_half, run_dir=run_dir, progress=False)
    torch.manual_seed(12345)  # whatever happened in between must not matter
    resumed = fit(
        fresh_vae(small_config, seed=99),
        digits,
        TrainConfig(epochs=4, elbo=objective, **options),
        run_dir=run_dir,
        resume=True,
        progress=False,
    )
    assert without_seconds(resumed) == without_seconds(straight)


def test_a_resumed_schedule_keeps_the_horizon_it_started_with(digits, small_config, tmp_path):
    """A run started for 2 epochs (its horizon, 2 epochs of steps, stored in the checkpoint) and given a third on
    resume follows its original schedule, then stays at the final rate: the numbers of a 3-epoch run with that
    horizon."""
    assert digits.x_train.shape[0] == 1497
    schedule = {"lr": 3e-3, "lr_schedule": "exponential", "lr_decay": 0.1}
    fit(fresh_vae(small_config), digits, TrainConfig(epochs=2, **schedule), run_dir=tmp_path, progress=False)
    resumed = fit(
        fresh_vae(small_config),
        digits,
        TrainConfig(epochs=3, **schedule),
        run_dir=tmp_path,
        resume=True,
        progress=False,
    )
    straight = fit(
        fresh_vae(small_config),
        digits,
        TrainConfig(epochs=3, lr_horizon=2 * STEPS_PER_EPOCH, **schedule),
        progress=False,
    )
    assert without_seconds(resumed) == without_seconds(straight)
    with pytest.raises(InputError, match="lr_horizon 72 differs from the 48 steps the run started with"):
        fit(
            fresh_vae(small_config),
            digits,
            TrainConfig(epochs=3, lr_horizon=3 * STEPS_PER_EPOCH, **schedule),
            run_dir=tmp_path,
            resume=True,
            progress=False,
        )


@pytest.mark.parametrize("objective", sorted(set(OBJECTIVES) - {"enum"}))  # enum: tests/test_objectives.py
def test_every_objective_trains(digits, small_config, objective):
    vae = fresh_vae(small_config)
    x_test = observed_test_set(digits.x_test, binary=True)
    before = elbo(vae.model, vae.guide, x_test, num_particles=10).mean
    history = fit(vae, digits, TrainConfig(epochs=2, lr=3e-3, elbo=objective, num_particles=2), progress=False)
    assert all(torch.isfinite(torch.tensor(record["train_elbo"])) for record in history)
    assert history[-1]["test_elbo"] > before + 3.0


def test_data_of_another_size_is_refused(digits):
    vae = VAE(model_config_for(digits, z_dim=2))
    vae.config = model_config_for(digits, z_dim=2).__class__(x_dim=16, image_shape=(1, 4, 4))
    with pytest.raises(ValueError, match="has 64 pixels per example, the VAE expects 16"):
        fit(vae, digits, TrainConfig(epochs=1), progress=False)


def test_a_validation_split_carries_the_per_epoch_curve_and_leaves_the_test_set_alone(digits, monkeypatch):
    from ppl_vae import evaluate

    seen = []
    original = evaluate.elbo
    monkeypatch.setattr(
        evaluate, "elbo", lambda model, guide, x, **kw: seen.append(x.shape[0]) or original(model, guide, x, **kw)
    )
    vae = VAE(model_config_for(digits, z_dim=2, hidden=(16,)))
    config = TrainConfig(epochs=2, batch_size=256, eval_particles=2, val_fraction=0.1)
    history = fit(vae, digits, config, progress=False)
    assert all("val_elbo" in record and "test_elbo" not in record for record in history)
    # the untrained model's ELBO (the divergence baseline) and each epoch's: on the 150 validation examples, never
    # on the 300 test examples
    assert seen == [150, 150, 150]
    with pytest.raises(InputError, match=r"--val-fraction must be a number in \[0, 1\), got 1"):
        TrainConfig(val_fraction=1)


def test_tensorboard_event_files_hold_the_logged_scalars_images_and_config(digits, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ppl_vae.config import EvalConfig, RunConfig
    from ppl_vae.run import train_run

    model = model_config_for(digits, z_dim=2, hidden=(16,))
    train = TrainConfig(epochs=2, batch_size=256, eval_particles=2, lr_schedule="cosine", anneal="linear")
    config = RunConfig(model=model, train=train, evaluation=EvalConfig(k=5, num_particles=2))
    metrics = train_run(config, tmp_path, progress=False, tensorboard=True)
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    history = metrics["history"]
    for tag, key in (("elbo/train", "train_elbo"), ("elbo/test", "test_elbo"), ("beta_t", "latent_scale")):
        logged = [(event.step, event.value) for event in events.Scalars(tag)]
        assert logged == [(r["epoch"], pytest.approx(r[key], rel=1e-6)) for r in history]
    steps = math.ceil(1497 / 256)  # the cosine schedule's horizon is 2 epochs of 6 steps: halfway after the first
    learning_rates = [event.value for event in events.Scalars("learning_rate")]
    assert learning_rates == pytest.approx(
        [1e-3 * (0.1 + 0.9 * (1 + math.cos(math.pi * steps / (2 * steps))) / 2), 1e-4]
    )
    norms = {tag: [event.value for event in events.Scalars(tag)] for tag in events.Tags()["scalars"] if "grad" in tag}
    assert set(norms) == {"grad_norm/total", "grad_norm/encoder", "grad_norm/decoder"}
    total = [math.hypot(a, b) for a, b in zip(norms["grad_norm/encoder"], norms["grad_norm/decoder"], strict=True)]
    assert norms["grad_norm/total"] == pytest.approx(total, rel=1e-5) and all(value > 0 for value in total)
    assert {"images/reconstructions", "images/samples"} <= set(events.Tags()["images"])
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"lr_schedule": "cosine"' in text
