"""Every registered part trains: likelihoods, priors, guides and networks crossed so that each entry of each registry
appears at least once, a few epochs on digits, without NaN and with a better test ELBO than before training; and the
two-layer VAE (``latent_layers=2``) with every guide, each prior it takes and both networks.

Kept fast: 512 training and 100 test images, 3 epochs of 8 minibatches, small networks.
"""

import dataclasses
import math

import pyro
import pytest
import torch

from ppl_vae.config import ModelConfig, RunConfig, TrainConfig
from ppl_vae.data import load_dataset
from ppl_vae.evaluate import elbo, log_importance_weights, observed_test_set
from ppl_vae.guides import GUIDES
from ppl_vae.likelihoods import LIKELIHOODS
from ppl_vae.nets import NETS
from ppl_vae.priors import PRIORS
from ppl_vae.train import fit, seed_everything
from ppl_vae.vae import VAE

REGISTRIES = [sorted(registry) for registry in (LIKELIHOODS, PRIORS, GUIDES, NETS)]
COMBINATIONS = [
    tuple(names[i % len(names)] for names in REGISTRIES) for i in range(max(len(names) for names in REGISTRIES))
]
"""Row ``i`` takes entry ``i`` of every registry (cycling the shorter ones): each entry at least once, mixed."""
TWO_LAYERS = [
    ("bernoulli", "mog", "iaf", "mlp"),
    ("gaussian-learned", "normal", "lowrank", "mlp"),
    ("laplace", "normal", "diagonal", "conv"),
]
"""Two-layer rows: the guide is q(z1 | x), the prior p(z2) (the VampPrior is refused for two layers)."""
CASES = [(*row, 1) for row in COMBINATIONS] + [(*row, 2) for row in TWO_LAYERS]


def test_every_entry_is_covered():
    for column, names in enumerate(REGISTRIES):
        assert {row[column] for row in COMBINATIONS} == set(names)


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    return dataclasses.replace(
        data, x_train=data.x_train[:512], y_train=data.y_train[:512], x_test=data.x_test[:100], y_test=data.y_test[:100]
    )


@pytest.mark.parametrize("likelihood, prior, guide, net, layers", CASES)
def test_trains_without_nan_and_improves(digits, likelihood, prior, guide, net, layers):
    pyro.clear_param_store()
    seed_everything(0)
    parts = dict(likelihood=likelihood, prior=prior, guide=guide, net=net, latent_layers=layers)
    config = ModelConfig(x_dim=64, image_shape=(1, 8, 8), z_dim=4, hidden=(32,), **parts)
    vae = VAE(config)
    x_test = observed_test_set(digits.x_test, vae.likelihood.binary)
    before = elbo(vae.model, vae.guide, x_test, num_particles=10)
    history = fit(vae, digits, TrainConfig(epochs=3, eval_every=3, eval_particles=10), progress=False)
    assert all(math.isfinite(record["train_elbo"]) for record in history)
    after = elbo(vae.model, vae.guide, x_test, num_particles=10)
    assert torch.isfinite(after.per_example).all()
    gain = after.per_example - before.per_example  # paired over the same test images
    assert gain.mean() > 4 * gain.std() / math.sqrt(len(gain)), f"test ELBO {before.mean:.2f} -> {after.mean:.2f}"


@pytest.mark.parametrize("likelihood, prior, guide, net, layers", CASES)
def test_rebuilds_from_config_json_and_state_dict(likelihood, prior, guide, net, layers):
    """A checkpoint holds every part's weights (pseudo-inputs, mixture, flows, learned pixel scales): a VAE rebuilt
    from the JSON config and loaded gives the same log weights for the same seed."""
    options = dict(likelihood=likelihood, prior=prior, guide=guide, net=net, prior_components=4, rank=3, flow_layers=3)
    options.update(latent_layers=layers)
    config = RunConfig(model=ModelConfig(x_dim=64, image_shape=(1, 8, 8), z_dim=4, hidden=(16,), **options))
    seed_everything(0)
    original = VAE(config.model)
    seed_everything(1)  # different starting weights, replaced by the loaded ones
    rebuilt = VAE(RunConfig.from_json(config.to_json()).model)
    rebuilt.load_state_dict(original.state_dict())
    x = torch.rand(5, 64).round()
    weights = []
    for vae in (original, rebuilt):
        seed_everything(2)
        weights.append(log_importance_weights(vae.model, vae.guide, x, num_samples=3))
    assert torch.equal(weights[0], weights[1])
