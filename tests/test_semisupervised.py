"""The M2 / joint family (ppl_vae.semisupervised) against ground truth.

A two-component mixture of linear-Gaussian models, built from the family's own networks (an MLP of one ReLU layer
computes a linear map exactly with the weights ``[I; -I]`` then ``[A, -A]``: ``relu(u) - relu(-u) = u``)::

    y ~ Cat(1/2),  z ~ N(0, I_2),  x | y, z ~ N(W z + mu_y, s^2 I_3)        p(x | y) = N(mu_y, W W^T + s^2 I)

with ``W``'s columns orthogonal, so that the exact posterior p(z | x, y) = N(m_y(x), S) has a diagonal ``S``; the
guide's q(z | x, y) = N(m_y(x), (1.3 sqrt(diag S))^2) has the exact mean and too wide a scale, and q(y | x) is the
classifier's (random weights). Then, per example, in closed form::

    log p(x)   = logsumexp_y [log 1/2 + log N(x; mu_y, W W^T + s^2 I)]           p(y | x) = softmax_y of the same terms
    ELBO(x)    = sum_y q(y | x) [log 1/2 + log p(x | y) - KL(q(z | x, y) || p(z | x, y)) - log q(y | x)]
"""

import json
import math

import pyro
import pytest
import torch
from pyro.infer import TraceEnum_ELBO, TraceGraph_ELBO

from ppl_vae import semisupervised
from ppl_vae.cli import main
from ppl_vae.config import ModelConfig, RunConfig, TrainConfig
from ppl_vae.data import split_indices
from ppl_vae.errors import InputError
from ppl_vae.evaluate import iwae_log_likelihood
from ppl_vae.run import load
from ppl_vae.semisupervised import (
    SemiSupervisedVAE,
    class_log_joint,
    clustering_accuracy,
    discrete_program,
    labelled_subset,
    partial_labels,
)

D, Z, C, PIXEL_SCALE, WIDE = 3, 2, 2, 0.5, 1.3


def set_linear(mlp: torch.nn.Sequential, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Make ``MLP(in, (h,), out)`` (``h >= 2 in``) compute ``weight @ u + bias`` exactly."""
    first, last = mlp[0], mlp[2]
    width_in = first.in_features
    with torch.no_grad():
        first.weight.zero_()
        first.bias.zero_()
        first.weight[:width_in] = torch.eye(width_in)
        first.weight[width_in : 2 * width_in] = -torch.eye(width_in)
        last.weight.zero_()
        last.weight[:, :width_in] = weight
        last.weight[:, width_in : 2 * width_in] = -weight
        last.bias.copy_(bias)


@pytest.fixture
def mixture():
    """The family's networks set to the linear-Gaussian mixture above (float64), with the closed forms."""
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        config = ModelConfig(
            x_dim=D,
            image_shape=(1, 1, D),
            z_dim=Z,
            hidden=(10,),
            likelihood="gaussian",
            pixel_scale=PIXEL_SCALE,
            num_classes=C,
            family="m2",
        )
        program = discrete_program(config)
        networks = program.modules
        W = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [0.5, 0.0]])  # columns orthogonal: W^T W diagonal
        assert abs((W.T @ W)[0, 1].item()) < 1e-12
        mu = torch.tensor([[1.0, -1.0, 0.5], [-1.5, 0.5, 1.0]])  # mu_y, (C, D)
        set_linear(networks.decoder, torch.cat([W, mu.T], dim=1), torch.zeros(D))
        S = torch.linalg.inv(torch.eye(Z) + W.T @ W / PIXEL_SCALE**2)
        A = S @ W.T / PIXEL_SCALE**2  # m_y(x) = A (x - mu_y)
        loc_weight = torch.cat([A, -(A @ mu.T)], dim=1)  # acting on [x | onehot(y)]
        encoder_weight = torch.cat([loc_weight, torch.zeros(Z, D + C)], dim=0)
        q_scale = WIDE * S.diagonal().sqrt()
        set_linear(networks.encoder.net, encoder_weight, torch.cat([torch.zeros(Z), q_scale.log()]))
        x = torch.randn(6, D) * 1.5
        yield program, x, exact_terms(networks, x, W, mu, S, q_scale)
    finally:
        torch.set_default_dtype(torch.float32)


