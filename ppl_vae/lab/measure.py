"""The KL lab's measurements: estimators at fixed parameters, training curves from one start, what meanfield does.

Every function here takes the built-in :class:`~ppl_vae.vae.VAE` or a user's
:class:`~ppl_vae.user_program.UserProgram` (any latent sites, plates, extra arguments such as labels ``y``), called as
``model(x, *args)`` / ``guide(x, *args)``.

- :func:`measure_estimator`: ``R`` evaluations of one estimator's loss (``step.loss(x, *args)``) on one fixed
  minibatch at the current parameters: the ELBO (nats per example) with its standard error, the gradient variance per
  parameter group (:func:`parameter_groups`) and the time of one loss-and-gradient evaluation.
- :func:`train_from`: train from given weights under one estimator, the test ELBO per epoch.
- :func:`meanfield_check`: whether ``TraceMeanField_ELBO`` is the closed-form estimator it is named after on this
  program, read from traces of the programs (:mod:`ppl_vae.programs`): Pyro uses the closed form only where
  ``KL(q || p)`` is registered with ``torch.distributions.kl`` (elsewhere it silently falls back to Monte Carlo), and
  the closed form is unbiased only where the guide site's distribution does not depend on other latent draws
  (in q(z1 | x) q(z2 | z1), ``KL(q(z1 | x) || p(z1 | z2))`` integrates z1 out while z2 was drawn from z1).
  :func:`describe_meanfield` says it in one sentence.
- :func:`agreement`: each estimator's ELBO against an unbiased baseline, in standard errors.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import torch
import torch.distributions as td
from pyro.poutine.messenger import Messenger
from torch import nn

from ppl_vae.config import MAX_EPOCHS, TrainConfig, require, require_at_most, require_samples
from ppl_vae.data import Dataset
from ppl_vae.objectives import OBJECTIVES, TrainingStep, make_step
from ppl_vae.programs import (
    UserProgram,
    as_user_program,
    importance_traces,
    inspect_programs,
    latent_parents,
    rng_preserved,
)
from ppl_vae.train import fit, seed_everything
from ppl_vae.vae import VAE

ESTIMATORS = ("trace", "meanfield", "reference-analytic", "reference-mc", "stl")
"""The estimators compared by default: Pyro's two ELBOs, the two hand-written classic losses, and STL."""


@dataclass(frozen=True)
class LabConfig:
    """Settings of :func:`ppl_vae.lab.compare_kl` and :func:`ppl_vae.lab.compare_heads`.

    Attributes:
        estimators: objective names (``ppl_vae.objectives.OBJECTIVES``) to compare.
        repetitions: ``R``, evaluations of each estimator at fixed parameters (at least 2, for a variance).
        epochs: ``E``, training epochs per estimator (0: measure at fixed parameters only; the heads study then
            trains 1).
        batch_size: ``B``, the fixed minibatch (the first ``B`` test images) and the training minibatch size.
        lr, num_particles, seed, device, eval_particles: as in :class:`~ppl_vae.config.TrainConfig`.
    """

    estimators: tuple[str, ...] = ESTIMATORS
    repetitions: int = 200
    epochs: int = 8
    batch_size: int = 64
    lr: float = 1e-3
    num_particles: int = 1
    seed: int = 0
    device: str = "cpu"
    eval_particles: int = 10

    def __post_init__(self):
        require(
            isinstance(self.estimators, (list, tuple)) and all(isinstance(name, str) for name in self.estimators),
            f"--estimators must be objective names, e.g. trace,meanfield, got {self.estimators!r}",
        )
        object.__setattr__(self, "estimators", tuple(self.estimators))
        require(len(self.estimators) >= 1, "--estimators must name at least one objective")
        require(len(set(self.estimators)) == len(self.estimators), f"--estimators repeats a name: {self.estimators}")
        for name in self.estimators:
            OBJECTIVES.get(name, "--estimators")
        require(
            isinstance(self.repetitions, int) and self.repetitions >= 2,
            f"--repetitions must be an integer >= 2 (a variance needs two draws), got {self.repetitions!r}",
        )
        require_samples(self.repetitions, "--repetitions")
        require(
            isinstance(self.epochs, int) and not isinstance(self.epochs, bool) and self.epochs >= 0,
            f"--epochs must be an integer >= 0, got {self.epochs!r}",
        )
        require_at_most(self.epochs, "--epochs", MAX_EPOCHS, "hours of training even on the digits")
        require_samples(self.eval_particles, "--eval-particles")
        self.train_config("trace")  # checks batch size, lr, particles, seed and device the way fit() will

    def train_config(self, estimator: str) -> TrainConfig:
        """The :class:`TrainConfig` that trains (or builds the step of) ``estimator``; at least one epoch."""
        return TrainConfig(
            epochs=max(1, self.epochs),
            batch_size=self.batch_size,
            lr=self.lr,
            elbo=estimator,
            num_particles=self.num_particles,
            seed=self.seed,
            device=self.device,
            eval_particles=self.eval_particles,
        )


