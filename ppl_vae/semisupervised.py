"""Discrete latents, enumerated: the semi-supervised M2 VAE (Kingma, Rezende, Mohamed and Welling 2014) and the joint
discrete-continuous VAE for unlabelled data (``--family m2``, ``--family joint``). Both are one program over a class
``y`` in ``0..C-1`` and a code ``z``; the joint family is M2 with no labelled example.

Model and guide, for a minibatch ``x`` ``(B, D)`` and labels ``y`` ``(B,)`` (``-1``: unlabelled)::

    model:  y ~ p(y) = Cat(1/C)           z ~ p(z) = N(0, I)           x ~ p(x | y, z) = lik(decoder([z | onehot(y)]))
            + labelled examples only, in training: alpha * log q(y | x) (site "y_label", scale alpha)
    guide:  y ~ q(y | x) = Cat(softmax(classifier(x)))  where unlabelled,  the point mass at the label where labelled
            z ~ q(z | x, y) = N(loc, scale)(encoder([x | onehot(y)]))

One set of networks: the classifier q(y | x), the encoder q(z | x, y), the decoder p(x | y, z).

**One data plate and a mask, not two plates.** ``y`` is one sample site ``"y"`` inside the one data plate
``"data"``. Where an example is labelled its guide distribution is the point mass at its label and its ``log q`` is
masked out (``Distribution.mask``: a masked term contributes nothing; Pyro keeps the point mass as the weight of each
enumerated value, so the values other than the label get weight 0); where it is not, it is the classifier's
``q(y | x)``. Under ``TraceEnum_ELBO`` the site is enumerated in parallel, and per example the objective is exactly::

    labelled   (x, l):  L(x, l) + alpha log q(l | x),
                        L(x, l) = E_q(z|x,l)[log p(x | l, z) + log p(l) + log p(z) - log q(z | x, l)]
    unlabelled (x):     U(x)    = sum_y q(y | x) L(x, y)  +  H(q(y | x))

(Kingma et al.'s J + alpha E[-log q]; ``tests/test_semisupervised.py`` checks both terms against hand-written sums.)
Why not two plates (one over the labelled, one over the unlabelled examples)? Every per-example quantity of the
workbench (evaluation, diagnostics, the KL lab) needs one plate over all the examples of ``x``
(:mod:`ppl_vae.programs`); and why not Pyro's ``obs_mask``? It splits the site into ``y_observed`` and
``y_unobserved``, so the latent would have another name in training than in evaluation. The mask keeps one site ``"y"``
everywhere, at the price of the decoder running on all ``C`` values for the labelled examples too (parallel
enumeration evaluates ``C x B`` anyway). So labelled and unlabelled examples **share minibatches**, as the shuffle
deals them (with ``N`` labels out of ``N_train`` a minibatch of ``B`` holds ``B N / N_train`` labelled examples on
average: 2.1 of 64 for 50 labels on the digits); they do not alternate.

The classification term is a model site ``"y_label"`` (observed, scaled by ``alpha``, masked to the labelled
examples), as in Pyro's own semi-supervised example; it exists only in training (``alpha > 0`` and labels given), so
evaluation estimates the true ``log p(x)``. Without labels (evaluation, the joint family) every ``y`` is latent.

**Objectives.** ``--elbo enum`` (the default of these families) marks ``"y"`` for parallel enumeration and sums it out
exactly; ``--elbo tracegraph`` samples it and uses the score-function gradient; ``--elbo tracegraph-baseline`` adds a
decaying-average baseline (:mod:`ppl_vae.objectives`). :func:`compare_discrete` measures the three side by side.

**Evaluation** (:func:`evaluate_discrete`): ``test_accuracy``, the argmax of q(y | x) against the test labels;
``bayes_accuracy``, the argmax of p(y | x) estimated by importance sampling (``p(y | x) ~ p̂(x, y) / sum_c p̂(x, c)``);
``test_log_likelihood_exact_y``, ``log p(x) = log sum_y p(y) p̂(x | y)`` with ``p̂(x, y)`` the IWAE estimate under
q(z | x, y), summed exactly over ``y``, beside the generic ``test_log_likelihood`` that samples ``y ~ q(y | x)`` inside
IWAE (both converge to ``log p(x)``); ``baseline_accuracy``, the same classifier network trained on the ``N``
labelled examples alone (:func:`train_baseline`). For the joint family, ``clustering_accuracy``: the best one-to-one
map of clusters to labels (``scipy.optimize.linear_sum_assignment``). Nats per example; higher is better.

Example::

    model = model_config_for(data, family="m2", num_classes=data.num_classes)
    config = RunConfig(model=model, train=TrainConfig(elbo="enum", labelled=100))
    program = discrete_program(model)
    trainer, view = training_view(program, data, config)      # the partial labels, alpha, enumeration
    fit(trainer, view, config.train)
    metrics = evaluate_discrete(program, data, config)        # test_accuracy, baseline_accuracy, ...
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

from ppl_vae.config import ModelConfig, RunConfig, TrainConfig
from ppl_vae.data import Dataset, binarize, split_indices
from ppl_vae.errors import InputError
from ppl_vae.eval_shards import check_seed
from ppl_vae.evaluate import Estimate, iwae_log_likelihood, observed_test_set
from ppl_vae.guides import DiagonalNormalGuide
from ppl_vae.likelihoods import LIKELIHOODS
from ppl_vae.nets import MLP
from ppl_vae.programs import UserProgram
from ppl_vae.sharding import derived_seed

UNLABELLED = -1
"""The label of an example whose class is not observed (the programs' ``y`` argument)."""

ALPHA_PER_EXAMPLE = 0.1
"""The default ``alpha`` is this times the number of training examples (Kingma et al. 2014; Pyro's example)."""

BASELINE_STEPS = 1000
BASELINE_BATCH = 64
BASELINE_LR = 1e-3
"""The supervised-only baseline's fixed budget: Adam at ``BASELINE_LR`` for ``BASELINE_STEPS`` steps on minibatches
of ``min(BASELINE_BATCH, N)`` labelled examples (binarized afresh for a binary likelihood, as M2 sees them), whatever
``N``. Chosen before any test accuracy was seen, and never tuned on the test set: with 1000 steps the training
cross-entropy of the digits' labelled examples is near zero for every ``N`` of the benchmark."""

_instance_ids = itertools.count()


class SemiSupervisedVAE(nn.Module):
    """The networks and the two Pyro programs of the M2 / joint family (see the module's docstring).

    Submodules: ``classifier`` (``x (.., D) -> logits (.., C)``, q(y | x)), ``encoder`` (a
    :class:`~ppl_vae.guides.DiagonalNormalGuide` on ``[x | onehot(y)]``, q(z | x, y)), ``decoder`` (``[z | onehot(y)]
    -> likelihood parameters``) and ``likelihood``; all MLPs of ``config.hidden`` widths. Parameters are registered in
    Pyro's store under ``pyro_name`` (one per instance, as the built-in VAE).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.family not in ("m2", "joint"):
            raise InputError(f"SemiSupervisedVAE builds --family m2 or joint, got --family {config.family}")
        self.config = config
        self.num_classes = config.num_classes
        self.pyro_name = f"{config.family}{next(_instance_ids)}"
        self.likelihood = LIKELIHOODS.get(config.likelihood)(config)
        self.classifier = MLP(config.x_dim, config.hidden, config.num_classes)
        width = config.x_dim + config.num_classes
        self.encoder = DiagonalNormalGuide(
            dataclasses.replace(config, x_dim=width, image_shape=(1, 1, width), num_classes=0, family="vae")
        )
        self.decoder = MLP(
            config.z_dim + config.num_classes,
            tuple(reversed(config.hidden)),
            self.likelihood.outputs_per_pixel * config.x_dim,
        )

    # --- the two Pyro programs -------------------------------------------------------------------------------
    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, *, alpha: float = 0.0) -> None:
        """p(y) p(z) p(x | y, z) for ``x`` ``(B, D)``; with labels ``y`` ``(B,)`` (``-1``: unlabelled) and
        ``alpha > 0`` also the classification term ``alpha * log q(y | x)`` of the labelled examples (site
        ``"y_label"``)."""
        pyro.module(self.pyro_name, self)
        labelled = self.labelled(x, y)
        with pyro.plate("data", x.shape[0]):
            y_value = pyro.sample("y", dist.Categorical(logits=x.new_zeros(self.num_classes)))
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.config.z_dim), 1.0).to_event(1))
            pyro.sample("x", self.decode(z, y_value), obs=x)
            if alpha and y is not None:
                with poutine.scale(scale=alpha), poutine.mask(mask=labelled):
                    pyro.sample("y_label", dist.Categorical(logits=self.classifier(x)), obs=y.clamp(min=0))

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, *, infer: dict | None = None) -> None:
        """q(y | x) q(z | x, y) for ``x`` ``(B, D)``; where ``y`` ``(B,)`` holds a label (not ``-1``) the site
        ``"y"`` is the point mass at it, its ``log q`` masked out. ``infer``: the site's ``infer`` dict (e.g.
        ``{"enumerate": "parallel"}``)."""
        pyro.module(self.pyro_name, self)
        labelled = self.labelled(x, y)
        with pyro.plate("data", x.shape[0]):
            q_y = dist.Categorical(logits=self.class_logits(x, y))
            if y is not None:
                q_y = q_y.mask(~labelled)
            y_value = pyro.sample("y", q_y, infer=dict(infer or {}))
            pyro.sample("z", self.encoder.dist(self._with_class(x, y_value)))

    # --- the same parts as plain functions -------------------------------------------------------------------
    def labelled(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """``(B,)`` bool: which examples carry a label (``y`` in ``0..C-1``; ``-1`` is unlabelled)."""
        if y is None:
            return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        if y.shape != x.shape[:1] or y.is_floating_point():
            raise InputError(f"labels y must be ({x.shape[0]},) integers, got {tuple(y.shape)} {y.dtype}")
        if bool(((y < UNLABELLED) | (y >= self.num_classes)).any()):
            raise InputError(f"labels y must be -1 (unlabelled) or 0..{self.num_classes - 1}, got {y.unique()}")
        return y >= 0

    def class_logits(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C)`` logits of the guide's ``y``: the classifier's where unlabelled, ``0`` at the label and
        ``-inf`` elsewhere where labelled."""
        logits = self.classifier(x)
        if y is None:
            return logits
        point_mass = torch.full_like(logits, -math.inf).scatter(-1, y.clamp(min=0).unsqueeze(-1), 0.0)
        return torch.where(self.labelled(x, y).unsqueeze(-1), point_mass, logits)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> dist.TorchDistribution:
        """p(x | y, z) for codes ``z`` ``(..., z_dim)`` and classes ``y`` broadcastable to ``z.shape[:-1]``."""
        return self.likelihood.dist(self.decoder(self._with_class(z, y)))

    def _with_class(self, inputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``[inputs | onehot(y)]``, broadcast over the leading dimensions of both (enumerated ``y`` is ``(C, 1)``)."""
        one_hot = F.one_hot(y, self.num_classes).to(inputs.dtype)
        shape = torch.broadcast_shapes(inputs.shape[:-1], y.shape)
        return torch.cat([inputs.expand(*shape, inputs.shape[-1]), one_hot.expand(*shape, self.num_classes)], -1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,)`` the argmax of q(y | x)."""
        return self.classifier(x).argmax(-1)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, z_dim)`` the mean of q(z | x, y), at ``y`` = the argmax of q(y | x) unless given."""
        y = self.predict(x) if y is None else y
        return self.encoder.loc_and_scale(self._with_class(x, y))[0]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` pixel means of p(x | y, z) at the argmax ``y`` of q(y | x) and the mean of q(z | x, y)."""
        y = self.predict(x)
        return self.decode(self.encode(x, y), y).mean

    @torch.no_grad()
    def sample(self, num_samples: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """``(n, D)`` pixel means of p(x | y, z), ``z ~ p(z)``, ``y ~ p(y)`` unless given (``(n,)`` classes)."""
        device = next(self.parameters()).device
        if y is None:
            y = torch.randint(self.num_classes, (num_samples,), device=device)
        z = torch.randn(num_samples, self.config.z_dim, device=device)
        return self.decode(z, y).mean


def discrete_program(config: ModelConfig) -> UserProgram:
    """The M2 / joint family of ``config`` as the :class:`~ppl_vae.programs.UserProgram` that the workbench stores,
    loads and evaluates: the programs without labels (every ``y`` latent, no classification term), so that the
    generic ELBO and IWAE are of ``log p(x)`` with ``y ~ q(y | x)``; ``modules`` is the :class:`SemiSupervisedVAE`."""
    networks = SemiSupervisedVAE(config)
    return UserProgram(
        networks.model,
        networks.guide,
        networks,
        binary=networks.likelihood.binary,
        labels=False,
        encode=networks.encode,
        reconstruct=networks.reconstruct,
        sample=networks.sample,
        pyro_name=networks.pyro_name,
    )


def networks_of(program: UserProgram) -> SemiSupervisedVAE:
    """The :class:`SemiSupervisedVAE` behind a program of :func:`discrete_program`."""
    if not isinstance(program.modules, SemiSupervisedVAE):
        raise InputError(f"expected a --family m2 or joint program, got modules {type(program.modules).__name__}")
    return program.modules


# --- the labelled subset and the training view ---------------------------------------------------------------------
def labelled_subset(y: torch.Tensor, count: int, num_classes: int, seed: int) -> torch.Tensor:
    """``count`` indices into ``y`` ``(N,)``, balanced over the classes: ``count // C`` of each class, and one more of
    ``count % C`` classes chosen from ``seed``; within a class, chosen from ``seed`` too. Sorted. Every index when
    ``count`` is ``N`` (the classes of a whole data set need not be balanced)."""
    if count == y.shape[0]:
        return torch.arange(count)
    if count > y.shape[0]:
        raise InputError(f"--labelled {count}: the training set has only {y.shape[0]} examples")
    if count < num_classes:
        raise InputError(f"--labelled {count}: a balanced subset needs at least one label of each of {num_classes}")
    generator = torch.Generator().manual_seed(seed)
    extra = set(torch.randperm(num_classes, generator=generator)[: count % num_classes].tolist())
    chosen = []
    for c in range(num_classes):
        members = torch.nonzero(y.cpu() == c).flatten()
        quota = count // num_classes + (c in extra)
        if members.numel() < quota:
            raise InputError(f"--labelled {count}: class {c} has {members.numel()} examples, {quota} needed")
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:quota]])
    return torch.cat(chosen).sort().values