def exact_terms(networks, x, W, mu, S, q_scale) -> dict:
    """log p(x), p(y | x) and the enumerated ELBO per example, in closed form."""
    cov = W @ W.T + PIXEL_SCALE**2 * torch.eye(D)
    log_p_x_given_y = torch.stack(
        [torch.distributions.MultivariateNormal(mu[c], cov).log_prob(x) for c in range(C)], dim=-1
    )  # (B, C)
    log_joint = math.log(1 / C) + log_p_x_given_y
    # KL(N(m, diag q^2) || N(m, S)) with S diagonal: the means agree
    kl = 0.5 * (q_scale**2 / S.diagonal() - 1 - (q_scale**2 / S.diagonal()).log()).sum()
    with torch.no_grad():
        log_q_y = networks.classifier(x).log_softmax(-1)
    elbo = (log_q_y.exp() * (log_joint - kl - log_q_y)).sum(-1)
    return {
        "log_p_x": torch.logsumexp(log_joint, -1),
        "posterior": (log_joint - torch.logsumexp(log_joint, -1, keepdim=True)).exp(),
        "elbo": elbo,
    }


def enum_guide(program):
    return lambda x, *args: program.modules.guide(x, *args, infer={"enumerate": "parallel"})


def repeated_losses(elbo, model, guide, x, repetitions, *args) -> torch.Tensor:
    with torch.no_grad():
        return torch.tensor([elbo.loss(model, guide, x, *args) for _ in range(repetitions)])


def test_enumerated_elbo_matches_the_closed_form(mixture):
    program, x, exact = mixture
    elbo = TraceEnum_ELBO(max_plate_nesting=1, num_particles=100, vectorize_particles=True)
    losses = repeated_losses(elbo, program.model, enum_guide(program), x, 40)
    se = losses.std().item() / math.sqrt(len(losses))
    assert se < 0.05
    assert -losses.mean().item() == pytest.approx(exact["elbo"].sum().item(), abs=4 * se)


def relative_variance(weights_ratio_per_dim: float, dims: int) -> float:
    """Var[w] / E[w]^2 of w = p(z) / q(z) for p = N(m, s^2), q = N(m, (r s)^2) in each of ``dims`` dimensions:
    (r / sqrt(2 - 1 / r^2))^dims - 1."""
    r = weights_ratio_per_dim
    return (r / math.sqrt(2 - 1 / r**2)) ** dims - 1


def test_exact_sum_iwae_and_class_posterior_match_the_closed_form(mixture):
    """log sum_y exp(IWAE_k(x, y)) -> log p(x), and softmax_y IWAE_k(x, y) -> p(y | x). q(z | x, y) has the exact
    mean and a 1.3x too wide scale, so the standard error of each log p̂(x, y) is sqrt(Var[w] / k) / E[w] (delta
    method), known in closed form; the bias, Var[w] / (2 k E[w]^2), is far smaller. Four standard errors each."""
    program, x, exact = mixture
    k = 20000
    with torch.no_grad():
        log_joint = class_log_joint(program, x, k=k)
    se = math.sqrt(relative_variance(WIDE, Z) / k)
    estimate = torch.logsumexp(log_joint, -1)
    assert (estimate - exact["log_p_x"]).abs().max().item() < 4 * se
    posterior = (log_joint - estimate.unsqueeze(-1)).exp()
    assert (posterior - exact["posterior"]).abs().max().item() < 4 * se  # |d p| <= p (1 - p) * 2 * 4 se


def test_iwae_with_y_sampled_from_the_guide_converges_to_the_same_log_likelihood(mixture):
    """The generic IWAE draws y ~ q(y | x) (an untrained classifier, far from p(y | x)) and z ~ q(z | x, y); the
    relative variance of its weights is sum_y p(y | x)^2 / q(y | x) (1 + v_z) - 1, v_z that of z alone."""
    program, x, exact = mixture
    k = 20000
    with torch.no_grad():
        sampled = iwae_log_likelihood(program.model, program.guide, x, k=k)
        q_y = program.modules.classifier(x).softmax(-1)
    variance = (exact["posterior"] ** 2 / q_y).sum(-1) * (1 + relative_variance(WIDE, Z)) - 1
    assert ((sampled.per_example - exact["log_p_x"]).abs() < 4 * (variance / k).sqrt()).all()