# --- feeding one eps through Pyro ------------------------------------------------------------------------------------
class FixedNoise(Messenger):
    """Draw a Normal guide's site ``site`` as ``loc + scale * eps`` with a given ``eps`` instead of fresh noise.

    The value stays a differentiable function of ``loc`` and ``scale`` (the reparameterization), so Pyro's ELBOs
    give the same loss *and* the same gradients as a hand-written loss fed the same ``eps``.

    Arguments:
        eps: standard normal noise broadcastable to the site's value, e.g. ``(B, z_dim)``, or
            ``(num_particles, B, z_dim)`` under ``vectorize_particles=True``.
        site: the latent site's name.

    Example::

        guide = FixedNoise(eps)(vae.guide)
        loss = Trace_ELBO().differentiable_loss(vae.model, guide, x)
    """

    def __init__(self, eps: torch.Tensor, site: str = "z"):
        super().__init__()
        self.eps = eps
        self.site = site

    def _pyro_sample(self, msg) -> None:
        if msg["name"] != self.site or msg["is_observed"]:
            return
        fn = msg["fn"]
        base = fn.base_dist if isinstance(fn, td.Independent) else fn
        if not isinstance(base, td.Normal):
            raise TypeError(f"FixedNoise needs a Normal guide at site {self.site!r}, got {type(base).__name__}")
        msg["value"] = base.loc + base.scale * self.eps


# --- what meanfield does on a program --------------------------------------------------------------------------------
def has_analytic_kl(q: td.Distribution, p: td.Distribution) -> bool:
    """Whether ``KL(q || p)`` has a closed form registered with ``torch.distributions.kl`` (Pyro adds its own there).

    This is exactly the test ``TraceMeanField_ELBO`` makes at each latent site: where it is ``False`` it catches the
    ``NotImplementedError`` and uses the Monte Carlo term ``log p(z) - log q(z)`` instead, without a warning.
    """
    try:
        td.kl_divergence(q, p)
    except NotImplementedError:
        return False
    return True


@dataclass(frozen=True)
class MeanfieldCheck:
    """What ``TraceMeanField_ELBO`` does at each latent site of a program (:func:`meanfield_check`).

    Attributes:
        closed_form: latent site -> whether ``KL(q || p)`` is registered there (else Pyro's silent Monte Carlo).
        dependent: guide site -> the latent sites the guide draws before it, for every guide site whose distribution
            depends on other latent draws (``{"z2": ("z1",)}`` for q(z1 | x) q(z2 | z1)); empty for a mean-field guide.
    """

    closed_form: dict[str, bool]
    dependent: dict[str, tuple[str, ...]]

    @property
    def problem(self) -> str | None:
        """Why ``meanfield`` is not the unbiased closed-form estimator here (:func:`describe_meanfield`), or
        ``None`` where it is."""
        if self.dependent or not all(self.closed_form.values()):
            return describe_meanfield(self.closed_form, self.dependent)
        return None


def meanfield_check(model, guide, x: torch.Tensor, *args) -> MeanfieldCheck:
    """Trace ``guide(x, *args)`` and the model replayed on it (two draws per example, no gradients, the RNG left as it
    was) and read, per latent site, whether the closed-form KL is registered and whether the guide's distribution
    there depends on other latent sites (:func:`ppl_vae.programs.latent_parents`)."""
    sites = inspect_programs(model, guide, x, *args)
    with rng_preserved(x.device):
        guide_trace, model_trace, _ = importance_traces(model, guide, x, 2, *args, sites=sites)
    closed_form = {
        name: has_analytic_kl(guide_trace.nodes[name]["fn"], model_trace.nodes[name]["fn"]) for name in sites.latent
    }
    parents = latent_parents(guide, guide_trace, x, *args, sites=sites)
    dependent = {name: parents[name] for name in sites.latent if parents[name]}
    return MeanfieldCheck(closed_form, dependent)