def labelled_indices(config: RunConfig, data: Dataset) -> torch.Tensor:
    """Indices into ``data.x_train`` of the examples that keep their label: ``config.train.labelled`` of them
    (``None``: all) for ``m2``, none for ``joint``, as a balanced :func:`labelled_subset` of the examples that
    training keeps. With ``--val-fraction`` those are the ones outside the validation split
    (:func:`ppl_vae.data.split_indices`), so that no label is held out and the validation ELBO stays a bound on
    ``log p(x)``; without it, every training example."""
    train = config.train
    rows = split_indices(data.x_train.shape[0], train.val_fraction, train.seed)[1]
    if config.model.family == "joint":
        return rows[:0]
    if data.y_train is None:
        raise InputError(f"--family m2 needs labels, and data set {data.name!r} has none")
    count = rows.numel() if train.labelled is None else train.labelled
    return rows[labelled_subset(data.y_train[rows], count, config.model.num_classes, train.seed)]


def partial_labels(config: RunConfig, data: Dataset) -> torch.Tensor:
    """``(N_train,)`` the training labels with all but the :func:`labelled_indices` replaced by ``-1``."""
    labels = torch.full_like(data.x_train[:, 0], UNLABELLED, dtype=torch.long)
    index = labelled_indices(config, data)
    if index.numel():
        labels[index] = data.y_train[index]
    return labels