def test_enumeration_and_score_function_estimators_agree_in_expectation(mixture):
    """TraceGraph_ELBO samples y ~ q(y | x); its loss is an unbiased estimate of the enumerated objective, and so
    is the enumerated one (z sampled): their means agree within four standard errors, on a mixed labelled batch
    too."""
    program, x, exact = mixture
    labels = torch.tensor([-1, 1, -1, 0, -1, -1])
    for args in ((), (labels,)):
        enum = TraceEnum_ELBO(max_plate_nesting=1, num_particles=200, vectorize_particles=True)
        graph = TraceGraph_ELBO(max_plate_nesting=1, num_particles=200, vectorize_particles=True)
        a = repeated_losses(enum, program.model, enum_guide(program), x, 30, *args)
        b = repeated_losses(graph, program.model, program.guide, x, 30, *args)
        se = math.hypot(a.std().item(), b.std().item()) / math.sqrt(30)
        assert abs(a.mean().item() - b.mean().item()) < 4 * se
    assert -a.mean().item() != pytest.approx(exact["elbo"].sum().item(), abs=0.1)  # labels change the objective


# ---------------------------------------------------------------- the two terms, by hand, on a tiny model


def tiny_networks(alpha: float):
    torch.manual_seed(3)
    config = ModelConfig(x_dim=4, image_shape=(1, 2, 2), z_dim=2, hidden=(5,), num_classes=3, family="m2")
    networks = SemiSupervisedVAE(config).double()
    x = torch.bernoulli(torch.full((5, 4), 0.5, dtype=torch.float64))
    model = lambda x, *args: networks.model(x, *args, alpha=alpha)  # noqa: E731
    guide = lambda x, *args: networks.guide(x, *args, infer={"enumerate": "parallel"})  # noqa: E731
    return networks, x, model, guide


def by_hand(networks, x: torch.Tensor, labels: torch.Tensor, alpha: float, seed: int) -> torch.Tensor:
    """The M2 loss, -sum_b of L(x_b, l_b) + alpha log q(l_b | x_b) (labelled) or sum_y q(y | x_b) [L(x_b, y) -
    log q(y | x_b)] (unlabelled), with z_{y,b} drawn as the enumerated guide draws it: one reparameterized draw of
    shape (C, B, z_dim) after ``seed``."""
    num_classes = networks.num_classes
    y = torch.arange(num_classes).reshape(num_classes, 1)
    inputs = torch.cat(
        [
            x.expand(num_classes, *x.shape),
            torch.nn.functional.one_hot(y, num_classes).double().expand(num_classes, x.shape[0], num_classes),
        ],
        -1,
    )
    loc, scale = networks.encoder.loc_and_scale(inputs)  # (C, B, Z)
    pyro.set_rng_seed(seed)
    q_z = torch.distributions.Normal(loc, scale)
    z = q_z.rsample()
    log_q_z = q_z.log_prob(z).sum(-1)
    log_p_z = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    logits = networks.decoder(torch.cat([z, inputs[..., x.shape[1] :]], -1))
    log_p_x = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)
    term = log_p_x + log_p_z - log_q_z + math.log(1 / num_classes)  # (C, B): L(x_b, y) for one z each
    log_q_y = networks.classifier(x).log_softmax(-1)  # (B, C)
    unlabelled = (log_q_y.exp().T * (term - log_q_y.T)).sum(0)
    index = labels.clamp(min=0)
    labelled = term.gather(0, index.unsqueeze(0)).squeeze(0) + alpha * log_q_y.gather(1, index.unsqueeze(1)).squeeze(1)
    return -torch.where(labels >= 0, labelled, unlabelled).sum()


@pytest.mark.parametrize(
    "labels", [[-1, -1, -1, -1, -1], [2, 0, 1, 1, 0], [-1, 2, -1, 0, -1]], ids=["unlabelled", "labelled", "mixed"]
)
def test_labelled_and_unlabelled_terms_match_a_hand_written_loss(labels):
    alpha = 7.5
    networks, x, model, guide = tiny_networks(alpha)
    labels = torch.tensor(labels)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    for seed in (0, 1):
        pyro.set_rng_seed(seed)
        loss = elbo.differentiable_loss(model, guide, x, labels)
        assert loss.item() == pytest.approx(by_hand(networks, x, labels, alpha, seed).item(), rel=1e-10)