def analytic_kl_sites(model, guide, x: torch.Tensor, *args) -> dict[str, bool]:
    """For each latent site of the programs: whether ``TraceMeanField_ELBO`` can use the closed-form KL there."""
    return meanfield_check(model, guide, x, *args).closed_form


def describe_meanfield(kl_sites: dict[str, bool], dependent: dict[str, tuple[str, ...]] | None = None) -> str:
    """One sentence: where ``TraceMeanField_ELBO`` is analytic, where it silently falls back to Monte Carlo, and
    where it is biased because a guide site depends on other latent draws (``dependent``, see
    :class:`MeanfieldCheck`)."""
    dependent = dependent or {}
    fallback = sorted(name for name, analytic in kl_sites.items() if not analytic)
    sentences = []
    if dependent:
        conditioned = "; ".join(
            f"q({name} | ...) depends on other latent sites (drawn before it: {', '.join(before)})"
            for name, before in dependent.items()
        )
        sentences.append(
            f"meanfield is biased here: {conditioned}, so the closed-form KL of an earlier site integrates out a value "
            "that a later site was drawn from; the guide is not mean-field: use trace"
        )
    if fallback:
        sentences.append(
            f"meanfield has no closed-form KL at {', '.join(fallback)} (none registered for this guide and prior): "
            "Pyro silently falls back to the Monte Carlo KL there, so 'meanfield' measures the same estimator as "
            "'trace'"
        )
    if not sentences:
        return f"meanfield uses the closed-form KL at {', '.join(sorted(kl_sites))}."
    return ". ".join(sentences) + "."


# --- measurements at fixed parameters --------------------------------------------------------------------------------
class _GradientVariance:
    """Per-coordinate variance of a vector over repeated draws, shifted by the first draw for numerical safety."""

    def __init__(self):
        self.count, self.shift, self.total, self.total_sq = 0, None, None, None

    def add(self, vector: torch.Tensor) -> None:
        vector = vector.detach().double()
        if self.shift is None:
            self.shift, self.total, self.total_sq = vector, torch.zeros_like(vector), torch.zeros_like(vector)
        delta = vector - self.shift
        self.total += delta
        self.total_sq += delta * delta
        self.count += 1

    def summed(self) -> float:
        """``sum_i var_i`` with the unbiased ``1 / (R - 1)`` normalization."""
        return ((self.total_sq - self.total**2 / self.count) / (self.count - 1)).sum().item()


def _flat_gradient(parameters: list[nn.Parameter]) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in parameters])


def parameter_groups(vae: VAE | UserProgram) -> dict[str, list[nn.Parameter]]:
    """The parameters whose gradient variance :func:`measure_estimator` reports, by group: the built-in VAE's
    ``encoder`` and ``decoder`` (and with two latent layers ``prior_z1``, p(z1 | z2), and ``guide_z2``, q(z2 | z1));
    a user's program's modules, one group per name of a dict of modules (a single module is one group, ``modules``)."""
    if isinstance(vae, VAE):
        groups = {"encoder": vae.encoder, "decoder": vae.decoder, "prior_z1": vae.prior_z1, "guide_z2": vae.guide_z2}
        return {name: list(module.parameters()) for name, module in groups.items() if module is not None}
    if isinstance(vae.modules, nn.ModuleDict):
        return {name: list(module.parameters()) for name, module in vae.modules.items()}
    return {"modules": list(vae.modules.parameters())}


def estimator_step(vae: VAE | UserProgram, estimator: str, settings: LabConfig) -> TrainingStep:
    """The training step of ``estimator`` (:func:`ppl_vae.objectives.make_step`) for the VAE or a user's program."""
    return make_step(vae, settings.train_config(estimator))