def alpha_of(train: TrainConfig, num_train: int) -> float:
    """The classification term's weight: ``train.alpha``, or ``ALPHA_PER_EXAMPLE x num_train``."""
    return ALPHA_PER_EXAMPLE * num_train if train.alpha is None else float(train.alpha)


def guide_infer(elbo: str) -> dict:
    """The ``infer`` dict of the guide's ``"y"`` for the objective ``elbo``: parallel enumeration for ``enum``."""
    return {"enumerate": "parallel"} if elbo == "enum" else {}


def training_view(program: UserProgram, data: Dataset, config: RunConfig) -> tuple[UserProgram, Dataset]:
    """What :func:`ppl_vae.train.fit` trains: the same networks with the partial labels as the programs' argument
    (``labels=True``), the classification term's ``alpha`` and the guide's ``infer`` for ``config.train.elbo``; and
    ``data`` with ``y_train`` the :func:`partial_labels` and ``y_test`` all ``-1``, so that the per-epoch test ELBO is
    the bound on ``log p(x)``."""
    networks = networks_of(program)
    labels = partial_labels(config, data)
    alpha = alpha_of(config.train, data.x_train.shape[0]) if config.model.family == "m2" else 0.0
    trainer = dataclasses.replace(
        program,
        model=functools.partial(networks.model, alpha=alpha),
        guide=functools.partial(networks.guide, infer=guide_infer(config.train.elbo)),
        labels=True,
    )
    view = dataclasses.replace(
        data, y_train=labels, y_test=torch.full_like(data.x_test[:, 0], UNLABELLED, dtype=torch.long)
    )
    return trainer, view


