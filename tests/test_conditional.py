"""Tests for the conditional VAE: labels y into encoder and decoder, sample(n, y=...), log p(x | y) in evaluation.

The main check is behavioural: a CVAE trained briefly on the digits draws images that a classifier fitted on real
digits (scikit-learn's LogisticRegression) assigns to the requested class far more often than chance (10%).
"""

import json

import pyro
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from ppl_vae.cli import main
from ppl_vae.config import TrainConfig
from ppl_vae.data import Dataset, load_dataset
from ppl_vae.errors import InputError
from ppl_vae.evaluate import elbo, iwae_log_likelihood, observed_test_set
from ppl_vae.run import load, model_config_for
from ppl_vae.train import fit
from ppl_vae.vae import VAE


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained(digits):
    """A CVAE after 8 epochs (96 steps) on the digits."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae = VAE(model_config_for(digits, conditional=True, z_dim=4, hidden=(64,)))
    fit(vae, digits, TrainConfig(epochs=8, batch_size=128, lr=3e-3, eval_every=8, seed=0), progress=False)
    return vae


def test_conditional_networks_read_the_one_hot_labels(digits):
    vae = VAE(model_config_for(digits, conditional=True, z_dim=4, hidden=(64,)))
    assert vae.config.num_classes == 10
    assert vae.encoder.net[0].in_features == 64 + 10
    assert vae.decoder[0].in_features == 4 + 10
    plain = VAE(model_config_for(digits, z_dim=4, hidden=(64,)))
    assert plain.config.num_classes == 0
    assert plain.encoder.net[0].in_features == 64 and plain.decoder[0].in_features == 4


def test_samples_are_recognised_as_their_requested_class(digits, trained):
    classifier = LogisticRegression(max_iter=2000).fit(digits.x_train.numpy(), digits.y_train.numpy())
    assert classifier.score(digits.x_test.numpy(), digits.y_test.numpy()) > 0.9  # the judge itself is sound
    pyro.set_rng_seed(1)
    requested = torch.arange(10).repeat_interleave(50)
    images = trained.sample(len(requested), y=requested)
    assert images.shape == (500, 64)
    accuracy = classifier.score(images.numpy(), requested.numpy())
    assert accuracy > 0.8  # chance is 0.1
    for label in range(10):  # every class, not just most of them
        shown = requested == label
        assert classifier.score(images[shown].numpy(), requested[shown].numpy()) > 0.5


def test_true_labels_explain_the_test_images_better(digits, trained):
    """log p(x | y) with the true y beats a wrong y (y + 1 mod 10) on average, by many paired standard errors."""
    x = observed_test_set(digits.x_test, binary=True)
    pyro.set_rng_seed(2)
    right = iwae_log_likelihood(trained.model, trained.guide, x, k=100, y=digits.y_test)
    wrong = iwae_log_likelihood(trained.model, trained.guide, x, k=100, y=(digits.y_test + 1) % 10)
    gap = right.per_example - wrong.per_example
    assert gap.mean() > 10 * gap.std() / len(gap) ** 0.5
    bound = elbo(trained.model, trained.guide, x, num_particles=100, y=digits.y_test)
    assert right.mean > bound.mean  # IWAE_100 >= ELBO, both of log p(x | y)


def test_sample_takes_one_class_or_one_per_draw(trained):
    assert trained.sample(3, y=7).shape == (3, 64)
    assert trained.sample(4, y=torch.tensor([0, 1, 2, 3])).shape == (4, 64)
    for bad in (10, -1, torch.tensor([0.5, 1.0])):
        with pytest.raises(InputError, match=r"sample: y must hold class labels 0\.\.9"):
            trained.sample(2, y=bad)
    with pytest.raises(InputError, match="conditional on 10 classes: pass labels y"):
        trained.sample(2)
    x = torch.zeros(2, 64)
    with pytest.raises(InputError, match="conditional on 10 classes: pass labels y"):
        trained.guide(x)


def test_plain_vae_takes_no_labels(digits):
    vae = VAE(model_config_for(digits, z_dim=2, hidden=(16,)))
    assert vae.sample(3).shape == (3, 64)
    with pytest.raises(InputError, match="this VAE is not conditional: it takes no labels y"):
        vae.sample(3, y=1)
    with pytest.raises(InputError, match="this VAE is not conditional"):
        vae.model(torch.zeros(2, 64), torch.tensor([0, 1]))


def test_conditional_needs_labelled_data(digits):
    unlabelled = Dataset("unlabelled", digits.x_train[:64], digits.x_test[:16], None, None, (1, 8, 8))
    with pytest.raises(InputError, match="--conditional needs labels, but data set 'unlabelled' has none"):
        model_config_for(unlabelled, conditional=True)
    vae = VAE(model_config_for(digits, conditional=True, z_dim=2, hidden=(16,)))
    with pytest.raises(InputError, match="data set 'unlabelled' has no labels"):
        fit(vae, unlabelled, TrainConfig(epochs=1), progress=False)


def test_cli_trains_and_reloads_a_conditional_run(tmp_path, capsys):
    out = tmp_path / "cvae"
    arguments = ["train", "--conditional", "--epochs", "1", "--z-dim", "2", "--hidden", "16", "--k", "10"]
    assert main([*arguments, "--eval-particles", "5", "--no-progress", "--out", str(out)]) == 0
    assert "test log p(x | y) (IWAE, k=10)" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["conditional"] is True
    assert json.loads((out / "config.json").read_text())["model"]["num_classes"] == 10
    for name in ("samples.png", "reconstructions.png", "latent.png", "elbo.png"):
        assert (out / name).stat().st_size > 0
    assert load(out).config.num_classes == 10
    assert (
        main(["evaluate", str(out), "--k", "100", "--eval-particles", "5", "--gap-examples", "2", "--gap-steps", "5"])
        == 0
    )
    out_text = capsys.readouterr().out
    assert "log p(x | y)" in out_text and "active units" in out_text  # the report, with the labels
    report = json.loads((out / "report.json").read_text())
    assert report["log_likelihood"] >= report["elbo"] and set(report["latent_sites"]) == {"z"}
    assert "amortization_gap" in report and (out / "posterior.nc").is_file() and not (out / "manifold.png").exists()