def measure_estimator(vae: VAE | UserProgram, estimator: str, x: torch.Tensor, settings: LabConfig, *args) -> dict:
    """``R`` evaluations of ``estimator`` on the minibatch ``x`` (with the programs' extra arguments ``args``, e.g. the
    labels ``y`` of those examples) at the current parameters (left unchanged) of the VAE or a user's program.

    Returns:
        ``elbo_mean``, ``elbo_se``: the minibatch ELBO estimate, nats per example, mean and standard error over R;
        ``grad_var_<group>`` for each group of :func:`parameter_groups` (``grad_var_encoder``, ``grad_var_decoder``
        for the VAE): ``sum_i Var[d loss / d theta_i]`` over R for the per-example loss ``-ELBO / B``, summed over
        that group's parameters, nats^2 per example^2 per parameter unit;
        ``ms_per_step``: median milliseconds of one loss-and-gradient evaluation (no optimizer update).

    The RNG is seeded with ``settings.seed`` first, so estimators that draw z the same way (all five defaults do) see
    the same noise: their differences are paired, not blurred by independent draws.
    """
    step = estimator_step(vae, estimator, settings)
    modules = as_user_program(vae).modules
    parts = parameter_groups(vae)
    variances = {part: _GradientVariance() for part in parts}
    elbos, milliseconds = [], []
    seed_everything(settings.seed)
    for _ in range(settings.repetitions):
        modules.zero_grad(set_to_none=True)
        started = time.perf_counter()
        loss = step.loss(x, *args) / x.shape[0]
        loss.backward()
        milliseconds.append(1000 * (time.perf_counter() - started))
        elbos.append(-loss.item())
        for part, parameters in parts.items():
            variances[part].add(_flat_gradient(parameters))
    modules.zero_grad(set_to_none=True)
    return {
        "elbo_mean": statistics.fmean(elbos),
        "elbo_se": statistics.stdev(elbos) / math.sqrt(len(elbos)),
        **{f"grad_var_{part}": variance.summed() for part, variance in variances.items()},
        "ms_per_step": statistics.median(milliseconds),
    }


# --- training curves -------------------------------------------------------------------------------------------------
def train_from(
    vae: VAE | UserProgram,
    initial_state: dict,
    data: Dataset,
    train_config: TrainConfig,
    before_training: Callable[[VAE | UserProgram], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> dict:
    """Train ``vae`` (or a user's program, with its labels if it takes them) from the weights ``initial_state``,
    after ``before_training(vae)`` if given (the heads study aligns the heads there), with ``train_config``'s seed;
    ``on_epoch`` is :func:`~ppl_vae.train.fit`'s (called with each epoch's record).

    Returns:
        ``test_elbo_curve`` and ``train_elbo_curve`` (one number per epoch, nats per example) and
        ``train_ms_per_step`` (milliseconds per optimizer update, averaged over the run).
    """
    seed_everything(train_config.seed)
    as_user_program(vae).modules.load_state_dict(initial_state)
    if before_training is not None:
        before_training(vae)
    if not isinstance(vae, VAE):  # a program's pyro.module names are fixed: drop parameters an earlier run left
        pyro.clear_param_store()
    history = fit(vae, data, train_config, progress=False, on_epoch=on_epoch)
    steps = math.ceil(data.x_train.shape[0] / train_config.batch_size) * len(history)
    return {
        "test_elbo_curve": [record["test_elbo"] for record in history],
        "train_elbo_curve": [record["train_elbo"] for record in history],
        "train_ms_per_step": 1000 * sum(record["seconds"] for record in history) / steps,
    }


def agreement(rows: list[dict]) -> list[dict]:
    """Each estimator's mean ELBO against the baseline (``meanfield``, else ``reference-analytic``, else the first):
    the difference, its standard error ``sqrt(se_a^2 + se_b^2)`` and ``z = difference / se`` (|z| < 3 agrees)."""
    names = [row["name"] for row in rows]
    baseline_name = next((name for name in ("meanfield", "reference-analytic") if name in names), names[0])
    baseline = rows[names.index(baseline_name)]
    result = []
    for row in rows:
        if row is baseline:
            continue
        difference = row["elbo_mean"] - baseline["elbo_mean"]
        se = math.hypot(row["elbo_se"], baseline["elbo_se"])
        result.append(
            {
                "estimator": row["name"],
                "baseline": baseline_name,
                "difference": difference,
                "se": se,
                "z": difference / se if se > 0 else (0.0 if difference == 0 else math.inf),
            }
        )
    return result