# --- evaluation ----------------------------------------------------------------------------------------------------
def class_log_joint(program: UserProgram, x: torch.Tensor, k: int, *, keyed_seed: int | None = None) -> torch.Tensor:
    """``(N, C)``: the IWAE estimate of ``log p(x, y = c) = log p(c) + log p(x | c)`` with ``k`` draws of
    q(z | x, c) per example and class (:func:`ppl_vae.evaluate.iwae_log_likelihood` with ``y`` held at ``c``).
    ``keyed_seed``: keyed and sharded evaluation (:mod:`ppl_vae.eval_shards`), class ``c`` keyed with
    ``derived_seed(keyed_seed, c)``; in an initialized ``torch.distributed`` group every column is sharded either
    way."""
    networks = networks_of(program)
    columns = []
    for c in range(networks.num_classes):
        held = torch.full((x.shape[0],), c, dtype=torch.long, device=x.device)
        key = None if keyed_seed is None else derived_seed(check_seed(keyed_seed), c)
        estimate = iwae_log_likelihood(program.model, program.guide, x, k=k, args=(held,), keyed_seed=key)
        columns.append(estimate.per_example)
    return torch.stack(columns, dim=-1)


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of ``predicted`` equal to ``labels``."""
    return (predicted.cpu() == labels.cpu()).double().mean().item()


def clustering_accuracy(clusters: torch.Tensor, labels: torch.Tensor, num_clusters: int) -> float:
    """Accuracy under the best one-to-one map of clusters to labels (``scipy.optimize.linear_sum_assignment`` on the
    ``C x L`` table of counts); clusters left without a label count as wrong."""
    from scipy.optimize import linear_sum_assignment

    num_labels = int(labels.max()) + 1
    counts = torch.zeros(num_clusters, num_labels, dtype=torch.long)
    counts.index_put_((clusters.cpu(), labels.cpu()), torch.ones_like(clusters.cpu()), accumulate=True)
    rows, columns = linear_sum_assignment(counts.numpy(), maximize=True)
    return counts[rows, columns].sum().item() / clusters.numel()


def train_baseline(config: ModelConfig, x: torch.Tensor, y: torch.Tensor, binary: bool, seed: int) -> nn.Module:
    """The supervised-only baseline: a fresh classifier of M2's architecture (``MLP(D, hidden, C)``, seeded with
    ``seed``) trained by cross-entropy on the labelled examples ``x`` ``(N, D)``, ``y`` ``(N,)`` alone, for the fixed
    budget of :data:`BASELINE_STEPS` (see there); returned in eval mode."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classifier = MLP(config.x_dim, config.hidden, config.num_classes).to(x.device)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=BASELINE_LR)
    batch = min(BASELINE_BATCH, x.shape[0])
    for _ in range(BASELINE_STEPS):
        index = torch.randint(x.shape[0], (batch,), generator=generator, device=x.device)
        inputs = binarize(x[index], generator) if binary else x[index]
        loss = F.cross_entropy(classifier(inputs), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return classifier.eval()


def evaluate_discrete(program: UserProgram, data: Dataset, config: RunConfig, *, keyed_seed: int | None = None) -> dict:
    """The family's metrics (nats per example; accuracies as fractions in [0, 1]), see the module's docstring:
    ``labelled``, ``alpha``, ``test_log_likelihood_exact_y`` and ``_se`` (``k = config.evaluation.k`` draws per class),
    and with test labels ``test_accuracy``, ``bayes_accuracy``, ``baseline_accuracy`` (m2) or
    ``clustering_accuracy`` and ``clusters_used`` (joint). The RNG is seeded from ``config.train.seed``.

    ``keyed_seed``: the per-class IWAE estimates keyed (and sharded in a ``torch.distributed`` group, where they are
    keyed either way), see :func:`class_log_joint`: the same metrics for any number of processes. The rest does not
    depend on the process count and is computed whole on every rank: the accuracies read the argmax of q(y | x)
    (no draws, one pass of the classifier), and the baseline classifier is trained from ``config.train.seed``."""
    networks = networks_of(program)
    x_test = observed_test_set(data.x_test, program.binary).to(program.device)
    index = labelled_indices(config, data)
    pyro.set_rng_seed(config.train.seed)
    with torch.no_grad():
        log_joint = class_log_joint(program, x_test, config.evaluation.k, keyed_seed=keyed_seed)
        exact = Estimate.from_values(torch.logsumexp(log_joint, dim=-1))
        predicted = networks.predict(x_test)
    metrics = {
        "family": config.model.family,
        "labelled": index.numel(),
        "test_log_likelihood_exact_y": exact.mean,
        "test_log_likelihood_exact_y_se": exact.se,
        "clusters_used": int(predicted.unique().numel()),
    }
    if config.model.family == "m2":
        metrics["alpha"] = alpha_of(config.train, data.x_train.shape[0])
    if data.y_test is None:
        return metrics
    if config.model.family == "joint":
        metrics["clustering_accuracy"] = clustering_accuracy(predicted, data.y_test, networks.num_classes)
        return metrics
    metrics["test_accuracy"] = accuracy(predicted, data.y_test)
    metrics["bayes_accuracy"] = accuracy(log_joint.argmax(-1), data.y_test)
    x_train = data.x_train.to(program.device)
    baseline = train_baseline(
        config.model, x_train[index], data.y_train.to(program.device)[index], program.binary, config.train.seed
    )
    with torch.no_grad():
        metrics["baseline_accuracy"] = accuracy(baseline(x_test).argmax(-1), data.y_test)
    return metrics


def draw_discrete_figures(program: UserProgram, data: Dataset, run_dir: Path, per_class: int = 8) -> list[Path]:
    """``class_samples.png`` (one row per class ``c``: pixel means of p(x | c, z), ``z ~ p(z)``; "clusters" for the
    joint family) and ``analogies.png`` (Kingma et al.'s figure: each row one test image's code, the mean of
    q(z | x, argmax q(y | x)), decoded with every class)."""
    from ppl_vae import plots

    networks = networks_of(program)
    family = networks.config.family
    shape = data.image_shape
    classes = torch.arange(networks.num_classes, device=program.device).repeat_interleave(per_class)
    what = "cluster" if family == "joint" else "class"
    with torch.no_grad():
        images = networks.sample(len(classes), classes)
        x = observed_test_set(data.x_test[:per_class], program.binary).to(program.device)
        z = networks.encode(x)
        every = torch.arange(networks.num_classes, device=program.device)
        analogies = networks.decode(z.unsqueeze(1), every).mean  # (rows, C, D)
    rows = torch.cat([x.unsqueeze(1), analogies], dim=1)
    return [
        plots.plot_class_samples(
            images, classes, shape, run_dir / "class_samples.png", f"p(x | y, z), z ~ p(z), one row per {what} y"
        ),
        plots.plot_image_rows(
            rows,
            shape,
            run_dir / "analogies.png",
            f"Analogies: each row one test image's z = E q(z | x, y^), decoded with every {what} y",
            [f"test {i}" for i in range(len(x))],
            ["image"] + [str(c) for c in range(networks.num_classes)],
            f"{what} y",
        ),
    ]