def test_the_classification_term_trains_the_classifier_on_labelled_examples_only():
    """With every example labelled, the classifier's gradient is alpha x that of the cross-entropy."""
    alpha = 3.0
    networks, x, model, guide = tiny_networks(alpha)
    labels = torch.tensor([2, 0, 1, 1, 0])
    TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, x, labels).backward()
    got = networks.classifier[-1].bias.grad.clone()
    networks.zero_grad()
    (alpha * torch.nn.functional.cross_entropy(networks.classifier(x), labels, reduction="sum")).backward()
    assert torch.allclose(got, networks.classifier[-1].bias.grad, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- labelled subset, clustering, config


def test_labelled_subset_is_balanced_and_follows_the_seed(digits):
    index = labelled_subset(digits.y_train, 53, 10, seed=4)
    counts = torch.bincount(digits.y_train[index], minlength=10)
    assert len(index) == 53 and index.unique().numel() == 53
    assert sorted(counts.tolist()) == [5] * 7 + [6] * 3
    assert torch.equal(index, labelled_subset(digits.y_train, 53, 10, seed=4))
    assert not torch.equal(index, labelled_subset(digits.y_train, 53, 10, seed=5))
    with pytest.raises(InputError, match="--labelled 5: a balanced subset needs at least one label of each of 10"):
        labelled_subset(digits.y_train, 5, 10, seed=0)


def test_partial_labels_keep_the_chosen_labels_and_mark_the_rest(digits):
    model = ModelConfig(x_dim=64, image_shape=(1, 8, 8), num_classes=10, family="m2")
    labels = partial_labels(RunConfig(model=model, train=TrainConfig(labelled=20)), digits)
    kept = labels >= 0
    assert kept.sum().item() == 20 and torch.equal(labels[kept], digits.y_train[kept])
    assert set(labels[~kept].tolist()) == {-1}


def test_clustering_accuracy_is_invariant_to_renaming_clusters():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    assert clustering_accuracy(torch.tensor([2, 2, 0, 0, 1, 1, 0]), labels, 3) == pytest.approx(6 / 7)
    assert clustering_accuracy(torch.tensor([1, 1, 1, 1, 1, 1, 1]), labels, 3) == pytest.approx(3 / 7)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"family": "m3"}, "--family must be one of vae, m2, joint, got 'm3'"),
        ({"family": "m2", "num_classes": 1}, "--family m2 needs at least 2 classes"),
        ({"family": "joint", "num_classes": 3, "guide": "iaf"}, "--family joint takes --guide diagonal, got --guide "),
    ],
)
def test_model_config_refuses_bad_families(change, message):
    with pytest.raises(InputError, match=message):
        ModelConfig(x_dim=64, image_shape=(1, 8, 8), **change)


def test_labelled_and_alpha_belong_to_m2():
    model = ModelConfig(x_dim=64, image_shape=(1, 8, 8))
    with pytest.raises(InputError, match="--labelled 10 is an option of --family m2, not of vae"):
        RunConfig(model=model, train=TrainConfig(labelled=10))
    with pytest.raises(InputError, match="--alpha must be a number >= 0"):
        TrainConfig(alpha=-1.0)


def test_old_config_json_loads_with_the_vae_family():
    config = RunConfig(model=ModelConfig(x_dim=64, image_shape=(1, 8, 8)))
    raw = json.loads(config.to_json())
    del raw["model"]["family"], raw["train"]["labelled"], raw["train"]["alpha"]
    assert RunConfig.from_json(json.dumps(raw)) == config


# ---------------------------------------------------------------- end to end


@pytest.fixture
def short_baseline(monkeypatch):
    """The supervised baseline's budget cut to 50 steps: these tests check the plumbing, not the baseline."""
    monkeypatch.setattr(semisupervised, "BASELINE_STEPS", 50)


