"""Tests for training a user's own Pyro model and guide through ``fit`` and evaluating them, without subclassing.

The model here is written the way a user would: a Student-t prior on z, a Bernoulli likelihood whose logits come from
the user's own decoder, a diagonal Normal guide from the user's own encoder, both registered with ``pyro.module``.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from ppl_vae.config import TrainConfig
from ppl_vae.data import Dataset, load_dataset
from ppl_vae.errors import InputError
from ppl_vae.evaluate import elbo, iwae_log_likelihood, observed_test_set
from ppl_vae.programs import UserProgram
from ppl_vae.run import model_config_for
from ppl_vae.train import fit
from ppl_vae.vae import VAE

Z_DIM = 4


def student_t_vae(seed: int, x_dim: int = 64, hidden: int = 64):
    """A user's model and guide: p(z) = StudentT(3, 0, 1)^Z_DIM, p(x | z) = Bernoulli(logits = decoder(z))."""
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * Z_DIM))
    decoder = nn.Sequential(nn.Linear(Z_DIM, hidden), nn.ReLU(), nn.Linear(hidden, x_dim))

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.StudentT(3.0, x.new_zeros(Z_DIM), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        loc, log_scale = encoder(x).split(Z_DIM, dim=-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return model, guide, {"encoder": encoder, "decoder": decoder}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def small(digits):
    return Dataset("small", digits.x_train[:512], digits.x_test[:100], None, None, (1, 8, 8))


def test_custom_model_trains_through_fit_and_its_test_elbo_improves(digits):
    pyro.clear_param_store()
    model, guide, modules = student_t_vae(seed=0)
    x_test = observed_test_set(digits.x_test, binary=True)
    pyro.set_rng_seed(0)
    before = elbo(model, guide, x_test, num_particles=20)
    config = TrainConfig(epochs=4, batch_size=128, lr=3e-3, eval_every=1)
    history = fit(
        model=model, guide=guide, modules=modules, data=digits, config=config, binarize_data=True, progress=False
    )
    assert [record["epoch"] for record in history] == [1, 2, 3, 4]
    pyro.set_rng_seed(0)
    after = elbo(model, guide, x_test, num_particles=20)
    assert after.mean == pytest.approx(history[-1]["test_elbo"], abs=5 * after.se)
    gain = after.per_example - before.per_example  # paired over the same test images
    assert gain.mean() > 5.0  # nats per example
    assert gain.mean() > 10 * gain.std() / len(gain) ** 0.5
    assert history[-1]["test_elbo"] > history[0]["test_elbo"] + 3 * history[0]["test_elbo_se"]
    log_likelihood = iwae_log_likelihood(model, guide, x_test, k=200)
    assert (log_likelihood.per_example - after.per_example).mean() > 0  # IWAE_200 >= ELBO on average


def test_custom_model_resumes_with_the_numbers_of_an_uninterrupted_run(small, tmp_path):
    """Interrupted after 2 epochs and resumed in a fresh parameter store with freshly built networks (as in a new
    process), it ends with the same history and weights as a run of 4 epochs in one go."""
    config = TrainConfig(epochs=4, batch_size=128, eval_every=2, eval_particles=2)

    def run(seed, **options):
        pyro.clear_param_store()
        model, guide, modules = student_t_vae(seed=seed, hidden=16)
        history = fit(model=model, guide=guide, modules=modules, data=small, binarize_data=True, **options)
        return history, modules

    straight, straight_modules = run(0, config=config, progress=False)
    run(0, config=TrainConfig(**{**config.__dict__, "epochs": 2}), run_dir=tmp_path, progress=False)
    resumed, resumed_modules = run(7, config=config, run_dir=tmp_path, resume=True, progress=False)

    def numbers(history):
        return [{key: value for key, value in record.items() if key != "seconds"} for record in history]

    assert numbers(resumed) == numbers(straight)
    for name in ("encoder", "decoder"):
        for a, b in zip(straight_modules[name].parameters(), resumed_modules[name].parameters(), strict=True):
            assert torch.equal(a, b)


def test_custom_model_takes_beta_and_warm_up(small):
    pyro.clear_param_store()
    model, guide, modules = student_t_vae(seed=0, hidden=16)
    config = TrainConfig(epochs=2, batch_size=128, beta=2.0, anneal="linear", anneal_epochs=4, eval_particles=2)
    history = fit(
        model=model, guide=guide, modules=modules, data=small, config=config, binarize_data=True, progress=False
    )
    assert [record["latent_scale"] for record in history] == pytest.approx([2.0 * 0.75 / 4, 2.0 * 1.75 / 4])


def test_fit_takes_a_user_program_as_it_takes_model_guide_and_modules(small):
    """fit(UserProgram(...), data, config) and the keyword form train the same program to the same numbers."""
    config = TrainConfig(epochs=1, batch_size=128, eval_particles=2)
    histories = []
    for as_program in (False, True):
        pyro.clear_param_store()
        model, guide, modules = student_t_vae(seed=0, hidden=16)
        if as_program:
            history = fit(UserProgram(model, guide, modules, binary=True), small, config, progress=False)
        else:
            history = fit(
                model=model, guide=guide, modules=modules, data=small, config=config, binarize_data=True, progress=False
            )
        histories.append([{k: v for k, v in record.items() if k != "seconds"} for record in history])
    assert histories[0] == histories[1]


def test_fit_refuses_ambiguous_or_incomplete_programs(small, digits):
    pyro.clear_param_store()
    model, guide, modules = student_t_vae(seed=0, hidden=16)
    vae = VAE(model_config_for(digits, z_dim=2, hidden=(16,)))
    with pytest.raises(InputError, match="fit needs a VAE or a UserProgram, or model=, guide= and modules="):
        fit(model=model, guide=guide, data=small)
    with pytest.raises(InputError, match="fit takes either a VAE or a UserProgram, or model="):
        fit(vae, small, model=model, guide=guide, modules=modules)
    with pytest.raises(InputError, match="fit trains a VAE or a ppl_vae.UserProgram, got tuple"):
        fit((model, guide), small)
    with pytest.raises(InputError, match="fit needs data="):
        fit(model=model, guide=guide, modules=modules)
    with pytest.raises(InputError, match="data set 'small' has no labels"):
        fit(model=model, guide=guide, modules=modules, data=small, labels=True)
    with pytest.raises(InputError, match="--elbo reference-mc is the hand-written loss of the built-in VAE"):
        fit(model=model, guide=guide, modules=modules, data=small, config=TrainConfig(elbo="reference-mc"))


def test_custom_model_gets_the_labels_of_each_minibatch(digits):
    """labels=True: both programs get y, one label per example of the minibatch, and the conditional model trains."""
    torch.manual_seed(0)
    encoder = nn.Linear(64 + 10, 2 * Z_DIM)
    decoder = nn.Linear(Z_DIM + 10, 64)
    seen = []

    def model(x, y):
        pyro.module("decoder", decoder)
        seen.append((x.shape[0], y.shape))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(Z_DIM), 1.0).to_event(1))
            logits = decoder(torch.cat([z, torch.nn.functional.one_hot(y, 10).to(z).expand(*z.shape[:-1], 10)], -1))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(x, y):
        pyro.module("encoder", encoder)
        loc, log_scale = encoder(torch.cat([x, torch.nn.functional.one_hot(y, 10).to(x)], -1)).split(Z_DIM, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    config = TrainConfig(epochs=3, batch_size=100, lr=1e-2, eval_particles=2)
    modules = {"encoder": encoder, "decoder": decoder}
    history = fit(
        model=model, guide=guide, modules=modules, data=digits, config=config, binarize_data=True, labels=True,
        progress=False,
    )  # fmt: skip
    assert all(size == shape[0] for size, shape in seen)
    assert history[-1]["test_elbo"] > history[0]["test_elbo"] + 3 * history[0]["test_elbo_se"]
