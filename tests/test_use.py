"""Using a trained run: sample, reconstruct, encode, traverse and interpolate (ppl_vae.use and its CLI commands), on a
digits run, a conditional run on a 28x28 npz, a two-layer VAE and a user's program; one line for every bad input."""

import re

import numpy as np
import pytest
import torch

from ppl_vae import use
from ppl_vae.cli import main
from ppl_vae.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from ppl_vae.data import load_dataset
from ppl_vae.diagnostics import diagnose, latent_usage
from ppl_vae.errors import InputError
from ppl_vae.evaluate import elbo, iwae_log_likelihood, observed_test_set
from ppl_vae.run import load, model_config_for, program_spec_for, train_run
from ppl_vae.train import seed_everything
from ppl_vae.user_program import build_program
from ppl_vae.vae import VAE

FAST = {"train": TrainConfig(epochs=1, batch_size=128, lr=3e-3), "evaluation": EvalConfig(k=5, num_particles=2)}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """The built-in VAE, z_dim 3, hidden 32, one epoch on the digits."""
    data = load_dataset("digits")
    run_dir = tmp_path_factory.mktemp("use") / "digits"
    train_run(RunConfig(model=model_config_for(data, z_dim=3, hidden=(32,)), **FAST), run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def mnist_like(tmp_path_factory):
    """60 random 28x28 images with labels 0..2 in an npz."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("use") / "tiny28.npz"
    images, labels = rng.random((60, 28, 28), dtype=np.float32), rng.integers(0, 3, 60)
    np.savez(path, x_train=images[:48], x_test=images[48:], y_train=labels[:48], y_test=labels[48:])
    return path


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory, mnist_like):
    """A conditional VAE (3 classes), z_dim 2, one epoch on the 28x28 npz."""
    data = load_dataset(str(mnist_like))
    model = model_config_for(data, conditional=True, z_dim=2, hidden=(32,))
    run_dir = tmp_path_factory.mktemp("use") / "npz"
    train_run(RunConfig(model=model, data=DataConfig(name=str(mnist_like)), **FAST), run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def program_run(tmp_path_factory):
    """``tests/user_programs.py:build_vae`` (latent "code", offers decode but not encode), one epoch."""
    spec = program_spec_for(load_dataset("digits"), "user_programs:build_vae", {"z_dim": 2})
    run_dir = tmp_path_factory.mktemp("use") / "program"
    train_run(RunConfig(program=spec, **FAST), run_dir, progress=False)
    return run_dir


def cli(capsys, *argv):
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return captured.out


def test_sample_writes_a_grid_or_the_pixel_means_or_draws(digits_run, tmp_path, capsys):
    cli(capsys, "sample", digits_run, "--n", 12)
    assert (digits_run / "sample.png").stat().st_size > 0
    cli(capsys, "sample", digits_run, "--n", 12, "--seed", 3, "--out", tmp_path / "means.npz")
    means = np.load(tmp_path / "means.npz")["images"]
    vae = load(digits_run)
    seed_everything(3)  # after loading, as the command does: building the VAE draws its first weights
    assert means.shape == (12, 64)
    np.testing.assert_array_equal(means, vae.sample(12).numpy())
    cli(capsys, "sample", digits_run, "--n", 12, "--draw", "--out", tmp_path / "draws.npz")
    assert set(np.unique(np.load(tmp_path / "draws.npz")["images"])) == {0.0, 1.0}  # Bernoulli draws


def test_reconstruct_npz_holds_the_evaluation_numbers_of_each_image(digits_run, digits, tmp_path, capsys):
    out = tmp_path / "recon.npz"
    cli(capsys, "reconstruct", digits_run, "--n", 7, "--k", 40, "--eval-particles", 6, "--seed", 5, "--out", out)
    saved = np.load(out)
    vae = load(digits_run)
    x = observed_test_set(digits.x_test, binary=True)[:7]
    np.testing.assert_array_equal(saved["originals"], x.numpy())
    np.testing.assert_array_equal(saved["reconstructions"], vae.reconstruct(x).numpy())
    seed_everything(5)
    expected_elbo = elbo(vae.model, vae.guide, x, num_particles=6).per_example
    expected_log_px = iwae_log_likelihood(vae.model, vae.guide, x, k=40).per_example
    np.testing.assert_allclose(saved["elbo"], expected_elbo.numpy(), rtol=1e-6)
    np.testing.assert_allclose(saved["log_likelihood"], expected_log_px.numpy(), rtol=1e-6)
    assert (saved["log_likelihood"] > saved["elbo"] - 5).all() and int(saved["k"]) == 40
    cli(capsys, "reconstruct", digits_run, "--n", 16)
    assert (digits_run / "reconstruct.png").stat().st_size > 0


def test_encode_writes_loc_and_scale_of_every_example_in_batches(digits_run, digits, tmp_path, capsys):
    out = tmp_path / "codes.npz"
    cli(capsys, "encode", digits_run, "--split", "train", "--batch-size", 100, "--no-progress", "--out", out)
    saved = np.load(out)
    vae = load(digits_run)
    loc, scale = vae.encode(observed_test_set(digits.x_train, binary=True))
    assert list(saved["sites"]) == ["z"] and saved["z_loc"].shape == (1497, 3)
    np.testing.assert_allclose(saved["z_loc"], loc.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(saved["z_scale"], scale.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(saved["labels"], digits.y_train)  # the data's labels, for another tool


def test_traverse_row_j_varies_only_dimension_j_by_prior_sds(digits_run, digits, tmp_path, capsys):
    out = tmp_path / "walk.npz"
    cli(capsys, "traverse", digits_run, "--dims", "2,0", "--range", 2, "--steps", 5, "--base", 4, "--out", out)
    saved = np.load(out)
    vae = load(digits_run)
    base = vae.encode(observed_test_set(digits.x_test, binary=True)[4:5])[0][0].detach()
    codes = torch.from_numpy(saved["codes"])
    assert codes.shape == (2, 5, 3) and saved["images"].shape == (2, 5, 64)
    np.testing.assert_allclose(saved["values"], [-2, -1, 0, 1, 2], atol=1e-7)
    for row, dim in enumerate([2, 0]):
        others = [j for j in range(3) if j != dim]
        torch.testing.assert_close(codes[row][:, others], base[others].expand(5, 2))
        torch.testing.assert_close(codes[row][:, dim], base[dim] + torch.tensor([-2.0, -1, 0, 1, 2]))  # N(0, I)
    np.testing.assert_array_equal(saved["images"][1], vae.decode(codes[1]).mean.detach().numpy())


def test_traverse_without_dims_puts_the_active_dimensions_first_then_by_kl(digits_run, digits, tmp_path, capsys):
    vae = load(digits_run)
    x = observed_test_set(digits.x_test, binary=True)
    order = use.dimension_order(vae, x)
    ranked = [(not bool(order.active[j]), -float(order.kl[j])) for j in order.order.tolist()]
    assert ranked == sorted(ranked) and sorted(order.order.tolist()) == [0, 1, 2]
    assert torch.allclose(order.activity, vae.encode(x[:500])[0].var(0).double(), rtol=1e-4)
    seed_everything(2)
    usage = latent_usage(vae.model, vae.guide, x, k=100)["z"]
    seed_everything(2)
    report = diagnose(vae.model, vae.guide, x, k=100).latent_sites["z"]  # the same draws, without ArviZ's k-hat
    assert torch.equal(usage.kl_per_dim, report.kl_per_dim) and torch.equal(usage.activity, report.activity)
    assert usage.kl_method == "closed form" and torch.equal(order.kl, usage.kl_per_dim.double())
    cli(capsys, "traverse", digits_run, "--seed", 0, "--out", tmp_path / "walk.npz")
    saved = np.load(tmp_path / "walk.npz")
    seed_everything(0)
    assert saved["dims"].tolist() == use.dimension_order(vae, x).order.tolist()
    np.testing.assert_array_equal(saved["base"], np.zeros(3))  # the mean of N(0, I)
    cli(capsys, "traverse", digits_run)
    assert (digits_run / "traverse.png").stat().st_size > 0


@pytest.mark.parametrize("spherical", [False, True])
def test_interpolate_starts_and_ends_at_the_two_images_codes(digits_run, digits, tmp_path, capsys, spherical):
    out = tmp_path / "path.npz"
    cli(
        capsys, "interpolate", digits_run, "--a", 3, "--b", 10, "--steps", 7, *["--spherical"] * spherical, "--out", out
    )
    saved = np.load(out)
    vae = load(digits_run)
    loc = vae.encode(observed_test_set(digits.x_test, binary=True)[[3, 10]])[0].detach()
    codes, t = torch.from_numpy(saved["codes"]), torch.from_numpy(saved["t"])
    assert saved["images"].shape == (7, 64)
    torch.testing.assert_close(codes[[0, -1]], loc, rtol=0, atol=0)
    np.testing.assert_array_equal(saved["images"][[0, -1]], vae.decode(loc).mean.detach().numpy())
    norms, ends = codes.norm(dim=-1), loc.norm(dim=-1)
    if spherical:  # the norm goes linearly from |a| to |b|, the direction along the great circle
        torch.testing.assert_close(norms, (1 - t) * ends[0] + t * ends[1])
        cosines = (codes / norms[:, None]) @ (loc[0] / ends[0])
        assert (cosines.diff() < 0).all()  # moving steadily away from a's direction
    else:
        torch.testing.assert_close(codes, (1 - t)[:, None] * loc[0] + t[:, None] * loc[1])
    cli(capsys, "interpolate", digits_run, "--a", 3, "--b", 10)
    assert (digits_run / "interpolate.png").stat().st_size > 0


def test_every_command_on_a_conditional_28x28_run(conditional_run, mnist_like, tmp_path, capsys):
    labels = np.load(mnist_like)["y_test"]
    for name in ("sample", "reconstruct", "traverse", "interpolate"):
        extra = {"interpolate": ["--a", 0, "--b", 5], "traverse": ["--y", 0]}.get(name, [])
        cli(capsys, name, conditional_run, *extra, "--out", tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 0
    cli(capsys, "sample", conditional_run, "--n", 6, "--y", 2, "--out", tmp_path / "twos.npz")
    saved = np.load(tmp_path / "twos.npz")
    assert saved["images"].shape == (6, 784) and saved["labels"].tolist() == [2] * 6
    cli(capsys, "encode", conditional_run, "--out", tmp_path / "codes.npz", "--no-progress")
    codes = np.load(tmp_path / "codes.npz")
    vae = load(conditional_run)
    x = observed_test_set(torch.from_numpy(np.load(mnist_like)["x_test"].reshape(12, 784)), binary=True)
    np.testing.assert_allclose(codes["z_loc"], vae.encode(x, torch.from_numpy(labels))[0].detach().numpy(), rtol=1e-5)
    assert codes["labels"].tolist() == labels.tolist()
    cli(capsys, "reconstruct", conditional_run, "--n", 4, "--k", 10, "--eval-particles", 2, "--out", tmp_path / "r.npz")
    saved = np.load(tmp_path / "r.npz")
    assert saved["reconstructions"].shape == (4, 784) and saved["elbo"].shape == (4,)
    assert saved["labels"].tolist() == labels[:4].tolist()
    cli(capsys, "traverse", conditional_run, "--y", 1, "--steps", 3, "--out", tmp_path / "walk.npz")
    walk = np.load(tmp_path / "walk.npz")
    expected = vae.decode(torch.from_numpy(walk["codes"][0]), torch.ones(3, dtype=torch.int64)).mean
    np.testing.assert_allclose(walk["images"][0], expected.detach().numpy(), rtol=1e-6)  # one batch of 3, not 27


def test_two_latent_layers_encode_both_sites_and_walk_z1(digits, float64):
    vae = VAE(model_config_for(digits, z_dim=3, hidden=(16,), latent_layers=2, top_z_dim=2))
    x = observed_test_set(digits.x_test, binary=True).double()
    codes = use.encode(vae, x, batch_size=64)
    assert list(codes) == ["z1", "z2"]
    loc, scale = vae.encode(x)
    torch.testing.assert_close(codes["z1"].loc, loc)
    torch.testing.assert_close(codes["z1"].scale, scale)
    top = vae.guide_z2.dist(loc)  # q(z2 | z1) read at z1 = E_q[z1 | x]
    torch.testing.assert_close(codes["z2"].loc, top.mean)
    torch.testing.assert_close(codes["z2"].scale, top.stddev)
    mean, sd = use.prior_moments(vae, x)  # Monte Carlo: 4096 draws of z1 = E p(z1 | z2)
    seed_everything(1)
    with torch.no_grad():
        z2 = vae.prior.dist().sample((200_000,))
        z1 = vae.prior_z1.dist(z2).sample()
    torch.testing.assert_close(mean, z1.mean(0), atol=4 * float(z1.std(0).max()) / 64, rtol=0)
    torch.testing.assert_close(sd, z1.std(0), atol=0, rtol=0.1)
    walk = use.traverse(vae, mean, [1], sd, span=1.0, steps=3)
    assert walk.images.shape == (1, 3, 64)


def test_a_program_encodes_through_its_guide_and_walks_with_its_decode(program_run, digits, tmp_path, capsys):
    argv = ["encode", program_run, "--out", tmp_path / "codes.npz", "--no-progress"]
    assert main([str(arg) for arg in argv]) == 2 and "--trust-program" in capsys.readouterr().err
    cli(capsys, *argv, "--trust-program")
    codes = np.load(tmp_path / "codes.npz")
    program = load(program_run, trust_program=True)
    x = observed_test_set(digits.x_test, binary=True)
    loc, h = program.modules.encoder(x).split(2, dim=-1)
    assert list(codes["sites"]) == ["code"]
    np.testing.assert_allclose(codes["code_loc"], loc.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(codes["code_scale"], h.exp().detach().numpy(), rtol=1e-6, atol=1e-7)
    cli(capsys, "traverse", program_run, "--trust-program", "--steps", 4, "--out", tmp_path / "walk.npz")
    walk = np.load(tmp_path / "walk.npz")
    assert walk["images"].shape == (2, 4, 64) and sorted(walk["dims"].tolist()) == [0, 1]
    mean = walk["base"]
    assert np.abs(mean).max() < 4 / 64 * 3 and np.allclose(walk["prior_sd"], 1, atol=0.1)  # 4096 draws of N(0, I)
    cli(capsys, "interpolate", program_run, "--trust-program", "--a", 0, "--b", 1, "--out", tmp_path / "path.png")
    cli(capsys, "sample", program_run, "--trust-program", "--n", 8, "--out", tmp_path / "sample.png")
    assert (tmp_path / "path.png").stat().st_size > 0 and (tmp_path / "sample.png").stat().st_size > 0


def test_a_program_without_decode_or_a_normal_guide_is_refused_in_one_line(digits):
    spec = program_spec_for(digits, "user_programs:build_two_level", {})
    program = build_program(spec)
    x = observed_test_set(digits.x_test, binary=True)[:5]
    assert list(use.encode(program, x)) == ["z1", "z2"]
    with pytest.raises(InputError, match=r"the program offers no decode\(\) \(UserProgram.decode\)"):
        use.interpolate(program, torch.zeros(2), torch.ones(2))
    with pytest.raises(InputError, match="--draw: a program's sample"):
        use.sample(program, 3, draw=True)
    with pytest.raises(InputError, match=r"the program offers no sample\(\)"):
        use.sample(program, 3)


def test_slerp_keeps_unit_vectors_on_the_sphere_and_refuses_opposite_codes(float64):
    t = torch.linspace(0, 1, 11)
    a, b = torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 0.6, 0.8])
    path = use.slerp(a, b, t)
    torch.testing.assert_close(path.norm(dim=-1), torch.ones(11))
    torch.testing.assert_close(path[5], (a + b) / (a + b).norm())  # the midpoint of the arc
    torch.testing.assert_close(use.slerp(a, 2 * a, t), (1 + t)[:, None] * a)  # same direction: linear
    with pytest.raises(InputError, match="opposite directions"):
        use.slerp(a, -a, t)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "{tmp}"], "does not exist|not a run folder|config.json"),
        (["sample", "{digits}", "--n", "0"], "--n must be an integer from 1 to 10000, got 0"),
        (["sample", "{digits}", "--n", "-3"], "--n must be an integer from 1 to 10000, got -3"),
        (["sample", "{digits}", "--n", "1000000000"], "--n must be an integer from 1 to 10000, got 1000000000"),
        (["sample", "{digits}", "--n", "nan"], "--n must be an integer from 1 to 10000, got 'nan'"),
        (["sample", "{digits}", "--n", "true"], "--n must be an integer from 1 to 10000, got 'true'"),
        (["sample", "{digits}", "--y", "3"], "--y 3: this model takes no class labels"),
        (["sample", "{npz_run}", "--y", "7"], r"--y \[7\]: expected class labels from 0 to 2"),
        (["sample", "{npz_run}", "--y", "one"], "--y 'one': expected a class label from 0 to 2"),
        (["sample", "{digits}", "--out", "{tmp}/samples.jpg"], "expected a file ending in .png or .npz"),
        (["sample", "{digits}", "--out", "{tmp}/none/s.png"], "does not exist"),
        (["reconstruct", "{digits}", "--data", "{npz}"], r"has images of shape \(1, 28, 28\), the run's model expects"),
        (["reconstruct", "{digits}", "--n", "301"], "--n must be an integer from 1 to 300, got 301"),
        (["reconstruct", "{digits}", "--split", "valid"], "--split 'valid': expected one of test, train"),
        (["reconstruct", "{digits}", "--k", "0", "--out", "{tmp}/r.npz"], "--k must be an integer >= 1, got 0"),
        (["encode", "{digits}"], "encode needs --out FILE.npz"),
        (["encode", "{digits}", "--out", "{tmp}/c.png"], "expected a file ending in .npz"),
        (["encode", "{digits}", "--out", "{tmp}/c.npz", "--batch-size", "0"], "--batch-size must be an integer"),
        (
            ["traverse", "{digits}", "--dims", "0,3"],
            "--dims 3: expected a dimension of the code, an integer from 0 to 2",
        ),
        (["traverse", "{digits}", "--dims", "0,x"], "--dims 'x': expected a dimension of the code"),
        (["traverse", "{digits}", "--dims", "1,1"], r"--dims \[1, 1\]: each dimension at most once"),
        (["traverse", "{digits}", "--range", "nan"], "--range must be a positive number .* got nan"),
        (["traverse", "{digits}", "--range", "-1"], "--range must be a positive number .* got -1.0"),
        # found by scripts/fuzz_flags.py: float32's largest value overflowed torch.linspace
        (["traverse", "{digits}", "--range", "3.4e38"], "--range must be .* at most 1000, got 3.4e"),
        (["traverse", "{digits}", "--steps", "1"], "--steps must be an integer from 2 to 100, got 1"),
        (["traverse", "{digits}", "--base", "300"], "--base must be an integer from 0 to 299, got 300"),
        (["traverse", "{npz_run}"], "conditional on class labels: give --y CLASS"),
        (["interpolate", "{digits}", "--a", "0", "--b", "-1"], "--b must be an integer from 0 to 299, got -1"),
        (["interpolate", "{digits}", "--a", "true", "--b", "1"], "--a must be an integer from 0 to 299, got 'true'"),
    ],
)
def test_bad_input_is_one_clear_line(capsys, tmp_path, digits_run, conditional_run, mnist_like, argv, message):
    names = {"tmp": tmp_path, "digits": digits_run, "npz_run": conditional_run, "npz": mnist_like}
    status = main([arg.format(**names) for arg in argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("ppl-vae: error: "), lines
    assert re.search(message, lines[0]), lines[0]


def test_python_calls_refuse_booleans_and_missing_labels(digits_run, conditional_run):
    vae, conditional = load(digits_run), load(conditional_run)
    with pytest.raises(InputError, match="--n must be an integer from 1 to 10000, got True"):
        use.sample(vae, True)
    with pytest.raises(InputError, match="--range must be a positive number"):
        use.traverse(vae, torch.zeros(3), [0], torch.ones(3), span=True)
    with pytest.raises(InputError, match="sample: this model is conditional on class labels"):
        use.sample(conditional, 4)
    with pytest.raises(InputError, match="--steps must be an integer from 2 to 100, got 2.5"):
        use.interpolate(vae, torch.zeros(3), torch.ones(3), steps=2.5)