def test_cli_trains_m2_and_writes_its_metrics_and_figures(tmp_path, capsys, short_baseline):
    """``python -m ppl_vae train --family m2 --labelled 50 --epochs 1`` (small nets, small k), then the run folder
    loads and ``ppl-vae evaluate`` reports on it."""

    out = tmp_path / "m2"
    argv = [
        "train",
        "--family",
        "m2",
        "--labelled",
        "50",
        "--epochs",
        "1",
        "--z-dim",
        "4",
        "--hidden",
        "32",
        "--batch-size",
        "256",
    ]
    assert main([*argv, "--k", "20", "--eval-particles", "5", "--no-progress", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "baseline_accuracy", "bayes_accuracy"):
        assert 0 <= metrics[key] <= 1
    for key in ("test_elbo", "test_log_likelihood", "test_log_likelihood_exact_y", "test_log_likelihood_exact_y_se"):
        assert math.isfinite(metrics[key])
    assert metrics["labelled"] == 50
    for figure in ("class_samples.png", "analogies.png", "samples.png", "reconstructions.png"):
        assert (out / figure).stat().st_size > 0
    config = json.loads((out / "config.json").read_text())
    assert (config["model"]["family"], config["train"]["labelled"], config["train"]["elbo"]) == ("m2", 50, "enum")
    assert load(out).modules.config.family == "m2"
    evaluate = ["evaluate", str(out), "--k", "100", "--eval-particles", "5", "--gap-examples", "0", "--draws", "100"]
    assert main(evaluate) == 0
    printed = capsys.readouterr().out
    assert "test log p(x), summed over y" in printed and "baseline accuracy" in printed and "report:" in printed


def test_cli_trains_the_joint_family_without_labels(tmp_path):
    out = tmp_path / "joint"
    argv = ["train", "--family", "joint", "--classes", "4", "--epochs", "1", "--z-dim", "2", "--hidden", "16"]
    assert (
        main([*argv, "--batch-size", "256", "--k", "10", "--eval-particles", "2", "--no-progress", "--out", str(out)])
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labelled"] == 0 and 0 < metrics["clustering_accuracy"] <= 1
    assert 1 <= metrics["clusters_used"] <= 4 and "baseline_accuracy" not in metrics
    assert (out / "class_samples.png").stat().st_size > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--labelled", "5"], "--labelled 5 is an option of --family m2, not of vae"),
        (["--family", "m2", "--labelled", "3"], "--labelled 3: a balanced subset needs at least one label of each"),
        (["--family", "m2", "--classes", "3"], "--classes 3: --family m2 takes the data's classes"),
        (["--family", "joint", "--conditional"], "--conditional and --family joint"),
        (["--family", "m2", "--guide", "iaf"], "--family m2 takes --guide diagonal, got --guide iaf"),
    ],
)
def test_bad_family_flags_are_one_line(tmp_path, capsys, argv, message):
    assert main(["train", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "run"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_compare_discrete_measures_each_estimator(tmp_path, capsys):
    """Enumeration leaves the classifier's gradient with far less variance than the score-function estimator, and
    the decaying-average baseline removes much of the latter's."""
    argv = ["compare-kl", "--family", "m2", "--labelled", "20", "--repetitions", "8", "--epochs", "0"]
    assert main([*argv, "--hidden", "16", "--z-dim", "2", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "compare_discrete.json").read_text())
    rows = {row["name"]: row for row in result["estimators"]}
    assert set(rows) == {"enum", "tracegraph", "tracegraph-baseline"}
    assert rows["enum"]["grad_var_classifier"] < rows["tracegraph-baseline"]["grad_var_classifier"]
    assert rows["tracegraph-baseline"]["grad_var_classifier"] < rows["tracegraph"]["grad_var_classifier"]
    assert "| enum |" in capsys.readouterr().out


def test_with_a_validation_split_every_label_stays_in_training(digits):
    """--val-fraction holds examples out of training after the labels are chosen: the labelled subset is drawn among
    the examples that stay, so --labelled 30 trains on 30 labels and no validation example carries one (its ELBO stays
    a bound on log p(x)); without a split the subset is the one drawn before."""
    model = ModelConfig(x_dim=64, image_shape=(1, 8, 8), num_classes=10, family="m2")
    labels = partial_labels(RunConfig(model=model, train=TrainConfig(labelled=30, val_fraction=0.5, seed=3)), digits)
    validation, rest = split_indices(digits.x_train.shape[0], 0.5, 3)
    assert (labels[validation] == -1).all()
    assert (labels[rest] >= 0).sum().item() == 30
    assert torch.bincount(labels[labels >= 0], minlength=10).tolist() == [3] * 10
    unsplit = partial_labels(RunConfig(model=model, train=TrainConfig(labelled=30, seed=3)), digits)
    assert torch.equal(torch.nonzero(unsplit >= 0).flatten(), labelled_subset(digits.y_train, 30, 10, seed=3))
