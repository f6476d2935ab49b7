"""The KL lab for a discrete latent (``ppl-vae compare-kl --family m2``): the class ``y`` of the M2 / joint family
summed out exactly (``enum``) or sampled with the score-function estimator (``tracegraph``, and
``tracegraph-baseline`` with Pyro's decaying-average baseline), measured side by side.

All three estimate the same objective (:mod:`ppl_vae.semisupervised`; ``tests/test_semisupervised.py`` checks that
they agree in expectation); they differ in the variance of their gradients, above all the classifier's, which the
score-function estimators reach only through ``d log q(y | x)`` times a noisy cost. :func:`compare_discrete`:

- at the initial parameters, on one fixed minibatch of ``B`` training examples with their partial labels (the labelled
  ones among the first ``B`` of a seeded shuffle), ``R`` evaluations of each estimator's loss and gradient
  (``loss_and_grads`` of its Pyro ELBO, the surrogate that ``SVI`` differentiates): the training objective per example
  (the ELBO plus the classification term ``alpha log q(y | x)`` of the labelled examples) with its
  standard error and the gradient variance per network (``classifier``, ``encoder``, ``decoder``: ``sum_i Var[d
  loss / d theta_i]`` of the per-example loss ``-ELBO / B``, as :func:`ppl_vae.lab.measure.measure_estimator`).
  The decaying-average baseline is first warmed up by ``BASELINE_WARMUP`` evaluations (not counted), so that it
  measures the baseline, not its start at 0;
- then each estimator trains ``E`` epochs from the same initial weights (same seed) and its test accuracy (argmax of
  q(y | x)) and test ELBO are recorded.
"""

from __future__ import annotations

import math
import statistics

import pyro
import torch

from ppl_vae.config import RunConfig
from ppl_vae.data import Dataset, binarize
from ppl_vae.evaluate import elbo, observed_test_set
from ppl_vae.lab.measure import _flat_gradient, _GradientVariance
from ppl_vae.objectives import make_step
from ppl_vae.programs import UserProgram
from ppl_vae.semisupervised import accuracy, networks_of, training_view
from ppl_vae.tables import table
from ppl_vae.train import fit, seed_everything

DISCRETE_ESTIMATORS = ("enum", "tracegraph", "tracegraph-baseline")
"""The objectives compared for a discrete latent."""

BASELINE_WARMUP = 20
"""Loss-and-gradient evaluations before the measured ones (the decaying average's memory is ~10 steps)."""


def measure_discrete(trainer: UserProgram, config: RunConfig, x: torch.Tensor, labels: torch.Tensor, repetitions: int):
    """``R`` gradient evaluations of ``config.train.elbo`` on the fixed minibatch ``(x, labels)`` at the current
    parameters (left unchanged): ``elbo_mean``, ``elbo_se`` (nats per example) and ``grad_var_<network>``."""
    networks = networks_of(trainer)
    step = make_step(trainer, config.train)
    step.prepare(x, labels)
    groups = {name: list(module.parameters()) for name, module in networks.named_children()}
    groups = {name: parameters for name, parameters in groups.items() if parameters}
    variances = {name: _GradientVariance() for name in groups}
    values = []
    seed_everything(config.train.seed)
    warmup = BASELINE_WARMUP if config.train.elbo == "tracegraph-baseline" else 0
    for repetition in range(warmup + repetitions):
        networks.zero_grad(set_to_none=True)
        loss = step.elbo.loss_and_grads(step.model, step.guide, x, labels) / x.shape[0]
        if repetition < warmup:
            continue
        values.append(-loss)
        for name, parameters in groups.items():
            variances[name].add(_flat_gradient(parameters) / x.shape[0])
    networks.zero_grad(set_to_none=True)
    return {
        "elbo_mean": statistics.fmean(values),
        "elbo_se": statistics.stdev(values) / math.sqrt(len(values)),
        **{f"grad_var_{name}": variance.summed() for name, variance in variances.items()},
    }


def compare_discrete(
    program: UserProgram,
    data: Dataset,
    config: RunConfig,
    estimators=DISCRETE_ESTIMATORS,
    repetitions: int = 100,
    epochs: int = 5,
) -> dict:
    """Measure ``estimators`` on the M2 / joint ``program`` (see the module's docstring); ``config`` gives the
    labelled count, alpha, batch size, learning rate and seed (its ``train.elbo`` is replaced by each estimator).

    Returns a JSON-ready dict: ``estimators`` (one row each: ``name``, ``elbo_mean``, ``elbo_se``,
    ``grad_var_classifier``, ``grad_var_encoder``, ``grad_var_decoder``, ``test_accuracy`` and ``test_elbo`` after
    ``epochs`` epochs, ``seconds``), ``settings``."""
    import dataclasses
    import time

    networks = networks_of(program)
    initial = {name: value.detach().clone() for name, value in networks.state_dict().items()}
    x_test = observed_test_set(data.x_test, program.binary)
    rows = []
    for name in estimators:
        run = dataclasses.replace(config, train=dataclasses.replace(config.train, elbo=name, epochs=max(1, epochs)))
        networks.load_state_dict(initial)
        pyro.clear_param_store()  # the decaying averages of an earlier estimator
        trainer, view = training_view(program, data, run)
        generator = torch.Generator().manual_seed(run.train.seed)
        index = torch.randperm(data.x_train.shape[0], generator=generator)[: run.train.batch_size]
        x = data.x_train[index]
        x = binarize(x, generator) if program.binary else x
        row = {"name": name, **measure_discrete(trainer, run, x, view.y_train[index], repetitions)}
        networks.load_state_dict(initial)
        pyro.clear_param_store()
        started = time.perf_counter()
        if epochs:
            fit(trainer, view, run.train, progress=False)
            with torch.no_grad():
                row["test_accuracy"] = (
                    accuracy(networks.predict(x_test), data.y_test) if data.y_test is not None else None
                )
                row["test_elbo"] = elbo(program.model, program.guide, x_test, num_particles=10).mean
        row["seconds"] = time.perf_counter() - started
        rows.append(row)
    networks.load_state_dict(initial)
    return {
        "settings": {
            "estimators": list(estimators),
            "repetitions": repetitions,
            "epochs": epochs,
            "batch_size": config.train.batch_size,
            "labelled": config.train.labelled,
            "family": config.model.family,
            "seed": config.train.seed,
        },
        "estimators": rows,
    }


def format_discrete(result: dict) -> str:
    """The comparison as a Markdown table."""
    header = ["estimator", "objective (ELBO + alpha log q(y \\| x)), nats per example", "grad var classifier"]
    header += ["grad var encoder", "grad var decoder"]
    header += ["test accuracy", "test ELBO, nats per example", "training s"]
    cells = [
        [
            row["name"],
            f"{row['elbo_mean']:.2f} ± {row['elbo_se']:.2f}",
            f"{row['grad_var_classifier']:.3g}",
            f"{row['grad_var_encoder']:.3g}",
            f"{row['grad_var_decoder']:.3g}",
            "" if row.get("test_accuracy") is None else f"{100 * row['test_accuracy']:.1f} %",
            "" if "test_elbo" not in row else f"{row['test_elbo']:.2f}",
            f"{row['seconds']:.0f}",
        ]
        for row in result["estimators"]
    ]
    return table(header, cells, style="markdown")
